"""msgpack on the wire, JSON for humans; every decode failure becomes one typed RemoteProtocolError.

One module-level encoder and decoder per format, reused (building them per call costs more than the encode).
Frames over :data:`MAX_FRAME_BYTES` are refused before the decoder sees a byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

import msgspec

from accord.errors import RemoteProtocolError
from accord.protocol.messages import MAX_FRAME_BYTES, AnyMessage, Message

__all__ = [
    "check_frame_size",
    "decode",
    "decode_as",
    "decode_json",
    "encode",
    "encode_json",
    "mapped_decode_errors",
]

M = TypeVar("M", bound=msgspec.Struct)

_msgpack_encoder: Final = msgspec.msgpack.Encoder(order="deterministic")
_msgpack_decoder: Final[msgspec.msgpack.Decoder[AnyMessage]] = msgspec.msgpack.Decoder(AnyMessage)
_json_encoder: Final = msgspec.json.Encoder(order="deterministic")
_json_decoder: Final[msgspec.json.Decoder[AnyMessage]] = msgspec.json.Decoder(AnyMessage)
_typed_decoders: dict[type[msgspec.Struct], msgspec.msgpack.Decoder[msgspec.Struct]] = {}


def check_frame_size(data: bytes | bytearray | memoryview | str) -> None:
    """Refuse a frame larger than MAX_FRAME_BYTES, before anything parses it."""
    if len(data) > MAX_FRAME_BYTES:
        raise RemoteProtocolError("frame_too_large", f"{len(data)} bytes > limit {MAX_FRAME_BYTES}")


@contextmanager
def mapped_decode_errors() -> Iterator[None]:
    """Turn every msgspec decode failure into RemoteProtocolError (the boundary mapping, STYLE section 4)."""
    try:
        yield
    except msgspec.ValidationError as exc:
        raise RemoteProtocolError("invalid", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError("malformed", str(exc)) from exc
    except UnicodeDecodeError as exc:  # msgspec issue 714: bad UTF-8 escapes as UnicodeDecodeError
        raise RemoteProtocolError("malformed", f"invalid UTF-8: {exc.reason}") from exc
    except RecursionError as exc:  # defensive: pathological nesting must not escape untyped
        raise RemoteProtocolError("malformed", "nesting too deep") from exc


def encode(message: Message) -> bytes:
    """The msgpack wire bytes of one message (deterministic for a given message and type definitions)."""
    return _msgpack_encoder.encode(message)


def decode(data: bytes | bytearray | memoryview) -> AnyMessage:
    """Decode one wire payload into a typed message, or raise RemoteProtocolError."""
    check_frame_size(data)
    with mapped_decode_errors():
        return _msgpack_decoder.decode(data)


def decode_as(data: bytes | bytearray | memoryview, type_: type[M]) -> M:
    """Decode msgpack bytes as one given Struct type (records, envelopes), with the same error mapping."""
    check_frame_size(data)
    decoder = _typed_decoders.get(type_)
    if decoder is None:
        decoder = _typed_decoders[type_] = msgspec.msgpack.Decoder(type_)
    with mapped_decode_errors():
        result = decoder.decode(data)
    if not isinstance(result, type_):  # pragma: no cover - msgspec guarantees the type
        raise RemoteProtocolError("invalid", f"expected {type_.__name__}")
    return result


def encode_json(message: msgspec.Struct) -> bytes:
    """Human-readable JSON (CLI, logs, docs, vectors). Bytes fields appear as base64 strings."""
    return _json_encoder.encode(message)


def decode_json(data: bytes | str) -> AnyMessage:
    """Decode the JSON form of a message, with the same error mapping as :func:`decode`."""
    check_frame_size(data)
    with mapped_decode_errors():
        return _json_decoder.decode(data)
