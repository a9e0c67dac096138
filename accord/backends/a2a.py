"""A backend that forwards each task to an A2A agent (Agent2Agent protocol): what ``accord card --import`` makes
of an A2A Agent Card whose agent speaks A2A and no OpenAI-compatible API.

One blocking ``message/send`` per task (A2A v0.3 JSON-RPC; the HTTP+JSON binding's ``POST /v1/message:send``
likewise) with the conversation as one text part; the answer is the text of the returned Message, or of the
Task's artifacts (else its status message). A2A reports no token usage: it is estimated (chars / 4).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from accord.backends.base import (
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    Delta,
    DeltaCallback,
    elapsed_ms,
)
from accord.protocol.messages import Role, Timings, Usage
from accord.protocol.pricing import estimate_prompt_tokens, estimate_tokens

__all__ = ["A2A_BINDINGS", "A2ABackend"]

A2A_BINDINGS = ("JSONRPC", "HTTP+JSON")


def _text(parts: object) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and "text" in p)


def answer_text(result: Mapping[str, Any]) -> str:
    """The text of an A2A result: a Message's parts, else a Task's artifacts, else its status message."""
    if result.get("kind") == "message" or "parts" in result:
        return _text(result.get("parts"))
    artifacts = result.get("artifacts") or []
    text = "".join(_text(a.get("parts")) for a in artifacts if isinstance(a, dict))
    if text:
        return text
    status = result.get("status") or {}
    return _text((status.get("message") or {}).get("parts")) if isinstance(status, dict) else ""


class A2ABackend:
    """Sends each completion to an A2A agent at ``url`` (``binding``: JSONRPC or HTTP+JSON)."""

    def __init__(
        self,
        url: str,
        *,
        binding: str = "JSONRPC",
        model: str = "a2a",
        headers: Mapping[str, str] | None = None,
        timeout_ms: int = 120_000,
        name: str = "a2a",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if binding not in A2A_BINDINGS:
            raise BackendError(BackendErrorReason.BAD_REQUEST, f"binding {binding!r} is not one of {A2A_BINDINGS}")
        self._url = url
        self._binding = binding
        self._model = model
        self._name = name
        self._headers = dict(headers or {})
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_ms / 1000)

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _body(self, request: CompletionRequest) -> tuple[str, dict[str, object]]:
        text = "\n\n".join(
            m.content if m.role is Role.USER else f"[{m.role.value}] {m.content}" for m in request.messages
        )
        message = {
            "kind": "message",
            "role": "user",
            "messageId": uuid.uuid4().hex,
            "parts": [{"kind": "text", "text": text}],
        }
        params = {"message": message, "configuration": {"blocking": True}}
        if self._binding == "JSONRPC":
            return self._url, {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": params}
        return self._url.rstrip("/") + "/v1/message:send", params

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        started = time.monotonic_ns()
        url, body = self._body(request)
        try:
            response = await self._client.post(url, json=body, headers=self._headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise BackendError(BackendErrorReason.UNREACHABLE, f"{url}: {exc}", backend=self._name) from exc
        except httpx.TimeoutException as exc:
            raise BackendError(BackendErrorReason.TIMEOUT, f"{url}: {exc!r}", backend=self._name) from exc
        except httpx.HTTPError as exc:
            raise BackendError(BackendErrorReason.INTERNAL, f"{url}: {exc!r}", backend=self._name) from exc
        if response.status_code in (401, 403):
            raise BackendError(BackendErrorReason.AUTH, response.text[:200], backend=self._name, status=401)
        if response.status_code >= 400:
            raise BackendError(
                BackendErrorReason.INTERNAL if response.status_code >= 500 else BackendErrorReason.BAD_REQUEST,
                response.text[:500],
                backend=self._name,
                status=response.status_code,
            )
        try:
            data = msgspec.json.decode(response.content)
        except msgspec.DecodeError as exc:
            raise BackendError(BackendErrorReason.INTERNAL, f"not JSON: {exc}", backend=self._name) from exc
        if not isinstance(data, dict):
            raise BackendError(BackendErrorReason.INTERNAL, "the answer is not a JSON object", backend=self._name)
        if "error" in data:
            raise BackendError(BackendErrorReason.INTERNAL, str(data["error"])[:500], backend=self._name)
        result = (
            data.get("result", data) if self._binding == "JSONRPC" else data.get("message", data.get("task", data))
        )
        text = answer_text(result if isinstance(result, dict) else {})
        if on_delta is not None and text:
            await on_delta(Delta(seq=0, text=text, output_tokens=estimate_tokens(text)))
        total = elapsed_ms(started, time.monotonic_ns())
        return Completion(
            text=text,
            model=self._model,
            usage=Usage(
                input_tokens=estimate_prompt_tokens(request.messages), output_tokens=estimate_tokens(text)
            ),
            timings=Timings(ttft_ms=total, total_ms=total),
            backend=self._name,
            usage_estimated=True,
        )
