"""OpenAI-compatible chat completions over httpx: vLLM, Ollama, llama.cpp's server, OpenAI and others.

- ``base_url`` is the API root including the version, as OpenAI clients take it (``https://api.openai.com/v1``,
  ``http://127.0.0.1:8080/v1``); requests go to ``{base_url}/chat/completions``.
- Streaming (the default) sends ``stream: true`` and reads server-sent events (``data:`` lines up to
  ``data: [DONE]``). Usage comes from the final chunk when the server honours
  ``stream_options.include_usage``; a server that rejects ``stream_options`` is asked again without it, and a
  stream without usage gets estimated counts (prompt: chars/4, output: one token per content chunk) and
  ``usage_estimated=True``.
- Connection failures, HTTP 429 and 5xx are retried with exponential backoff and jitter (``Retry-After`` is
  honoured), never past the request's deadline and never once a delta has been handed to the caller.
- Failures raise :class:`~accord.backends.base.BackendError`: ``unreachable`` (connection refused, DNS,
  connect timeout), ``auth`` (401/403), ``bad_request`` (400/422 with the server's message), ``not_found`` (404),
  ``context_too_long`` (the server says the prompt does not fit), ``overloaded`` (429/503), ``timeout``
  (deadline or read timeout), ``internal`` (other 5xx, broken or malformed stream).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final, Self

import anyio
import httpx
import msgspec

from accord.backends.base import (
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    Delta,
    DeltaCallback,
    MetadataValue,
    elapsed_ms,
)
from accord.logs import get_logger
from accord.protocol.messages import Timings, Usage
from accord.protocol.pricing import estimate_prompt_tokens, estimate_tokens

__all__ = ["OpenAIBackend"]

log = get_logger(__name__)

_MAX_DETAIL: Final = 500
_CONTEXT_KINDS: Final = frozenset({"exceed_context_size_error", "context_length_exceeded", "context_too_long"})
_CONTEXT_TEXT: Final = re.compile(
    r"context[ _-]?(length|size|window)|maximum context|too many tokens|prompt is too long|"
    r"exceeds? the (available|maximum)",
    re.IGNORECASE,
)


# --- wire shapes (only the fields we read; unknown fields are ignored) -------------------------------------------
class _WireMessage(msgspec.Struct, kw_only=True):
    role: str | None = None
    content: str | None = None


class _WireChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: _WireMessage | None = None
    delta: _WireMessage | None = None
    text: str | None = None
    finish_reason: str | None = None


class _WireUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _WireError(msgspec.Struct, kw_only=True):
    message: str = ""
    type: str | None = None
    code: str | int | None = None


class _WireResponse(msgspec.Struct, kw_only=True):
    choices: list[_WireChoice] = []
    usage: _WireUsage | None = None
    model: str | None = None
    error: _WireError | str | None = None


_decoder: Final = msgspec.json.Decoder(_WireResponse)
_encoder: Final = msgspec.json.Encoder()


class _StatusError(BackendError):
    """A BackendError from an HTTP status, with the server's Retry-After (seconds) when it sent one."""

    def __init__(
        self, reason: BackendErrorReason, detail: str, *, backend: str, status: int, retry_after_s: float | None
    ) -> None:
        super().__init__(reason, detail, backend=backend, status=status)
        self.retry_after_s = retry_after_s


class _State:
    """What one attempt has read so far."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.chunks = 0
        self.first_ns: int | None = None
        self.usage: _WireUsage | None = None
        self.finish_reason: str | None = None
        self.served_model: str | None = None
        self.done = False
        self.delivered = False


class OpenAIBackend:
    """A backend speaking the OpenAI chat-completions API. Use as ``async with`` or call :meth:`aclose`."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        name: str = "openai",
        connect_timeout_ms: int = 5_000,
        read_timeout_ms: int = 60_000,
        max_retries: int = 3,
        backoff_base_ms: int = 200,
        backoff_max_ms: int = 5_000,
        stream: bool = True,
        include_usage: bool = True,
        max_concurrency: int | None = None,
        extra_body: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._name = name
        self._model = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_ms / 1000
        self._backoff_max_s = backoff_max_ms / 1000
        self._stream = stream
        self._include_usage = include_usage
        self._max_concurrency = max_concurrency
        self._limiter: anyio.CapacityLimiter | None = None
        self._extra_body = dict(extra_body or {})
        self._rng = rng or random.Random()
        self._clock = clock
        all_headers = {"accept": "application/json, text/event-stream", **(headers or {})}
        if api_key:
            all_headers["authorization"] = f"Bearer {api_key}"
        self._headers = all_headers
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout_ms / 1000, connect=connect_timeout_ms / 1000)
        )
        self._closed = False

    # --- Backend ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    @property
    def url(self) -> str:
        """The chat-completions endpoint this backend posts to."""
        return self._url

    async def check(self) -> None:
        """Ask the endpoint for its models (``GET .../models``): BackendError when it cannot be reached or refuses
        the key (or fails). An endpoint without that route (404) passes: its chat route may still serve."""
        url = self._url.removesuffix("/chat/completions") + "/models"
        try:
            response = await self._client.get(url, headers=self._headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise BackendError(
                BackendErrorReason.UNREACHABLE, f"cannot connect to {url}: {exc}", backend=self._name
            ) from exc
        except httpx.HTTPError as exc:
            raise BackendError(BackendErrorReason.INTERNAL, f"{url}: {exc!r}", backend=self._name) from exc
        if response.status_code in (401, 403) or response.status_code >= 500:
            raise self._status_error(response)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._owns_client:
                await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        if self._closed:
            raise BackendError(BackendErrorReason.INTERNAL, "backend is closed", backend=self._name)
        queued_from = time.perf_counter_ns()
        deadline = request.effective_deadline_ns(self._clock())
        limiter = self._get_limiter()
        if limiter is not None:
            try:
                with anyio.fail_after(self._remaining_s(deadline)):
                    await limiter.acquire()
            except TimeoutError as exc:
                raise BackendError(
                    BackendErrorReason.TIMEOUT, "deadline passed while waiting for a slot", backend=self._name
                ) from exc
        try:
            return await self._complete_with_retries(request, deadline, queued_from, on_delta)
        finally:
            if limiter is not None:
                limiter.release()

    # --- internals -------------------------------------------------------------------------------------------
    def _get_limiter(self) -> anyio.CapacityLimiter | None:
        if self._max_concurrency is not None and self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._max_concurrency)
        return self._limiter

    def _remaining_s(self, deadline: int | None) -> float | None:
        if deadline is None:
            return None
        return max(0.0, (deadline - self._clock()) / 1e9)

    def _body(self, request: CompletionRequest, model: str) -> dict[str, object]:
        body: dict[str, object] = dict(self._extra_body)
        body["model"] = model
        body["messages"] = [{"role": m.role.value, "content": m.content} for m in request.messages]
        body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if self._stream:
            body["stream"] = True
            if self._include_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        cap = min(self._backoff_max_s, self._backoff_base_s * (2**attempt))
        delay = self._rng.uniform(cap / 2, cap)  # "equal jitter": grows, yet spreads clients apart
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self._backoff_max_s * 4))
        return delay

    async def _complete_with_retries(
        self,
        request: CompletionRequest,
        deadline: int | None,
        queued_from: int,
        on_delta: DeltaCallback | None,
    ) -> Completion:
        started = time.perf_counter_ns()
        model = request.model or self._model
        attempt = 0
        while True:
            state = _State()
            body = self._body(request, model)
            try:
                with anyio.fail_after(self._remaining_s(deadline)):
                    await self._once(body, state, on_delta)
            except TimeoutError as exc:
                raise BackendError(
                    BackendErrorReason.TIMEOUT, "the request's deadline passed", backend=self._name
                ) from exc
            except BackendError as exc:
                if self._drop_stream_options(exc, body):
                    continue
                if not exc.retryable or state.delivered or attempt >= self._max_retries:
                    raise
                retry_after = exc.retry_after_s if isinstance(exc, _StatusError) else None
                delay = self._backoff_s(attempt, retry_after)
                if deadline is not None and self._clock() + int(delay * 1e9) >= deadline:
                    raise
                attempt += 1
                log.info(
                    "backend.retry",
                    backend=self._name,
                    attempt=attempt,
                    reason=exc.reason.value,
                    status=exc.status,
                    delay_ms=int(delay * 1000),
                )
                await anyio.sleep(delay)
                continue
            return self._completion(request, model, state, queued_from, started, attempts=attempt + 1)

    def _drop_stream_options(self, exc: BackendError, body: dict[str, object]) -> bool:
        """A server that rejects ``stream_options`` is asked again without it (and never again with it)."""
        if (
            exc.reason is BackendErrorReason.BAD_REQUEST
            and "stream_options" in body
            and "stream_options" in exc.detail
        ):
            self._include_usage = False
            log.info("backend.no_stream_usage", backend=self._name)
            return True
        return False

    async def _once(self, body: dict[str, object], state: _State, on_delta: DeltaCallback | None) -> None:
        content = _encoder.encode(body)
        headers = {**self._headers, "content-type": "application/json"}
        try:
            async with self._client.stream("POST", self._url, content=content, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._status_error(response)
                if "text/event-stream" in response.headers.get("content-type", ""):
                    await self._read_events(response, state, on_delta)
                else:
                    self._read_json(await response.aread(), state)
                    await self._deliver_whole(state, on_delta)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise BackendError(
                BackendErrorReason.UNREACHABLE, f"cannot connect to {self._url}: {exc}", backend=self._name
            ) from exc
        except httpx.TimeoutException as exc:
            raise BackendError(
                BackendErrorReason.TIMEOUT, f"no data within the read timeout: {exc!r}", backend=self._name
            ) from exc
        except httpx.HTTPError as exc:
            raise BackendError(
                BackendErrorReason.INTERNAL, f"transport failed: {exc!r}", backend=self._name
            ) from exc

    async def _read_events(self, response: httpx.Response, state: _State, on_delta: DeltaCallback | None) -> None:
        data: list[str] = []
        async for line in response.aiter_lines():
            if line == "":
                if data and await self._on_event("\n".join(data), state, on_delta):
                    return
                data = []
                continue
            if line.startswith(":"):
                continue  # SSE comment / keep-alive
            field_name, _, value = line.partition(":")
            if field_name == "data":
                data.append(value[1:] if value.startswith(" ") else value)
        if data and await self._on_event("\n".join(data), state, on_delta):
            return
        if state.finish_reason is None:
            raise BackendError(
                BackendErrorReason.INTERNAL,
                "the stream ended before [DONE] or a finish reason",
                backend=self._name,
            )

    async def _on_event(self, data: str, state: _State, on_delta: DeltaCallback | None) -> bool:
        """Handle one SSE event; True at ``[DONE]``."""
        if data.strip() == "[DONE]":
            state.done = True
            return True
        chunk = self._decode(data)
        if chunk.error is not None:
            raise self._error_from(chunk.error, status=None)
        if chunk.usage is not None:
            state.usage = chunk.usage
        if chunk.model:
            state.served_model = chunk.model
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            piece = choice.delta.content if choice.delta is not None else choice.text
            if piece:
                if state.first_ns is None:
                    state.first_ns = time.perf_counter_ns()
                state.parts.append(piece)
                state.chunks += 1
                if on_delta is not None:
                    state.delivered = True
                    await on_delta(Delta(seq=state.chunks - 1, text=piece, output_tokens=state.chunks))
            if choice.finish_reason:
                state.finish_reason = choice.finish_reason
        return False

    def _read_json(self, raw: bytes, state: _State) -> None:
        response = self._decode(raw)
        if response.error is not None:
            raise self._error_from(response.error, status=None)
        if not response.choices:
            raise BackendError(BackendErrorReason.INTERNAL, "the response has no choices", backend=self._name)
        choice = response.choices[0]
        text = choice.message.content if choice.message is not None else choice.text
        state.parts.append(text or "")
        state.first_ns = time.perf_counter_ns()
        state.usage = response.usage
        state.served_model = response.model
        state.finish_reason = choice.finish_reason or "stop"

    async def _deliver_whole(self, state: _State, on_delta: DeltaCallback | None) -> None:
        text = "".join(state.parts)
        if on_delta is not None and text:
            state.delivered = True
            tokens = state.usage.completion_tokens if state.usage else estimate_tokens(text)
            await on_delta(Delta(seq=0, text=text, output_tokens=tokens))

    def _decode(self, raw: bytes | str) -> _WireResponse:
        try:
            return _decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise BackendError(
                BackendErrorReason.INTERNAL, f"malformed response: {exc}", backend=self._name
            ) from exc

    def _completion(
        self,
        request: CompletionRequest,
        model: str,
        state: _State,
        queued_from: int,
        started: int,
        *,
        attempts: int,
    ) -> Completion:
        end = time.perf_counter_ns()
        text = "".join(state.parts)
        if state.usage is not None:
            usage = Usage(input_tokens=state.usage.prompt_tokens, output_tokens=state.usage.completion_tokens)
            estimated = False
        else:
            output = state.chunks if state.chunks else estimate_tokens(text)
            usage = Usage(input_tokens=estimate_prompt_tokens(request.messages), output_tokens=output)
            estimated = True
        metadata: dict[str, MetadataValue] = {"attempts": attempts}
        if state.served_model:
            metadata["served_model"] = state.served_model
        return Completion(
            text=text,
            model=model,
            usage=usage,
            timings=Timings(
                queued_ms=elapsed_ms(queued_from, started),
                ttft_ms=elapsed_ms(started, state.first_ns if state.first_ns is not None else end),
                total_ms=elapsed_ms(started, end),
            ),
            finish_reason=state.finish_reason or "stop",
            backend=self._name,
            usage_estimated=estimated,
            metadata=metadata,
        )

    # --- error mapping -----------------------------------------------------------------------------------------
    def _status_error(self, response: httpx.Response) -> _StatusError:
        status = response.status_code
        message, kind = _error_text(response.content)
        detail = (message or response.reason_phrase or "")[:_MAX_DETAIL]
        reason = _status_reason(status, kind, message)
        return _StatusError(
            reason,
            detail,
            backend=self._name,
            status=status,
            retry_after_s=_retry_after(response.headers.get("retry-after")),
        )

    def _error_from(self, error: _WireError | str, *, status: int | None) -> BackendError:
        if isinstance(error, str):
            message, kind = error, None
        else:
            message, kind = error.message, None if error.type is None else str(error.type)
            if isinstance(error.code, int) and status is None:
                status = error.code
            elif isinstance(error.code, str):
                kind = kind or error.code
        reason = _status_reason(status or 500, kind, message)
        return BackendError(reason, message[:_MAX_DETAIL], backend=self._name, status=status)


def _status_reason(status: int, kind: str | None, message: str) -> BackendErrorReason:
    if status in (401, 403):
        return BackendErrorReason.AUTH
    if (kind is not None and kind in _CONTEXT_KINDS) or (
        status in (400, 413, 422, 500) and _CONTEXT_TEXT.search(message)
    ):
        return BackendErrorReason.CONTEXT_TOO_LONG
    if status == 404:
        return BackendErrorReason.NOT_FOUND
    if status in (408, 504):
        return BackendErrorReason.TIMEOUT
    if status in (429, 503):
        return BackendErrorReason.OVERLOADED
    if status >= 500:
        return BackendErrorReason.INTERNAL
    return BackendErrorReason.BAD_REQUEST


def _error_text(raw: bytes) -> tuple[str, str | None]:
    """(message, type-or-code) from the error bodies servers send: OpenAI, vLLM, FastAPI, plain text."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace").strip(), None
    if not isinstance(body, dict):
        return str(body), None
    error = body.get("error", body)
    if isinstance(error, str):
        return error, None
    if isinstance(error, dict):
        message = error.get("message", error.get("detail", ""))
        kind = error.get("type") or error.get("code")
        return str(message), None if kind is None else str(kind)
    return str(error), None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the delta-seconds form; an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
