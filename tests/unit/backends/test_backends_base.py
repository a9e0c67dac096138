"""The backend port: request validation, deadlines, error reasons and their protocol mapping, helpers."""

from __future__ import annotations

import pytest

from accord.backends import (
    Backend,
    BackendError,
    BackendErrorReason,
    CompletionRequest,
    LlamaCppBackend,
    OpenAIBackend,
    ReplayBackend,
    SimulatedBackend,
    with_system,
)
from accord.backends.base import MAX_DURATION_MS, elapsed_ms
from accord.backends.replay import OutcomeLog
from accord.errors import AccordError
from accord.protocol.messages import ChatMessage, ReasonCode, Role
from accord.routing.records import Outcome, normalize_prompt


def test_request_needs_messages_and_positive_max_tokens() -> None:
    with pytest.raises(ValueError, match="at least one message"):
        CompletionRequest(messages=[])
    with pytest.raises(ValueError, match="max_tokens"):
        CompletionRequest.from_prompt("hi", max_tokens=0)
    with pytest.raises(ValueError, match="timeout_ms"):
        CompletionRequest.from_prompt("hi", timeout_ms=-1)


def test_from_prompt_puts_the_system_message_first() -> None:
    request = CompletionRequest.from_prompt("What is 2+2?", system="Be brief.", max_tokens=8, stop=("\n",))
    assert [m.role for m in request.messages] == [Role.SYSTEM, Role.USER]
    assert request.prompt == "What is 2+2?"
    assert request.max_tokens == 8
    assert request.stop == ("\n",)


def test_prompt_is_the_last_user_message() -> None:
    request = CompletionRequest(
        messages=[
            ChatMessage(role=Role.USER, content="first"),
            ChatMessage(role=Role.ASSISTANT, content="answer"),
            ChatMessage(role=Role.USER, content="second"),
            ChatMessage(role=Role.ASSISTANT, content="partial"),
        ]
    )
    assert request.prompt == "second"


@pytest.mark.parametrize(
    ("deadline_ns", "timeout_ms", "expected"),
    [
        (None, None, None),
        (5_000_000_000, None, 5_000_000_000),
        (None, 250, 1_250_000_000),
        (5_000_000_000, 250, 1_250_000_000),
        (1_100_000_000, 250, 1_100_000_000),
    ],
)
def test_effective_deadline_is_the_earlier_one(
    deadline_ns: int | None, timeout_ms: int | None, expected: int | None
) -> None:
    request = CompletionRequest.from_prompt("x", deadline_ns=deadline_ns, timeout_ms=timeout_ms)
    assert request.effective_deadline_ns(1_000_000_000) == expected


@pytest.mark.parametrize(
    ("reason", "code", "retryable"),
    [
        (BackendErrorReason.TIMEOUT, ReasonCode.BACKEND_TIMEOUT, False),
        (BackendErrorReason.CONTEXT_TOO_LONG, ReasonCode.CONTEXT_TOO_LONG, False),
        (BackendErrorReason.UNREACHABLE, ReasonCode.BACKEND_ERROR, True),
        (BackendErrorReason.OVERLOADED, ReasonCode.BACKEND_ERROR, True),
        (BackendErrorReason.INTERNAL, ReasonCode.BACKEND_ERROR, True),
        (BackendErrorReason.AUTH, ReasonCode.BACKEND_ERROR, False),
        (BackendErrorReason.BAD_REQUEST, ReasonCode.BACKEND_ERROR, False),
        (BackendErrorReason.NOT_FOUND, ReasonCode.BACKEND_ERROR, False),
    ],
)
def test_error_reasons_map_to_protocol_codes(
    reason: BackendErrorReason, code: ReasonCode, retryable: bool
) -> None:
    error = BackendError(reason, "detail text", backend="b1", status=503)
    assert isinstance(error, AccordError)
    assert error.reason_code is code
    assert error.retryable is retryable
    assert str(error) == f"b1: {reason.value} (HTTP 503): detail text"


def test_every_reason_has_a_protocol_code() -> None:
    for reason in BackendErrorReason:
        assert BackendError(reason).reason_code in ReasonCode


def test_normalize_prompt_collapses_whitespace() -> None:
    assert normalize_prompt("  a\tb \n\n c  ") == "a b c"
    assert normalize_prompt("") == ""


def test_with_system_keeps_an_existing_system_message() -> None:
    user = [ChatMessage(role=Role.USER, content="hi")]
    added = with_system(user, "sys")
    assert [m.role for m in added] == [Role.SYSTEM, Role.USER]
    assert added[0].content == "sys"
    own = [ChatMessage(role=Role.SYSTEM, content="mine"), *user]
    assert with_system(own, "sys") == own


def test_elapsed_ms_is_clamped() -> None:
    assert elapsed_ms(0, 1_999_999) == 1
    assert elapsed_ms(10, 0) == 0
    assert elapsed_ms(0, 10**30) == MAX_DURATION_MS


@pytest.mark.asyncio
async def test_every_backend_satisfies_the_protocol() -> None:
    log = OutcomeLog([Outcome(query_id="q", prompt="p", model="m")])
    openai = OpenAIBackend("http://127.0.0.1:9/v1", model="m")
    backends: list[object] = [SimulatedBackend(), ReplayBackend(log), openai, LlamaCppBackend()]
    try:
        for backend in backends:
            assert isinstance(backend, Backend), type(backend).__name__
    finally:
        await openai.aclose()
