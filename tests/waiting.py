"""Bounded waiting on a condition the test process can observe (no sleep standing in for
synchronisation: the loop ends as soon as the condition holds, and fails at the deadline)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once ``predicate()`` is true; fail the test if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        threading.Event().wait(0.01)  # polling a process-local counter, bounded by the deadline
