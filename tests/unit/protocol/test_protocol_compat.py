"""Forward and backward compatibility within major version 1 (spec section 13).

A simulated v1.1 is built here: for every v1 type, a subclass with the same tag and two new defaulted fields,
plus one brand-new message type. v1.1 frames must decode with the v1 decoder (new fields ignored) and v1 frames
with the v1.1 decoder (new fields take their defaults).
"""

from __future__ import annotations

import random
from typing import Annotated, Any, Union

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.errors import RemoteProtocolError
from accord.protocol import codec
from accord.protocol.messages import (
    MESSAGE_TYPES,
    Bid,
    Decline,
    Message,
    ReasonCode,
    Task,
    message_tag,
    reason_code,
)
from accord.spec.message_vectors import message_vectors
from tests.support import hypothesis_strategies as acst

PER_TYPE = settings(max_examples=25)
EXAMPLES: dict[type[Message], Message] = {type(v.message): v.message for v in message_vectors()}
"""One fixed, fully populated message per type (the golden vectors)."""

NEW_FIELDS: list[tuple[str, Any, Any]] = [
    ("confidence_ms", Annotated[int, msgspec.Meta(ge=0, le=10**6)], 0),
    ("labels", list[str], []),
]


def _v11(type_: type[Message]) -> type[Message]:
    """The v1.1 version of a v1 type: same tag, same fields, plus NEW_FIELDS (all defaulted)."""
    return msgspec.defstruct(
        f"{type_.__name__}V11",
        NEW_FIELDS,
        bases=(type_,),
        tag=message_tag(type_),
        frozen=True,
        kw_only=True,
    )


V11_TYPES: dict[type[Message], type[Message]] = {t: _v11(t) for t in MESSAGE_TYPES}


class Offer(Message, tag="offer", frozen=True, kw_only=True):
    """A message type v1.1 adds; v1 has never heard of it."""

    task_id: str
    note: str = ""


V11_UNION = Union[(*V11_TYPES.values(), Offer)]  # type: ignore[valid-type]
v11_msgpack = msgspec.msgpack.Decoder(V11_UNION)
v11_json = msgspec.json.Decoder(V11_UNION)
# The v1.1 wire order of a message: v1 fields in v1 order, then the new ones; a sender may use any key order.
_encoder = msgspec.msgpack.Encoder()


def _plain(value: object) -> Any:
    """Plain data in wire shape: bytes stay bytes (msgpack bin; msgspec.json encodes them as base64)."""
    return msgspec.to_builtins(value, builtin_types=(bytes,))


def _fields(message: msgspec.Struct) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__struct_fields__}


# --- v1.1 -> v1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_", MESSAGE_TYPES, ids=lambda t: t.__name__)
@PER_TYPE
@given(data=st.data())
def test_v1_decoder_reads_v11_frames(type_: type[Message], data: st.DataObject) -> None:
    message = data.draw(acst.messages_of(type_))
    newer = V11_TYPES[type_](**_fields(message), confidence_ms=1234, labels=["x", "y"])
    frame = _encoder.encode(newer)
    assert b"confidence_ms" in frame
    assert codec.decode(frame) == message  # the new fields are ignored
    assert codec.decode_json(msgspec.json.encode(newer)) == message


# --- v1 -> v1.1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_", MESSAGE_TYPES, ids=lambda t: t.__name__)
@PER_TYPE
@given(data=st.data())
def test_v11_decoder_reads_v1_frames(type_: type[Message], data: st.DataObject) -> None:
    message = data.draw(acst.messages_of(type_))
    for newer in (v11_msgpack.decode(codec.encode(message)), v11_json.decode(codec.encode_json(message))):
        assert type(newer) is V11_TYPES[type_]
        assert newer.confidence_ms == 0 and newer.labels == []  # type: ignore[attr-defined]
        assert _fields(newer) == {**_fields(message), "confidence_ms": 0, "labels": []}


def test_new_message_type_is_refused_as_unknown_type_by_v1() -> None:
    offer = Offer(id="ab" * 16, sender="U" + "A" * 55, ts=1, task_id="cd" * 16, note="new in v1.1")
    for decode, frame in ((codec.decode, _encoder.encode(offer)), (codec.decode_json, msgspec.json.encode(offer))):
        with pytest.raises(RemoteProtocolError) as info:
            decode(frame)
        assert info.value.reason == "unknown_type"
    assert v11_msgpack.decode(_encoder.encode(offer)) == offer  # while a v1.1 peer reads it


# --- unknown fields, missing defaulted fields, key order ---------------------------------------------------
JUNK = {"nested": {"deep": [1, 2.5, None, True, {"k": b"\x00\xff"}]}, "n": 2**63 - 1, "s": "é"}


@given(acst.messages())
def test_unknown_fields_are_ignored_at_every_level(message: Message) -> None:
    data = _plain(message)
    data["zz_future_field"] = JUNK
    data["another"] = [JUNK] * 3
    for key in ("constraints", "policy", "usage", "timings", "connectivity"):
        if isinstance(data.get(key), dict):
            data[key]["added_in_v1_7"] = JUNK
    for key in ("messages", "models"):
        for item in data.get(key, []):
            item["added_in_v1_7"] = 1
    assert codec.decode(msgspec.msgpack.encode(data)) == message
    assert codec.decode_json(msgspec.json.encode(data)) == message


def _defaulted(type_: type[msgspec.Struct]) -> list[msgspec.structs.FieldInfo]:
    return [
        f
        for f in msgspec.structs.fields(type_)
        if f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
    ]


def _default_of(f: msgspec.structs.FieldInfo) -> Any:
    return f.default if f.default is not msgspec.NODEFAULT else f.default_factory()


@given(message=acst.messages(), seed=st.integers(0, 2**32 - 1))
def test_missing_defaulted_fields_take_their_defaults(message: Message, seed: int) -> None:
    rng = random.Random(seed)
    fields = _defaulted(type(message))
    dropped = [f for f in fields if rng.random() < 0.5]
    data = _plain(message)
    for f in dropped:
        del data[f.encode_name]
    expected = msgspec.structs.replace(message, **{f.name: _default_of(f) for f in dropped})
    assert codec.decode(msgspec.msgpack.encode(data)) == expected
    assert codec.decode_json(msgspec.json.encode(data)) == expected


@pytest.mark.parametrize("type_", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_minimal_frames_decode(type_: type[Message]) -> None:
    """A frame carrying only the type and the required fields decodes, every other field at its default."""
    required = [f for f in msgspec.structs.fields(type_) if f.required]
    full = _plain(EXAMPLES[type_])
    minimal = {"type": message_tag(type_), **{f.encode_name: full[f.encode_name] for f in required}}
    decoded = codec.decode(msgspec.msgpack.encode(minimal))
    for f in msgspec.structs.fields(type_):
        expected = full[f.encode_name] if f.required else _plain(_default_of(f))
        assert _plain(getattr(decoded, f.name)) == expected, f.name


@pytest.mark.parametrize("type_", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_missing_required_field_is_invalid(type_: type[Message]) -> None:
    full = _plain(EXAMPLES[type_])
    for f in msgspec.structs.fields(type_):
        if not f.required:
            continue
        data = {k: v for k, v in full.items() if k != f.encode_name}
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(msgspec.msgpack.encode(data))
        assert info.value.reason == "invalid"
        assert f.encode_name in info.value.detail


@given(message=acst.messages(), seed=st.integers(0, 2**32 - 1))
def test_key_order_does_not_matter(message: Message, seed: int) -> None:
    items = list(_plain(message).items())
    random.Random(seed).shuffle(items)
    assert codec.decode(msgspec.msgpack.encode(dict(items))) == message


def test_duplicate_keys_last_one_wins() -> None:
    """Spec 2.4: senders never repeat a key; a receiver that accepts a repeated key takes the last occurrence."""
    bid = EXAMPLES[Bid]
    body = codec.encode(bid)
    assert body[0] == 0xDE  # map16: Bid has 16 keys including type
    count = int.from_bytes(body[1:3], "big")
    repeated = b"\xde" + (count + 1).to_bytes(2, "big") + body[3:] + _encoder.encode("price_micros") + b"\x07"
    assert codec.decode(repeated) == msgspec.structs.replace(bid, price_micros=7)


# --- closed vocabularies ------------------------------------------------------------------------------------
def test_unknown_reason_codes_map_to_other() -> None:
    assert reason_code("quota_exhausted_v1_3") is ReasonCode.OTHER
    assert reason_code("busy") is ReasonCode.BUSY
    for code in ReasonCode:
        assert reason_code(code.value) is code


def test_a_new_reason_token_still_decodes() -> None:
    """Reasons are tokens on the wire, so a v1.x code never makes a v1.0 receiver refuse the frame."""
    decline = msgspec.structs.replace(EXAMPLES[Decline], reason="quota_exhausted_v1_3")
    decoded = codec.decode(codec.encode(decline))
    assert decoded.reason == "quota_exhausted_v1_3"  # type: ignore[union-attr]
    assert reason_code(decoded.reason) is ReasonCode.OTHER  # type: ignore[union-attr]


def test_a_new_enum_value_is_refused() -> None:
    """Enums are closed in v1 (spec 13): a v1.x MUST NOT add a value to Tier, Mechanism, Privacy or Role."""
    data = _plain(EXAMPLES[Bid])
    data["tier"] = "satellite"
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(msgspec.msgpack.encode(data))
    assert info.value.reason == "invalid"


def test_other_major_version_is_refused() -> None:
    data = _plain(EXAMPLES[Task])
    for v in (0, 2, 255):
        data["v"] = v
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(msgspec.msgpack.encode(data))
        assert info.value.reason == ("invalid" if v == 0 else "unsupported_version")
        with pytest.raises(RemoteProtocolError):
            codec.decode_json(msgspec.json.encode(data))


def test_type_tags_never_change() -> None:
    """The wire tags are frozen forever (spec 13); this list may only grow."""
    assert {t.__name__: message_tag(t) for t in MESSAGE_TYPES} == {
        "Advertise": "advertise",
        "Withdraw": "withdraw",
        "Task": "task",
        "Bid": "bid",
        "Decline": "decline",
        "Award": "award",
        "AwardAck": "award_ack",
        "AwardReject": "award_reject",
        "Progress": "progress",
        "Result": "result",
        "Attestation": "attestation",
        "Cancel": "cancel",
        "Failure": "failure",
    }


def test_type_key_comes_first_on_the_wire() -> None:
    for type_ in (Bid, Task):
        frame = codec.encode(EXAMPLES[type_])
        assert frame[3:8] == b"\xa4type"  # map16 header (3 bytes), then fixstr "type"
