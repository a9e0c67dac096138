"""Calling something that might block on a FIFO, so that a hang fails the test instead of blocking the run."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["outcome_unblocked"]


def outcome_unblocked(call: Callable[[], object], fifo: Path, *, timeout_s: float = 10.0) -> BaseException | None:
    """Run ``call`` in a thread and return what it raised (None if it returned). If it is still running after
    ``timeout_s`` (blocked opening or reading ``fifo``), open and close the FIFO's write end, which lets the
    reader see end-of-file, and raise AssertionError: the call blocked."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test, which judges it
            raised.append(exc)
        else:
            raised.append(None)

    thread = threading.Thread(target=run, name="fifo-reader", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY)  # the blocked reader has it open for reading: this does not block
        os.close(fd)
        thread.join(timeout_s)
        raise AssertionError(f"blocked on the FIFO {fifo.name} for {timeout_s} s")
    return raised[0]
