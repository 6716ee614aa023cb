"""Running a piece of a test in a forked child (fork-safety tests)."""

from __future__ import annotations

import os
import select
import signal
import warnings
from typing import Callable

import pytest


def in_forked_child(work: Callable[[], str], timeout: float = 30.0) -> str:
    """Fork; the child runs ``work()`` and reports what it returns (or ``repr`` of what it raised)
    through a pipe, then leaves with ``os._exit`` (never back into pytest). Returns the report; a
    child that reports nothing within ``timeout`` is killed and fails the test."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        report = "?"
        try:
            report = work()
        except BaseException as exc:
            report = repr(exc)
        finally:
            os.write(write_end, report.encode())
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the forked child reported nothing within {timeout}s")
        return os.read(read_end, 65536).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
