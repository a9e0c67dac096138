"""msgpack on the wire, JSON for humans; every decode failure becomes one typed RemoteProtocolError.

One module-level encoder and decoder per format, reused (building them per call costs more than the encode).
Frames over :data:`MAX_FRAME_BYTES` are refused before the decoder sees a byte; a message whose major version
``v`` is not :data:`PROTOCOL_VERSION` is refused after decoding.

``RemoteProtocolError.reason`` after a failed decode is one of :data:`DECODE_ERROR_REASONS` (spec section 2.6).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

import msgspec

from accord.errors import RemoteProtocolError
from accord.protocol.messages import (
    MAX_FRAME_BYTES,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    AnyMessage,
    Message,
    message_tag,
)

__all__ = [
    "DECODE_ERROR_REASONS",
    "check_frame_size",
    "decode",
    "decode_as",
    "decode_json",
    "encode",
    "encode_json",
    "map_decode_error",
    "mapped_decode_errors",
]

M = TypeVar("M", bound=msgspec.Struct)

DECODE_ERROR_REASONS: Final = frozenset(
    {"frame_too_large", "malformed", "invalid", "unknown_type", "unsupported_version"}
)
"""Every ``reason`` a decode failure can carry:

- ``frame_too_large``: over MAX_FRAME_BYTES, refused unread;
- ``malformed``: not well-formed msgpack / JSON (truncated, trailing bytes, bad UTF-8, nesting too deep);
- ``invalid``: well-formed, but not a valid v1 message (missing field, wrong type, out of bounds);
- ``unknown_type``: a ``type`` tag this version does not know (perhaps a message type from a newer minor version);
- ``unsupported_version``: a valid message whose major version ``v`` this implementation does not speak.
"""

_msgpack_encoder: Final = msgspec.msgpack.Encoder(order="deterministic")
_msgpack_decoder: Final[msgspec.msgpack.Decoder[AnyMessage]] = msgspec.msgpack.Decoder(AnyMessage)
_json_encoder: Final = msgspec.json.Encoder(order="deterministic")
_json_decoder: Final[msgspec.json.Decoder[AnyMessage]] = msgspec.json.Decoder(AnyMessage)
_typed_decoders: dict[type[msgspec.Struct], msgspec.msgpack.Decoder[msgspec.Struct]] = {}

_UNKNOWN_TAG: Final = re.compile(r"Invalid value '(.*)' - at `\$\.type`", re.DOTALL)
_KNOWN_TAGS: Final = frozenset(message_tag(t) for t in MESSAGE_TYPES)
_FOREIGN_ERRORS: Final = (msgspec.DecodeError, UnicodeError, RecursionError)  # ValidationError is a DecodeError


def check_frame_size(data: bytes | bytearray | memoryview | str) -> None:
    """Refuse a frame larger than MAX_FRAME_BYTES, before anything parses it (str: its UTF-8 length)."""
    if isinstance(data, memoryview):
        size = data.nbytes
    elif isinstance(data, str):
        size = len(data)
        if size <= MAX_FRAME_BYTES < 4 * size:  # UTF-8 takes 1..4 bytes per character: measure only if needed
            size = len(data.encode("utf-8", "surrogatepass"))
    else:
        size = len(data)
    if size > MAX_FRAME_BYTES:
        raise RemoteProtocolError("frame_too_large", f"{size} bytes > limit {MAX_FRAME_BYTES}")


def map_decode_error(exc: Exception) -> RemoteProtocolError:
    """The RemoteProtocolError for a foreign decode failure (msgspec, UTF-8, recursion); others are returned as
    ``malformed``. Callers ``raise map_decode_error(exc) from exc``."""
    if isinstance(exc, msgspec.ValidationError):
        text = str(exc)
        unknown = _UNKNOWN_TAG.fullmatch(text)
        if unknown is not None and unknown.group(1) not in _KNOWN_TAGS:  # a known tag here: a second "type" key
            return RemoteProtocolError("unknown_type", text)
        return RemoteProtocolError("invalid", text)
    if isinstance(exc, msgspec.DecodeError):
        return RemoteProtocolError("malformed", str(exc))
    if isinstance(exc, UnicodeError):
        # msgspec issue 714: bad UTF-8 escapes as UnicodeDecodeError; a str holding a lone surrogate handed to
        # decode_json raises UnicodeEncodeError.
        return RemoteProtocolError("malformed", f"invalid UTF-8: {exc}")
    if isinstance(exc, RecursionError):  # pathological nesting must not escape untyped
        return RemoteProtocolError("malformed", "nesting too deep")
    return RemoteProtocolError("malformed", f"{type(exc).__name__}: {exc}")


@contextmanager
def mapped_decode_errors() -> Iterator[None]:
    """Turn every msgspec decode failure into RemoteProtocolError (the boundary mapping, STYLE section 4).

    For code outside the hot path; :func:`decode` inlines the same mapping (a generator-based context manager
    costs about as much as decoding a small message).
    """
    try:
        yield
    except _FOREIGN_ERRORS as exc:
        raise map_decode_error(exc) from exc


def _version_error(v: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        "unsupported_version", f"message v={v}, this implementation speaks v{PROTOCOL_VERSION}"
    )


def encode(message: Message) -> bytes:
    """The msgpack wire bytes of one message (deterministic for a given message and type definitions).

    Encoding does not check the Meta bounds: a message built with out-of-bounds values encodes, and every peer
    refuses it. Build messages from validated values (or round-trip them through :func:`decode` in tests).
    """
    return _msgpack_encoder.encode(message)


def decode(data: bytes | bytearray | memoryview) -> AnyMessage:
    """Decode one wire payload into a typed message, or raise RemoteProtocolError."""
    check_frame_size(data)
    try:
        message = _msgpack_decoder.decode(data)
    except _FOREIGN_ERRORS as exc:
        raise map_decode_error(exc) from exc
    if message.v != PROTOCOL_VERSION:
        raise _version_error(message.v)
    return message


def decode_as(data: bytes | bytearray | memoryview, type_: type[M]) -> M:
    """Decode msgpack bytes as one given Struct type (records, envelopes), with the same error mapping.

    No version check: ``type_`` may be any Struct (a record, an envelope); check its ``v`` yourself if it has one.
    """
    check_frame_size(data)
    decoder = _typed_decoders.get(type_)
    if decoder is None:
        decoder = _typed_decoders[type_] = msgspec.msgpack.Decoder(type_)
    try:
        result = decoder.decode(data)
    except _FOREIGN_ERRORS as exc:
        raise map_decode_error(exc) from exc
    if not isinstance(result, type_):  # pragma: no cover - msgspec guarantees the type
        raise RemoteProtocolError("invalid", f"expected {type_.__name__}")
    return result


def encode_json(message: msgspec.Struct) -> bytes:
    """Human-readable JSON (CLI, logs, docs, vectors). Bytes fields appear as base64 strings."""
    return _json_encoder.encode(message)


def decode_json(data: bytes | str) -> AnyMessage:
    """Decode the JSON form of a message, with the same error mapping and checks as :func:`decode`."""
    check_frame_size(data)
    try:
        message = _json_decoder.decode(data)
    except _FOREIGN_ERRORS as exc:
        raise map_decode_error(exc) from exc
    if message.v != PROTOCOL_VERSION:
        raise _version_error(message.v)
    return message
