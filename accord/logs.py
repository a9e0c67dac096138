"""Accord's loggers: structlog's, but silent in a program that has not configured structlog.

A library must not print: structlog's defaults write every event to stdout, so a service that embeds an agent
and configured nothing would get Accord's logs in its output. :func:`get_logger` returns structlog's logger
once the program configured structlog (``structlog.configure``, as ``accord`` commands do); until then events go
to the standard ``logging`` module under the logger's name, where the ``accord`` logger has a ``NullHandler``
(Python's rule for libraries): nothing is shown unless the program sets up ``logging`` itself.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger", "sparse"]

logging.getLogger("accord").addHandler(logging.NullHandler())

_TO_LOGGING = [structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True)]


class _LibraryLogger:
    """Resolves to structlog's configured logger, or to ``logging``, at each call (bound values kept)."""

    __slots__ = ("_context", "_name")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}

    def bind(self, **values: Any) -> _LibraryLogger:
        return _LibraryLogger(self._name, {**self._context, **values})

    def _target(self) -> Any:
        if structlog.is_configured():
            target = structlog.get_logger(self._name)
        else:
            target = structlog.wrap_logger(logging.getLogger(self._name), processors=_TO_LOGGING)
        return target.bind(**self._context) if self._context else target

    def __getattr__(self, method: str) -> Any:
        return getattr(self._target(), method)


def get_logger(name: str) -> Any:
    """The logger of module ``name`` (use as ``log = get_logger(__name__)``)."""
    return _LibraryLogger(name)


def sparse(count: int) -> bool:
    """Whether the ``count``-th occurrence of a repeated event is logged: the 1st, 2nd, 4th, 8th... A flood of
    refused frames then costs a handful of log lines, not one per frame."""
    return count & (count - 1) == 0
