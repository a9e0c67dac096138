"""The LLM backend port: one request type, one result type, one error type and one small Protocol.

A backend turns chat messages into text. ``complete`` returns the whole answer with token usage and timings;
callers that want progress pass ``on_delta``, an async callback awaited in order with each piece of text as it is
generated (the agent turns those into Progress messages). A callback keeps every backend a plain coroutine: no
async generator to close, no task group held across a ``yield``.

Every failure a backend reports is a :class:`BackendError` with a :class:`BackendErrorReason`;
:attr:`BackendError.reason_code` maps it to the protocol's Failure reason (``backend_timeout``,
``context_too_long`` or ``backend_error``).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, runtime_checkable

from msgspec import Struct, field

from accord.errors import AccordError
from accord.protocol.messages import ChatMessage, ReasonCode, Role, Timings, Usage

__all__ = [
    "MAX_DURATION_MS",
    "Backend",
    "BackendError",
    "BackendErrorReason",
    "Completion",
    "CompletionRequest",
    "Delta",
    "DeltaCallback",
    "MetadataValue",
    "TokenCounter",
    "check_backend",
    "elapsed_ms",
    "with_system",
]

MAX_DURATION_MS: Final = 7 * 24 * 3600 * 1000
"""Largest duration a protocol ``Timings`` field holds; longer measurements are clamped."""


class BackendErrorReason(enum.StrEnum):
    UNREACHABLE = "unreachable"
    """Could not connect (refused, DNS, connect timeout); retried with backoff before it is raised."""
    AUTH = "auth"
    """The endpoint refused the credentials (HTTP 401/403)."""
    BAD_REQUEST = "bad_request"
    """The endpoint rejected the request (HTTP 400/422 and similar); the detail carries the server's message."""
    NOT_FOUND = "not_found"
    """No such model, endpoint, model file, or (replay) no recorded answer for this prompt."""
    TIMEOUT = "timeout"
    """The request's deadline or the read timeout passed."""
    OVERLOADED = "overloaded"
    """Rate-limited or out of capacity (HTTP 429/503) after the retries the deadline allowed."""
    CONTEXT_TOO_LONG = "context_too_long"
    """Prompt plus output do not fit the model's context window."""
    INTERNAL = "internal"
    """The endpoint failed (HTTP 5xx, broken stream, malformed response) or the local model crashed."""


_REASON_CODES: Final = {
    BackendErrorReason.TIMEOUT: ReasonCode.BACKEND_TIMEOUT,
    BackendErrorReason.CONTEXT_TOO_LONG: ReasonCode.CONTEXT_TOO_LONG,
}

_RETRYABLE: Final = frozenset(
    {BackendErrorReason.UNREACHABLE, BackendErrorReason.OVERLOADED, BackendErrorReason.INTERNAL}
)


_LASTING: Final = frozenset({BackendErrorReason.UNREACHABLE, BackendErrorReason.AUTH})


class BackendError(AccordError):
    """A backend could not produce an answer. ``reason`` is stable; the text is for humans."""

    def __init__(
        self,
        reason: BackendErrorReason,
        detail: str = "",
        *,
        backend: str = "",
        status: int | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.backend = backend
        self.status = status
        where = f"{backend}: " if backend else ""
        http = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{where}{reason.value}{http}" + (f": {detail}" if detail else ""))

    @property
    def reason_code(self) -> ReasonCode:
        """The protocol reason for a Failure: backend_timeout, context_too_long or backend_error."""
        return _REASON_CODES.get(self.reason, ReasonCode.BACKEND_ERROR)

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed (unreachable, overloaded, internal)."""
        return self.reason in _RETRYABLE

    @property
    def lasting(self) -> bool:
        """Whether the backend cannot serve any request until someone fixes it (unreachable after its retries,
        or its credentials refused): its agent should leave the market rather than win more tasks."""
        return self.reason in _LASTING


class CompletionRequest(Struct, frozen=True, kw_only=True):
    """One chat completion to run.

    ``model`` None means the backend's default model. ``temperature`` None means the backend's default.
    ``deadline_ns`` is absolute (ns since the Unix epoch, as the task's deadline); ``timeout_ms`` is relative to
    the call. When both are given the earlier one wins.
    """

    messages: list[ChatMessage]
    model: str | None = None
    max_tokens: int = 256
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    deadline_ns: int | None = None
    timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a completion request needs at least one message")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.timeout_ms is not None and self.timeout_ms < 0:
            raise ValueError("timeout_ms must be >= 0")

    @classmethod
    def from_prompt(
        cls,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        max_tokens: int = 256,
        temperature: float | None = None,
        stop: tuple[str, ...] = (),
        seed: int | None = None,
        deadline_ns: int | None = None,
        timeout_ms: int | None = None,
    ) -> CompletionRequest:
        """A request with one user message (after a system message when ``system`` is given)."""
        messages = [ChatMessage(role=Role.USER, content=prompt)]
        if system is not None:
            messages.insert(0, ChatMessage(role=Role.SYSTEM, content=system))
        return cls(
            messages=messages,
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            deadline_ns=deadline_ns,
            timeout_ms=timeout_ms,
        )

    def effective_deadline_ns(self, now_ns: int) -> int | None:
        """The absolute deadline: the earlier of ``deadline_ns`` and ``now_ns + timeout_ms``."""
        candidates = [d for d in (self.deadline_ns,) if d is not None]
        if self.timeout_ms is not None:
            candidates.append(now_ns + self.timeout_ms * 1_000_000)
        return min(candidates) if candidates else None

    @property
    def prompt(self) -> str:
        """The last user message's text (what single-turn logs key on)."""
        for message in reversed(self.messages):
            if message.role is Role.USER:
                return message.content
        return self.messages[-1].content


class Delta(Struct, frozen=True, kw_only=True):
    """A piece of generated text, in order. ``output_tokens`` counts tokens so far (estimated where unknown)."""

    seq: int
    text: str
    output_tokens: int


DeltaCallback = Callable[[Delta], Awaitable[None]]
"""Awaited once per delta, in order; a slow callback slows generation down (backpressure)."""

MetadataValue = str | int | float | bool
"""Values allowed in :attr:`Completion.metadata`."""


class Completion(Struct, frozen=True, kw_only=True):
    """A finished answer.

    ``usage_estimated`` is True when token counts are estimates (chars/4 or counted stream chunks) rather than
    the model's own count. ``cost_micros`` is what the call cost where the backend knows it (simulated and replay
    backends), else None. ``quality`` is a recorded or simulated quality signal in 0..1 (replay: 1.0 correct /
    0.0 wrong, or the judge score / 10; simulated: the drawn quality), else None; ``metadata`` carries the raw
    signals (``correct``, ``score``, ``source``, ...).
    """

    text: str
    model: str
    usage: Usage
    timings: Timings
    finish_reason: str = "stop"
    backend: str = ""
    usage_estimated: bool = False
    cost_micros: int | None = None
    quality: float | None = None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What an agent needs from an LLM backend."""

    @property
    def name(self) -> str:
        """A short token naming this backend instance (goes into attestations and logs)."""
        ...

    @property
    def model(self) -> str:
        """The model used when a request names none."""
        ...

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        """Run one completion; raise :class:`BackendError` on failure. Cancellation propagates."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and model memory. Idempotent."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that can count a chat's prompt tokens with its model's own tokenizer and chat template (what an
    agent prices a task by; backends without one are priced by the documented estimator)."""

    async def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the model would read for ``messages`` (template included); BackendError if it cannot tell."""
        ...


@runtime_checkable
class _Checked(Protocol):
    async def check(self) -> None: ...


async def check_backend(backend: Backend) -> None:
    """Raise :class:`BackendError` if ``backend`` cannot serve now (its ``check()``: a model file that loads, an
    endpoint that answers and takes the key); a backend without a check passes."""
    if isinstance(backend, _Checked):
        await backend.check()


# --- helpers shared by the implementations ---------------------------------------------------------------------
def elapsed_ms(start_ns: int, end_ns: int) -> int:
    """Whole milliseconds between two monotonic readings, clamped to what ``Timings`` holds."""
    return max(0, min(MAX_DURATION_MS, (end_ns - start_ns) // 1_000_000))


def with_system(messages: Sequence[ChatMessage], system: str) -> list[ChatMessage]:
    """``messages`` with ``system`` prepended unless they already start with a system message."""
    if messages and messages[0].role is Role.SYSTEM:
        return list(messages)
    return [ChatMessage(role=Role.SYSTEM, content=system), *messages]
