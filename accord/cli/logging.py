"""structlog set-up for the command line (the only place that calls ``structlog.configure``)."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger on the ``sys.stderr`` of the moment: the one at configure time may have been replaced and closed
    since (a test runner's capture), and a log call must not fail on it."""
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(*, json: bool = False, level: str = "info") -> None:
    """Console logs for humans, or JSON lines with ``--log-json``; bound context vars included."""
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
