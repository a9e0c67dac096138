"""Logging set-up: a log call never fails because the stderr seen at configure time has been closed since."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from accord.cli.logging import configure_logging


def test_logs_go_to_the_current_stderr_even_after_the_old_one_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    old = io.StringIO()
    monkeypatch.setattr(sys, "stderr", old)
    configure_logging(level="info")
    structlog.get_logger("t").info("first", n=1)
    assert "first" in old.getvalue()
    old.close()  # e.g. a test runner's capture stream, replaced and closed
    new = io.StringIO()
    monkeypatch.setattr(sys, "stderr", new)
    structlog.get_logger("t").warning("second", n=2)  # raised ValueError (closed file) before
    assert "second" in new.getvalue()
