"""Vectors for a decoder's edges (spec 2.2-2.6, 2.8): frames it must refuse, frames it must accept although they
are not canonical, and JSON spellings a reader must accept.

Pure: built from the example messages of :mod:`accord.spec.message_vectors` (passed in as :class:`Examples`,
so the two modules do not import each other). Three kinds of file, under spec/vectors/messages/:

- ``invalid/<name>.json``: ``{"name", "description", "msgpack_hex", "reason"}``, plus ``"padded_length"`` when
  the frame is ``msgpack_hex`` followed by bytes 0x20 up to that many bytes in all (a frame over 1 MiB would
  otherwise take 2 MiB of hex);
- ``accept/<name>.json``: ``{"name", "description", "msgpack_hex", "json", "canonical_hex"}``: the frame decodes
  to the message ``json`` (in the JSON form of 2.5), whose canonical encoding (2.3) is ``canonical_hex``;
  with ``"may_refuse": reason``, a decoder MAY refuse it with that reason instead, and MUST NOT decode it to
  anything else (duplicate keys, 2.4);
- ``json/<name>.json``: ``{"name", "description", "json_text", "msgpack_hex"}``: a JSON text a reader must
  accept, and the canonical msgpack of the message it holds.

Every expected message is stated here, not obtained by decoding the frame, so the checks test the decoder.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from accord.protocol.codec import encode, encode_json
from accord.protocol.messages import MAX_FRAME_BYTES, Bid, Message, Result, Task
from accord.spec.rawpack import IntFamily, array_as, bin_as, int_as, map_as, pack, repeated, str_as
from accord.spec.schemas import JsonObject, render_json

__all__ = [
    "ACCEPT_DIR",
    "INVALID_DIR",
    "JSON_DIR",
    "PAD",
    "AcceptVector",
    "Examples",
    "InvalidVector",
    "JsonVector",
    "accept_vectors",
    "decoder_vector_files",
    "frame_of",
    "invalid_vectors",
    "json_vectors",
    "padded",
]

INVALID_DIR: Final = "invalid"
"""Subdirectory (of spec/vectors/messages/) holding the frames a decoder must refuse."""
ACCEPT_DIR: Final = "accept"
"""Subdirectory holding non-canonical frames a decoder must accept."""
JSON_DIR: Final = "json"
"""Subdirectory holding JSON texts a reader of the JSON form must accept."""
PAD: Final = b"\x20"
"""The byte a padded frame is filled with (``padded_length``)."""


@dataclass(frozen=True)
class Examples:
    """The example messages the vectors vary."""

    bid: Bid
    task: Task
    result: Result


class _Vector(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str


class InvalidVector(_Vector, frozen=True, kw_only=True):
    """A frame a v1 decoder MUST refuse, and the decode error reason it must refuse it with."""

    frame: bytes
    reason: str
    padded_length: int | None = None
    """The frame is ``frame`` followed by :data:`PAD` bytes up to this length."""


class AcceptVector(_Vector, frozen=True, kw_only=True):
    """A valid frame (mostly in a non-canonical encoding) a v1 decoder MUST accept, and the message it holds."""

    frame: bytes
    message: Message
    may_refuse: str | None = None


class JsonVector(_Vector, frozen=True, kw_only=True):
    """A spelling of a message's JSON form a reader MUST accept, and the message it holds."""

    text: str
    message: Message


def _plain(message: Message) -> dict[str, object]:
    """The message as a plain dict in wire order, bytes kept as bytes (so msgspec encodes it canonically)."""
    plain = msgspec.to_builtins(message, builtin_types=(bytes,))
    assert isinstance(plain, dict)
    return plain


def _record(plain: Mapping[str, object], key: str) -> dict[str, object]:
    record = plain[key]
    assert isinstance(record, dict)
    return record


def _with(plain: Mapping[str, object], **changes: object) -> bytes:
    """``plain`` encoded with these keys' values replaced in place (new keys go last)."""
    return pack({**plain, **changes})


def _with_record(plain: Mapping[str, object], key: str, **changes: object) -> bytes:
    return _with(plain, **{key: {**_record(plain, key), **changes}})


def invalid_vectors(ex: Examples) -> list[InvalidVector]:
    """Frames every v1 decoder MUST refuse, each with the decode error reason it maps to."""
    bid, task = _plain(ex.bid), _plain(ex.task)
    bid_bytes = encode(ex.bid)

    def bad(
        name: str, description: str, frame: bytes, reason: str, padded_length: int | None = None
    ) -> InvalidVector:
        return InvalidVector(
            name=name, description=description, frame=frame, reason=reason, padded_length=padded_length
        )

    return [
        bad(
            "unknown_type",
            "A well-formed message whose type tag this version does not know.",
            _with(bid, type="offer"),
            "unknown_type",
        ),
        bad(
            "missing_type",
            "A map without the type key.",
            pack({k: v for k, v in bid.items() if k != "type"}),
            "invalid",
        ),
        bad(
            "missing_required_field",
            "A bid without its required price_micros.",
            pack({k: v for k, v in bid.items() if k != "price_micros"}),
            "invalid",
        ),
        bad("out_of_bounds", "A bid with quality 1.5 (bound: 0..1).", _with(bid, quality=1.5), "invalid"),
        bad(
            "float_for_int",
            "A bid whose price_micros is the float 1200.0 (integers MUST be msgpack ints).",
            _with(bid, price_micros=1200.0),
            "invalid",
        ),
        bad(
            "token_with_newline",
            'A bid whose region is "eu\\n": a token never contains a newline (or a dot, or a space).',
            _with(bid, region="eu\n"),
            "invalid",
        ),
        bad(
            "uppercase_id",
            "A bid whose id is uppercase hex (ids are lowercase hex).",
            _with(bid, id=ex.bid.id.upper()),
            "invalid",
        ),
        bad(
            "unsupported_version",
            "A valid bid carrying v=2: a v1 decoder refuses another major version.",
            _with(bid, v=2),
            "unsupported_version",
        ),
        bad(
            "bin_for_str",
            "A bid whose model is msgpack bin instead of str.",
            _with(bid, model=ex.bid.model.encode()),
            "invalid",
        ),
        bad(
            "ext_value",
            "A bid whose model is a msgpack ext value.",
            _with(bid, model=msgspec.msgpack.Ext(1, b"x")),
            "invalid",
        ),
        bad(
            "nil_for_required",
            "A bid whose required price_micros is nil.",
            _with(bid, price_micros=None),
            "invalid",
        ),
        bad("truncated", "The bid vector's bytes, cut one byte short.", bid_bytes[:-1], "malformed"),
        bad(
            "trailing_bytes",
            "The bid vector's bytes followed by one extra byte (nil).",
            bid_bytes + b"\xc0",
            "malformed",
        ),
        bad(
            "bad_utf8",
            "A bid whose region string holds the invalid UTF-8 byte 0xff.",
            _with(bid, region=str_as(None, b"eu-\xff")),
            "malformed",
        ),
        bad("not_a_map", "A msgpack array instead of a map.", pack([1, 2, 3]), "invalid"),
        # --- spec 1.1 ---------------------------------------------------------------------------------------
        bad(
            "frame_too_large",
            "The bid vector's bytes padded to 1 MiB + 1 byte: refused for its length before it is parsed (a "
            "decoder that parsed it first would find trailing bytes).",
            bid_bytes,
            "frame_too_large",
            MAX_FRAME_BYTES + 1,
        ),
        bad(
            "max_size_trailing_bytes",
            "The bid vector's bytes padded to exactly 1 MiB: within the size bound (it is inclusive), so it is "
            "parsed and refused for its trailing bytes.",
            bid_bytes,
            "malformed",
            MAX_FRAME_BYTES,
        ),
        bad("type_not_str", "A bid whose type is the int 1 (2.6 step 3).", _with(bid, type=1), "invalid"),
        bad(
            "non_str_key",
            "The bid with one more key, the int 1 (keys are msgpack str, 2.2).",
            pack(map_as([*bid.items(), (1, 1)])),
            "invalid",
        ),
        bad(
            "non_str_key_in_record",
            "A task whose constraints record has one more key, the bin b'k'.",
            _with(task, constraints=map_as([*_record(task, "constraints").items(), (b"k", 1)])),
            "invalid",
        ),
        bad(
            "ext_in_record",
            "A task whose constraints.min_quality is a msgpack ext value (invalid in a known field at any level).",
            _with_record(task, "constraints", min_quality=msgspec.msgpack.Ext(1, b"x")),
            "invalid",
        ),
        bad(
            "nan_for_float",
            "A bid whose quality is NaN (a unit is never NaN).",
            _with(bid, quality=float("nan")),
            "invalid",
        ),
        bad(
            "reserved_byte_under_unknown_key",
            "The bid with an unknown key whose value is the reserved byte 0xc1: an unknown value is not "
            "interpreted, but the frame must still be well-formed msgpack (2.4).",
            _with(bid, added_in_v1_1=msgspec.Raw(b"\xc1")),
            "malformed",
        ),
    ]


def accept_vectors(ex: Examples) -> list[AcceptVector]:
    """Valid frames in other encodings than the canonical one (2.3) and edge cases (2.4, 1.3): every v1 decoder
    MUST accept them, each as the message given."""
    bid, task, result = _plain(ex.bid), _plain(ex.task), _plain(ex.result)
    constraints = _record(task, "constraints")

    def ok(
        name: str, description: str, frame: bytes, message: Message, may_refuse: str | None = None
    ) -> AcceptVector:
        return AcceptVector(
            name=name, description=description, frame=frame, message=message, may_refuse=may_refuse
        )

    families: tuple[IntFamily, ...] = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")
    ints = [
        ok(
            f"int_{family}",
            f"The bid with v = 1 written as a {family} (0x{bytes(int_as(family, 1))[0]:02x}) instead of a "
            "positive fixint: every int family and width that holds a value is valid.",
            _with(bid, v=int_as(family, 1)),
            ex.bid,
        )
        for family in families
    ]
    with_any = msgspec.structs.replace(
        ex.task, constraints=msgspec.structs.replace(ex.task.constraints, residency="any")
    )
    return [
        *ints,
        ok(
            "time_int64",
            "The bid with ts written as an int 64 (0xd3) instead of a uint 64 (0xcf).",
            _with(bid, ts=int_as("int64", ex.bid.ts)),
            ex.bid,
        ),
        *(
            ok(
                f"str{width}_value",
                f"The bid with region (10 bytes) written as a str {width} instead of a fixstr.",
                _with(bid, region=str_as(width, ex.bid.region)),
                ex.bid,
            )
            for width in (8, 16, 32)
        ),
        ok(
            "str8_key",
            "The bid with its key type written as a str 8 instead of a fixstr.",
            pack(map_as((str_as(8, key) if key == "type" else key, value) for key, value in bid.items())),
            ex.bid,
        ),
        ok(
            "map32_header",
            "The bid's map of 16 entries with a map 32 header instead of a map 16.",
            pack(map_as(bid.items(), 32)),
            ex.bid,
        ),
        ok(
            "map16_record",
            "The task with its constraints record of 6 entries under a map 16 header instead of a fixmap.",
            _with(task, constraints=map_as(constraints.items(), 16)),
            ex.task,
        ),
        *(
            ok(
                f"array{width}_header",
                f"The bid with residency (1 entry) under an array {width} header instead of a fixarray.",
                _with(bid, residency=array_as(width, ex.bid.residency)),
                ex.bid,
            )
            for width in (16, 32)
        ),
        *(
            ok(
                f"bin{width}_header",
                f"The result with its attestation ({len(ex.result.attestation)} bytes) under a bin {width} header "
                "instead of a bin 8.",
                _with(result, attestation=bin_as(width, ex.result.attestation)),
                ex.result,
            )
            for width in (16, 32)
        ),
        ok(
            "float32",
            "The task with policy.lambda_price 2.0 written as a float 32 (0xca), which holds it exactly.",
            _with_record(task, "policy", lambda_price=msgspec.Raw(b"\xca" + struct.pack(">f", 2.0))),
            ex.task,
        ),
        ok(
            "int_for_float",
            "The task with policy.lambda_price written as the int 2: a float field takes any int.",
            _with_record(task, "policy", lambda_price=2),
            ex.task,
        ),
        ok(
            "keys_reversed",
            "The bid with its keys in reverse order (type last).",
            pack(dict(reversed(bid.items()))),
            ex.bid,
        ),
        ok(
            "record_keys_reversed",
            "The task with the keys of its constraints record in reverse order.",
            _with(task, constraints=dict(reversed(constraints.items()))),
            ex.task,
        ),
        ok(
            "defaults_omitted",
            "The bid without v, expires_ns and attempt, whose values are their defaults (1, nil, 1).",
            pack({k: v for k, v in bid.items() if k not in ("v", "expires_ns", "attempt")}),
            ex.bid,
        ),
        ok(
            "unknown_key",
            "The bid with one more key, added_in_v1_1 (as a newer minor version would add a field): ignored.",
            _with(bid, added_in_v1_1=1),
            ex.bid,
        ),
        ok(
            "unknown_key_in_record",
            "The task with one more key in its constraints record: ignored at every level.",
            _with_record(task, "constraints", added_in_v1_1=[1, "x"]),
            ex.task,
        ),
        ok(
            "unknown_value_invalid_utf8",
            "The bid with an unknown key whose value is a str holding the byte 0xff: an unknown value is not "
            "read, so its UTF-8 is not checked (2.4).",
            _with(bid, added_in_v1_1=str_as(None, b"\xff")),
            ex.bid,
        ),
        ok(
            "unknown_key_invalid_utf8",
            "The bid with one more key whose name holds the byte 0xff: it names no field, so it is skipped.",
            pack(map_as([*bid.items(), (str_as(None, b"added_\xff"), 1)])),
            ex.bid,
        ),
        ok(
            "unknown_value_ext",
            "The bid with an unknown key whose value is a msgpack ext value (invalid only in a known field).",
            _with(bid, added_in_v1_1=msgspec.msgpack.Ext(1, b"x")),
            ex.bid,
        ),
        ok(
            "unknown_value_non_str_keys",
            "The bid with an unknown key whose value is a map with int, nil and bin keys.",
            _with(bid, added_in_v1_1=map_as([(1, "a"), (None, True), (b"k", [1.5])])),
            ex.bid,
        ),
        ok(
            "residency_any",
            "The task with constraints.residency the reserved token any: a decoder accepts it (1.3); no agent is "
            "certified for it, so no agent is eligible.",
            _with_record(task, "constraints", residency="any"),
            with_any,
        ),
        ok(
            "duplicate_key",
            "The bid with price_micros twice, first 1 and then its own value: a decoder that accepts it uses the "
            "last occurrence (2.4).",
            pack(repeated(bid, "price_micros", 1)),
            ex.bid,
            may_refuse="malformed",
        ),
    ]


_TIME_MAX: Final = 2**63 - 1


def json_vectors(ex: Examples) -> list[JsonVector]:
    """Spellings of the JSON form (2.5) other than the reference's that every reader MUST accept."""
    task, bid = json.loads(encode_json(ex.task)), json.loads(encode_json(ex.bid))
    text = json.dumps(task, ensure_ascii=False)
    mu = f'"mu_latency": {ex.task.policy.mu_latency!r}'
    assert mu in text
    latest = msgspec.structs.replace(ex.bid, ts=_TIME_MAX, expires_ns=_TIME_MAX, valid_until_ns=_TIME_MAX)
    return [
        JsonVector(
            name="float_as_integer",
            description="The task with policy.lambda_price written 2 instead of 2.0: a float field takes any JSON "
            "number.",
            text=json.dumps({**task, "policy": {**task["policy"], "lambda_price": 2}}, ensure_ascii=False),
            message=ex.task,
        ),
        JsonVector(
            name="float_with_exponent",
            description="The task with policy.mu_latency written 5e-2 instead of 0.05.",
            text=text.replace(mu, '"mu_latency": 5e-2'),
            message=ex.task,
        ),
        JsonVector(
            name="escaped_strings",
            description="The task with every non-ASCII character written as a \\u escape (UTF-16 pairs beyond the "
            "BMP).",
            text=json.dumps(task, ensure_ascii=True),
            message=ex.task,
        ),
        JsonVector(
            name="keys_in_any_order",
            description="The bid with its keys in reverse order.",
            text=json.dumps(dict(reversed(bid.items()))),
            message=ex.bid,
        ),
        JsonVector(
            name="time_at_maximum",
            description="The bid with ts, expires_ns and valid_until_ns at 2^63-1, the largest time: integers "
            "beyond 2^53 must be read exactly (BigInt in JavaScript, 2.9).",
            text=encode_json(latest).decode("utf-8"),
            message=latest,
        ),
    ]


def padded(data: bytes, doc: Mapping[str, object]) -> bytes:
    """``data`` followed by :data:`PAD` bytes up to the document's ``padded_length``, if it has one."""
    length = doc.get("padded_length")
    return data if length is None else data + PAD * (int(str(length)) - len(data))


def frame_of(doc: Mapping[str, object]) -> bytes:
    """The frame of an ``invalid/`` or ``accept/`` document: ``msgpack_hex``, padded up to ``padded_length``."""
    return padded(bytes.fromhex(str(doc["msgpack_hex"])), doc)


def _documents(ex: Examples) -> dict[str, JsonObject]:
    docs: dict[str, JsonObject] = {}
    for bad in invalid_vectors(ex):
        doc: JsonObject = {
            "name": bad.name,
            "description": bad.description,
            "msgpack_hex": bad.frame.hex(),
            "reason": bad.reason,
        }
        if bad.padded_length is not None:
            doc["padded_length"] = bad.padded_length
        docs[f"{INVALID_DIR}/{bad.name}.json"] = doc
    for good in accept_vectors(ex):
        doc = {
            "name": good.name,
            "description": good.description,
            "msgpack_hex": good.frame.hex(),
            "json": json.loads(encode_json(good.message)),
            "canonical_hex": encode(good.message).hex(),
        }
        if good.may_refuse is not None:
            doc["may_refuse"] = good.may_refuse
        docs[f"{ACCEPT_DIR}/{good.name}.json"] = doc
    for spelling in json_vectors(ex):
        docs[f"{JSON_DIR}/{spelling.name}.json"] = {
            "name": spelling.name,
            "description": spelling.description,
            "json_text": spelling.text,
            "msgpack_hex": encode(spelling.message).hex(),
        }
    return docs


def decoder_vector_files(ex: Examples) -> dict[str, bytes]:
    """File path (relative to spec/vectors/messages/, '/'-separated) -> exact file bytes."""
    return {path: render_json(doc) for path, doc in _documents(ex).items()}
