"""The current process id, cached and refreshed in a forked child.

Checked on every statement (a client or connection inherited through ``fork()`` must not be
used as is), so it is read from a module global rather than asked of the kernel each time.
Thread-safe: a plain read of an int.
"""

from __future__ import annotations

import os

#: read directly (``_fork._pid``) on the statement path, where a function call would cost more
_pid = os.getpid()


def pid() -> int:
    """This process's id (correct in a forked child too)."""
    return _pid


def _refresh() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_refresh)
