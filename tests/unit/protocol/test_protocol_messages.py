"""Every Meta bound of every field, at the bound and one step past it, through the real decoder.

The cases are derived from msgspec.inspect, so a bound added or changed in messages.py is tested without editing
this file; the golden examples (accord.spec.message_vectors) supply the rest of each message.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from accord.errors import RemoteProtocolError
from accord.protocol import codec
from accord.protocol.messages import (
    ALLOWED_REASONS,
    MAX_FRAME_BYTES,
    MAX_TEXT,
    MESSAGE_TYPES,
    Message,
    ReasonCode,
    Result,
    message_tag,
)
from accord.spec.message_vectors import message_vectors

EXAMPLES: dict[type[Message], Message] = {type(v.message): v.message for v in message_vectors()}

# Extreme valid and invalid values per pattern (a pattern cannot be inverted generically).
PATTERN_CASES: dict[str, list[tuple[str, bool]]] = {
    r"^[0-9a-f]{32}\Z": [("f" * 32, True), ("0" * 32, True), ("F" * 32, False), ("f" * 31, False),
                          ("f" * 33, False), ("g" * 32, False)],
    r"^[0-9a-f]{64}\Z": [("9" * 64, True), ("9" * 63, False), ("A" * 64, False)],
    r"^U[A-Z2-7]{55}\Z": [("U" + "7" * 55, True), ("U" + "A" * 54, False), ("U" + "1" * 55, False),
                           ("N" + "A" * 55, False), ("U" + "a" * 55, False)],
    r"^[A-Za-z0-9_-]{1,64}\Z": [("a" * 64, True), ("Z-_9", True), ("a" * 65, False), ("", False), ("a.b", False),
                                 ("a*", False), (">", False), ("a b", False), ("é", False)],
    r"^[A-Za-z0-9_.:/@+-]{1,128}\Z": [("m" * 128, True), ("org/model:q4@v1+x", True), ("m" * 129, False),
                                       ("", False), ("a b", False), ("a\tb", False)],
}  # fmt: skip


def _unwrap(t: mi.Type) -> mi.Type:
    return t.type if isinstance(t, mi.Metadata) else t


def _scalar_cases(t: mi.Type, current: Any) -> Iterator[tuple[Any, bool, str]]:
    """(value, should decode, label) for one field type."""
    t = _unwrap(t)
    if isinstance(t, mi.UnionType):
        members = [_unwrap(m) for m in t.types]
        if any(isinstance(m, mi.NoneType) for m in members):
            yield None, True, "null"
        for m in members:
            if not isinstance(m, mi.NoneType):
                yield from _scalar_cases(m, current)
    elif isinstance(t, mi.IntType):
        if t.ge is not None:
            yield t.ge, True, "ge"
            yield t.ge - 1, False, "ge-1"
        if t.le is not None:
            yield t.le, True, "le"
            yield t.le + 1, False, "le+1"
        yield float(t.ge or 0), False, "float for int"
    elif isinstance(t, mi.FloatType):
        if t.ge is not None:
            yield t.ge, True, "ge"
            yield math.nextafter(t.ge, -math.inf), False, "below ge"
        if t.gt is not None:
            yield t.gt, False, "gt"
            yield math.nextafter(t.gt, math.inf), True, "above gt"
        if t.le is not None:
            yield t.le, True, "le"
            yield math.nextafter(t.le, math.inf), False, "above le"
        yield math.nan, False, "nan"
        yield math.inf, False, "inf"
    elif isinstance(t, mi.StrType):
        if t.pattern is not None:
            yield from ((v, ok, f"pattern {v[:10]!r}") for v, ok in PATTERN_CASES[t.pattern])
            if isinstance(current, str):
                yield current + "\n", False, "trailing newline"
        if t.max_length is not None:
            yield "é" * t.max_length, True, "max_length (characters, not bytes)"
            yield "a" * (t.max_length + 1), False, "max_length+1"
        yield 7, False, "int for str"
    elif isinstance(t, mi.BytesType):
        if t.max_length is not None:
            yield b"\xff" * t.max_length, True, "max_length"
            yield b"\xff" * (t.max_length + 1), False, "max_length+1"
        yield "not bytes", False, "str for bytes"
    elif isinstance(t, mi.EnumType):
        for member in t.cls:
            yield member.value, True, f"enum {member.value}"
        yield "zzz", False, "unknown enum value"
        yield next(iter(t.cls)).value.upper(), False, "enum value in upper case"
    elif isinstance(t, mi.BoolType):
        yield True, True, "true"
        yield 1, False, "int for bool"
    elif isinstance(t, mi.ListType):
        item = current[0] if current else None
        if t.min_length:
            yield [], False, "below min_length"
        if t.max_length is not None and item is not None:
            yield [item] * t.max_length, True, "max_length"
            yield [item] * (t.max_length + 1), False, "max_length+1"


Case = tuple[tuple[Any, ...], Any, bool, str]
"""(path to the field, value, should decode, label)"""


def _cases(t: mi.StructType, data: dict[str, Any], path: tuple[Any, ...] = ()) -> Iterator[Case]:
    for f in t.fields:
        if f.name == "v" and not path:
            continue  # the major version: covered by test_protocol_compat
        ft = _unwrap(f.type)
        current = data.get(f.encode_name)
        if isinstance(ft, mi.StructType):
            yield from _cases(ft, current, (*path, f.encode_name))
            continue
        if isinstance(ft, mi.ListType) and isinstance(_unwrap(ft.item_type), mi.StructType) and current:
            yield from _cases(_unwrap(ft.item_type), current[0], (*path, f.encode_name, 0))  # type: ignore[arg-type]
        for value, ok, label in _scalar_cases(ft, current):
            yield (*path, f.encode_name), value, ok, label


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("type_", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_every_bound_at_the_edge_and_past_it(type_: type[Message]) -> None:
    example = EXAMPLES[type_]
    data = msgspec.to_builtins(example, builtin_types=(bytes,))
    failures = []
    count = 0
    for path, value, ok, label in _cases(mi.type_info(type_), data):  # type: ignore[arg-type]
        count += 1
        frame = msgspec.msgpack.encode(_set(data, path, value))
        try:
            decoded = codec.decode(frame)
        except RemoteProtocolError as exc:
            if ok or exc.reason not in ("invalid", "frame_too_large"):
                failures.append(f"{'.'.join(map(str, path))} {label}: refused ({exc})")
            continue
        if not ok:
            failures.append(f"{'.'.join(map(str, path))} {label}: accepted {value!r:.60}")
        elif msgspec.to_builtins(decoded, builtin_types=(bytes,)) != _set(data, path, value):
            failures.append(f"{'.'.join(map(str, path))} {label}: decoded to something else")
    assert count > 10
    assert failures == []


def test_longest_text_fits_a_frame_in_ascii_but_not_in_four_byte_characters() -> None:
    """MAX_TEXT is in characters; the frame limit (bytes) is what bounds a message of 4-byte characters."""
    result = EXAMPLES[Result]
    assert isinstance(result, Result)
    ascii_result = msgspec.structs.replace(result, output="a" * MAX_TEXT)
    assert codec.decode(codec.encode(ascii_result)) == ascii_result
    wide = msgspec.structs.replace(result, output="\U0001f600" * MAX_TEXT)  # 1 MiB of UTF-8, plus the rest
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(codec.encode(wide))
    assert info.value.reason == "frame_too_large"
    assert len(codec.encode(wide)) > MAX_FRAME_BYTES


# --- reason codes -----------------------------------------------------------------------------------------------
def test_allowed_reasons_name_message_types_with_a_reason_field() -> None:
    tags = {message_tag(t): t for t in MESSAGE_TYPES}
    for tag, codes in ALLOWED_REASONS.items():
        assert "reason" in tags[tag].__struct_fields__, tag
        assert ReasonCode.OTHER in codes
    with_reason = {message_tag(t) for t in MESSAGE_TYPES if "reason" in t.__struct_fields__}
    assert set(ALLOWED_REASONS) == with_reason


def test_every_reason_code_is_allowed_somewhere() -> None:
    used = set().union(*ALLOWED_REASONS.values())
    assert used == set(ReasonCode)


def test_reason_codes_are_valid_tokens() -> None:
    for code in ReasonCode:
        assert msgspec.convert(code.value, type=str)
        assert 1 <= len(code.value) <= 64 and code.value.replace("_", "").isalnum() and code.value.islower()


def test_default_reasons_are_allowed_for_their_message() -> None:
    for type_ in MESSAGE_TYPES:
        fields = {f.name: f for f in msgspec.structs.fields(type_)}
        if "reason" in fields and not fields["reason"].required:
            assert ReasonCode(fields["reason"].default) in ALLOWED_REASONS[message_tag(type_)]


def test_examples_use_allowed_reasons() -> None:
    for message in EXAMPLES.values():
        reason = getattr(message, "reason", None)
        if reason is not None:
            assert ReasonCode(reason) in ALLOWED_REASONS[message_tag(type(message))]
