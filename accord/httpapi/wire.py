"""The OpenAI chat-completions wire format, as far as the HTTP API reads and writes it.

A request is OpenAI's ``POST /v1/chat/completions`` body; fields Accord does not use (temperature, top_p,
user, ...) are ignored. Accord's constraints ride in extra fields of the same body (the ``extra_body`` of the
openai clients): ``privacy``, ``residency``, ``tier`` (one or a list), ``min_quality``, ``max_price_micros``,
``budget_micros``, ``deadline_ms`` and ``form`` (how a strategy compares answers).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from accord.httpapi.errors import ApiError, bad_request
from accord.protocol.messages import ChatMessage, Privacy, Role, Tier

__all__ = ["ChatRequest", "chunk", "completion", "decode_request", "error_event", "to_messages"]

_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}


class _Part(Struct, kw_only=True):
    type: str
    text: str | None = None


class _Message(Struct, kw_only=True):
    role: str
    content: str | list[_Part] | None = None


class _StreamOptions(Struct, kw_only=True):
    include_usage: bool = False


class ChatRequest(Struct, kw_only=True):
    """A chat-completions request with Accord's constraints (all optional)."""

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    messages: Annotated[list[_Message], Meta(min_length=1, max_length=256)]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    privacy: Privacy = Privacy.PUBLIC
    residency: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")] | None = None
    tier: Tier | list[Tier] | None = None
    min_quality: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    max_price_micros: Annotated[int, Meta(ge=0, le=10**12)] | None = None
    budget_micros: Annotated[int, Meta(ge=0, le=10**12)] | None = None
    deadline_ms: Annotated[int, Meta(ge=1, le=3_600_000)] | None = None
    form: Literal["chat", "math", "mcq"] = "chat"

    @property
    def tiers(self) -> list[Tier]:
        if self.tier is None:
            return []
        return [self.tier] if isinstance(self.tier, Tier) else list(self.tier)[:3]

    @property
    def output_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


_DECODER = msgspec.json.Decoder(ChatRequest)


def decode_request(body: bytes) -> ChatRequest:
    """The request, or ApiError 400 naming what is wrong."""
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise bad_request(f"invalid request: {exc}") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not JSON: {exc}") from exc


def to_messages(request: ChatRequest) -> list[ChatMessage]:
    """The conversation as Accord chat messages (text parts joined; tool messages are not supported)."""
    out: list[ChatMessage] = []
    for i, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise bad_request(f"messages[{i}]: role {message.role!r} is not supported", "messages")
        content = message.content
        if isinstance(content, list):
            content = "".join(p.text or "" for p in content if p.type == "text")
        out.append(ChatMessage(role=role, content=content or ""))
    if not any(m.role is Role.USER and m.content.strip() for m in out):
        raise bad_request("the conversation has no user message with text", "messages")
    return out


def completion(*, id_: str, model: str, answer: str, usage: tuple[int, int], accord: object) -> dict[str, object]:
    """A ``chat.completion`` object with Accord's account of who answered (``accord``)."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"},
        ],
        "usage": _usage(usage),
        "accord": accord,
    }


def chunk(
    *,
    id_: str,
    model: str,
    delta: dict[str, str],
    finish: str | None = None,
    usage: tuple[int, int] | None = None,
    accord: object = None,
) -> bytes:
    """One server-sent event of a ``chat.completion.chunk``."""
    body: dict[str, object] = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = _usage(usage)
    if accord is not None:
        body["accord"] = accord
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


def error_event(error: ApiError) -> bytes:
    """An error after the stream began (the openai clients raise it as an APIError)."""
    return b"data: " + msgspec.json.encode(error.body()) + b"\n\n"


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]}
