"""Logging set-up: a log call never fails because the stderr seen at configure time has been closed since."""

from __future__ import annotations

import io
import sys

import pytest
import structlog
from typer.testing import CliRunner

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


def test_the_demo_takes_the_log_level_every_command_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``accord demo --log-level debug`` configures debug logs before it runs (the run itself is replaced)."""
    import accord.cli.demo as demo
    from accord.cli import app

    levels: list[object] = []
    monkeypatch.setattr(demo, "configure_logging", lambda **kw: levels.append(kw["level"]))
    monkeypatch.setattr(demo, "run_cli", lambda _body: None)
    runner = CliRunner()
    for args, level in ((["--log-level", "debug"], "debug"), (["--verbose"], "info"), ([], "warning")):
        result = runner.invoke(app, ["demo", *args])
        assert result.exit_code == 0, result.output
        assert levels.pop() == level
    assert runner.invoke(app, ["demo", "--log-level", "loud"]).exit_code == 2
