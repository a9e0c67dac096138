"""The codec's contract: wire format details (spec section 2), size limit, version check, error mapping."""

from __future__ import annotations

import base64
import json
import struct

import msgspec
import pytest

from accord.errors import AccordError, RemoteProtocolError
from accord.protocol import codec
from accord.protocol.messages import (
    MAX_FRAME_BYTES,
    Advertise,
    Award,
    Bid,
    Message,
    Result,
    Task,
    Tier,
    Usage,
)
from accord.spec.message_vectors import message_vectors

EXAMPLES: dict[type[Message], Message] = {type(v.message): v.message for v in message_vectors()}


def _refused(reason: str, frame: bytes | bytearray | memoryview | str, decode=codec.decode) -> RemoteProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteProtocolError) as info:
        decode(frame)
    assert info.value.reason == reason, info.value
    assert isinstance(info.value, AccordError)
    return info.value


# --- wire format --------------------------------------------------------------------------------------------
def test_a_message_is_a_msgpack_map_with_the_type_first_then_fields_in_declaration_order() -> None:
    bid = EXAMPLES[Bid]
    plain = msgspec.msgpack.decode(codec.encode(bid))  # untyped: what any msgpack library sees
    assert list(plain) == ["type", *Bid.__struct_fields__]
    assert plain["type"] == "bid"
    assert plain["tier"] == "edge"  # enums are their string values
    assert plain["expires_ns"] is None  # optional fields are present as nil, not omitted


def test_bytes_are_msgpack_bin_and_base64_in_json() -> None:
    result = EXAMPLES[Result]
    assert isinstance(result, Result)
    frame = codec.encode(result)
    raw = result.attestation
    assert bytes([0xC4, len(raw)]) + raw in frame  # bin 8 header
    as_json = json.loads(codec.encode_json(result))
    assert base64.b64decode(as_json["attestation"]) == raw


def test_integers_use_the_shortest_form_and_floats_are_float64() -> None:
    bid = EXAMPLES[Bid]
    frame = codec.encode(bid)
    assert b"\xa7attempt\x01" in frame  # positive fixint
    assert b"\xacprice_micros\xcd\x04\xb0" in frame  # uint16 1200
    assert b"\xa7quality\xcb" in frame  # float64
    assert b"\xa2ts\xcf" in frame  # uint64 ns


def test_decoders_accept_non_canonical_but_valid_encodings() -> None:
    """Receivers accept any valid msgpack form (spec 2.3): wider ints, float32, ints for floats, str8 for short."""
    bid = EXAMPLES[Bid]
    data = msgspec.to_builtins(bid)
    wide_int = msgspec.Raw(b"\xcf" + (1200).to_bytes(8, "big"))  # uint64 holding 1200
    assert codec.decode(msgspec.msgpack.encode({**data, "price_micros": wide_int})) == bid
    float32 = msgspec.Raw(b"\xca" + struct.pack(">f", 0.5))
    assert codec.decode(msgspec.msgpack.encode({**data, "quality": float32})).quality == 0.5
    assert codec.decode(msgspec.msgpack.encode({**data, "quality": 1})).quality == 1.0  # int for a float field
    str8 = msgspec.Raw(b"\xd9\x03bid")  # str 8 header for a 3-byte string
    assert codec.decode(msgspec.msgpack.encode({**data, "type": str8})) == bid


def test_json_form_mirrors_the_msgpack_form() -> None:
    for message in EXAMPLES.values():
        from_msgpack = msgspec.msgpack.decode(codec.encode(message))
        from_json = json.loads(codec.encode_json(message))
        assert list(from_json) == list(from_msgpack)
        for key, value in from_msgpack.items():
            if isinstance(value, bytes):
                assert base64.b64decode(from_json[key]) == value
            else:
                assert from_json[key] == value


def test_encoding_is_deterministic_across_equal_messages() -> None:
    task = EXAMPLES[Task]
    copy = msgspec.msgpack.decode(codec.encode(task), type=Task)
    assert copy is not task and codec.encode(copy) == codec.encode(task)


# --- limits and errors ----------------------------------------------------------------------------------------
def test_frame_size_limit_is_checked_before_decoding() -> None:
    at_limit = b"\xc0" * MAX_FRAME_BYTES  # not a message, but not too large either
    err = _refused("invalid", at_limit)
    assert err.reason != "frame_too_large"
    over = b"\xc0" * (MAX_FRAME_BYTES + 1)
    for frame in (over, bytearray(over), memoryview(over)):
        _refused("frame_too_large", frame)
    _refused("frame_too_large", over, codec.decode_json)
    _refused("frame_too_large", "x" * (MAX_FRAME_BYTES + 1), codec.decode_json)


def test_json_str_size_counts_utf8_bytes() -> None:
    text = "é" * (MAX_FRAME_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    _refused("frame_too_large", text, codec.decode_json)


def test_memoryview_size_counts_bytes_not_items() -> None:
    import array

    items = array.array("Q", [0]) * (MAX_FRAME_BYTES // 8 + 8)  # few items, many bytes
    _refused("frame_too_large", memoryview(items))


def test_decode_error_reasons() -> None:
    bid = msgspec.to_builtins(EXAMPLES[Bid])
    _refused("malformed", codec.encode(EXAMPLES[Bid])[:-3])
    _refused("malformed", codec.encode(EXAMPLES[Bid]) + b"\x00")
    _refused("malformed", b"")
    _refused("invalid", msgspec.msgpack.encode({**bid, "price_micros": -1}))
    _refused("invalid", msgspec.msgpack.encode({**bid, "type": 5}))
    _refused("unknown_type", msgspec.msgpack.encode({**bid, "type": "bid_v2"}))
    _refused("unsupported_version", msgspec.msgpack.encode({**bid, "v": 2}))
    _refused("malformed", b'{"type": "bid"', codec.decode_json)
    _refused("malformed", b'{"type": "bi\xffd"}', codec.decode_json)
    assert set(codec.DECODE_ERROR_REASONS) == {
        "frame_too_large", "malformed", "invalid", "unknown_type", "unsupported_version"
    }  # fmt: skip


def test_bad_utf8_in_a_known_string_field_is_malformed() -> None:
    frame = codec.encode(EXAMPLES[Bid])
    region = b"\xaaeu-central"
    assert region in frame
    _refused("malformed", frame.replace(region, b"\xaaeu-centr\xffl"))


def test_a_repeated_type_key_with_a_known_tag_is_invalid_not_unknown() -> None:
    body = codec.encode(EXAMPLES[Bid])
    count = int.from_bytes(body[1:3], "big")
    frame = b"\xde" + (count + 1).to_bytes(2, "big") + body[3:] + b"\xa4type\xa5award"
    _refused("invalid", frame)


def test_mapped_decode_errors_context_manager() -> None:
    with pytest.raises(RemoteProtocolError) as info, codec.mapped_decode_errors():
        msgspec.msgpack.decode(b"\xc1")
    assert info.value.reason == "malformed"
    assert isinstance(info.value.__cause__, msgspec.DecodeError)
    with pytest.raises(RemoteProtocolError) as info2, codec.mapped_decode_errors():
        msgspec.msgpack.decode(b"\x01", type=str)
    assert info2.value.reason == "invalid"
    with pytest.raises(KeyError), codec.mapped_decode_errors():  # unrelated errors pass through untouched
        raise KeyError("x")


def test_map_decode_error_defaults_to_malformed() -> None:
    assert codec.map_decode_error(RecursionError()).reason == "malformed"
    assert codec.map_decode_error(ValueError("odd")).reason == "malformed"


def test_decode_as_records_and_errors() -> None:
    usage = Usage(input_tokens=3, output_tokens=4)
    assert codec.decode_as(codec.encode(usage), Usage) == usage  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode_as(msgspec.msgpack.encode({"input_tokens": -1}), Usage)
    assert info.value.reason == "invalid"
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode_as(b"\x00" * (MAX_FRAME_BYTES + 1), Usage)
    assert info.value.reason == "frame_too_large"


def test_decode_returns_the_concrete_type() -> None:
    for type_, message in EXAMPLES.items():
        assert type(codec.decode(codec.encode(message))) is type_
    assert isinstance(codec.decode(codec.encode(EXAMPLES[Advertise])), Advertise)
    award = codec.decode(codec.encode(EXAMPLES[Award]))
    assert isinstance(award, Award) and award.winner.startswith("U")
    advertise = codec.decode(codec.encode(EXAMPLES[Advertise]))
    assert isinstance(advertise, Advertise) and advertise.tier is Tier.EDGE
