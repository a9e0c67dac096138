"""Errors of the HTTP API in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with a fitting
status, mapped from Accord's typed failures at this boundary."""

from __future__ import annotations

from accord.bus.base import PayloadTooLargeError
from accord.errors import AccordError
from accord.mesh.discovery import NoAgentError
from accord.protocol.messages import ReasonCode
from accord.runtime.requester import TaskFailed
from accord.strategies import StrategyFailed

__all__ = ["ApiError", "api_error", "bad_request"]


class ApiError(AccordError):
    """One error response: HTTP ``status``, OpenAI's ``type``, a stable ``code`` and a one-line message."""

    def __init__(self, status: int, type_: str, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.param = param

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", "invalid_request", message, param)


_NO_AGENT = (ReasonCode.NO_BIDS.value, ReasonCode.NO_ELIGIBLE_BIDS.value)
_DEADLINE = (ReasonCode.DEADLINE_EXCEEDED.value, "deadline")
_LATE = (ReasonCode.LEASE_EXPIRED.value, ReasonCode.ACK_TIMEOUT.value, ReasonCode.BACKEND_TIMEOUT.value)
"""The winner did not deliver in time: a timeout too, under its own code."""


def _for_reason(reason: str, message: str) -> ApiError:
    if reason in _NO_AGENT:
        return ApiError(503, "service_unavailable", "no_eligible_agent", message)
    if reason in _DEADLINE:
        return ApiError(504, "timeout", "deadline_exceeded", message)
    if reason in _LATE:
        return ApiError(504, "timeout", reason, message)
    if reason == "budget":
        return ApiError(402, "insufficient_quota", "budget_exceeded", message)
    return ApiError(502, "api_error", reason, message)


def api_error(exc: AccordError) -> ApiError:
    """The response for an Accord failure: no eligible agent 503, deadline (or a winner too late) 504, budget
    402, a prompt too large for a frame 413, anything else the mesh reported 502 with its reason code."""
    if isinstance(exc, NoAgentError):
        return ApiError(503, "service_unavailable", "no_eligible_agent", str(exc))
    if isinstance(exc, PayloadTooLargeError):
        return ApiError(413, "invalid_request_error", "payload_too_large", str(exc))
    if isinstance(exc, TaskFailed):
        detail = f": {exc.detail}" if exc.detail else ""
        return _for_reason(exc.reason.value, f"{exc.reason.value}{detail}")
    if isinstance(exc, StrategyFailed):
        return _for_reason(exc.reason, str(exc))
    return ApiError(500, "api_error", "internal", str(exc))
