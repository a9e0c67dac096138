"""structlog set-up for the command line (the only place that calls ``structlog.configure``).

Everything that logs ends on stderr through one renderer: Accord's own events, and the standard ``logging``
records of the libraries underneath (uvicorn, nats-py, asyncio) and Python's warnings. With ``json=True`` every
line on stderr is one JSON object.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging", "json_logs"]

_json = False


def json_logs() -> bool:
    """Whether the command logs JSON lines (``--log-json``): then its messages on stderr are log events too."""
    return _json


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger on the ``sys.stderr`` of the moment: the one at configure time may have been replaced and closed
    since (a test runner's capture), and a log call must not fail on it."""
    return structlog.PrintLogger(file=sys.stderr)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on the ``sys.stderr`` of the moment (see :func:`_stderr_logger`)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(*, json: bool = False, level: str = "info") -> None:
    """Console logs for humans, or JSON lines with ``--log-json``; bound context vars included."""
    global _json
    _json = json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    number = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(number, logging.INFO))  # library chatter below info stays out even at debug
    logging.captureWarnings(True)
