"""Digests that bind messages to each other (prompt, bid, award, output). Spec: "Digests"."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

import msgspec

from accord.protocol.messages import ChatMessage

__all__ = ["output_digest", "payload_digest", "prompt_digest"]

_canonical: Final = msgspec.msgpack.Encoder()


def payload_digest(payload: bytes) -> str:
    """SHA-256 (hex) of the exact payload bytes a message arrived as; used for bid and award digests."""
    return hashlib.sha256(payload).hexdigest()


def prompt_digest(messages: Sequence[ChatMessage]) -> str:
    """SHA-256 (hex) of msgpack ``[[role, content], ...]`` with shortest-form headers (spec: "Prompt digest")."""
    pairs = [[m.role.value, m.content] for m in messages]
    return hashlib.sha256(_canonical.encode(pairs)).hexdigest()


def output_digest(output: str) -> str:
    """SHA-256 (hex) of the UTF-8 bytes of a result's output: the in-toto subject digest."""
    return hashlib.sha256(output.encode("utf-8")).hexdigest()
