"""Hand-built msgpack for the vectors a canonical encoder cannot write (spec 2.3, 2.4): other int families, longer
headers than needed, keys in another order, duplicate or non-str keys, bytes that are not UTF-8.

Pure. Each helper returns a :class:`msgspec.Raw`, which ``msgspec.msgpack.encode`` copies verbatim, so one piece
of a value can be spelled by hand while the rest is encoded canonically:
``msgspec.msgpack.encode({**message, "v": int_as("uint64", 1)})``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

import msgspec

__all__ = ["IntFamily", "array_as", "bin_as", "int_as", "map_as", "pack", "repeated", "str_as"]

IntFamily = Literal["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]
Width = Literal[8, 16, 32]

_INT: Final[dict[str, tuple[int, int]]] = {
    "uint8": (0xCC, 1),
    "uint16": (0xCD, 2),
    "uint32": (0xCE, 4),
    "uint64": (0xCF, 8),
    "int8": (0xD0, 1),
    "int16": (0xD1, 2),
    "int32": (0xD2, 4),
    "int64": (0xD3, 8),
}
# (family, width in bits) -> (first byte, length bytes); fixstr, fixarray and fixmap are the canonical short forms.
_HEADER: Final[dict[tuple[str, int], tuple[int, int]]] = {
    ("str", 8): (0xD9, 1),
    ("str", 16): (0xDA, 2),
    ("str", 32): (0xDB, 4),
    ("bin", 8): (0xC4, 1),
    ("bin", 16): (0xC5, 2),
    ("bin", 32): (0xC6, 4),
    ("array", 16): (0xDC, 2),
    ("array", 32): (0xDD, 4),
    ("map", 16): (0xDE, 2),
    ("map", 32): (0xDF, 4),
}


def pack(value: object) -> bytes:
    """The msgpack of a plain value (dicts keep their insertion order; Raw pieces are copied as they are)."""
    return msgspec.msgpack.encode(value)


def _header(family: str, width: int, length: int) -> bytes:
    first, size = _HEADER[(family, width)]
    return bytes([first]) + length.to_bytes(size, "big")


def int_as(family: IntFamily, value: int) -> msgspec.Raw:
    """``value`` in one int family and width, whatever the shortest form would be."""
    first, size = _INT[family]
    return msgspec.Raw(bytes([first]) + value.to_bytes(size, "big", signed=family.startswith("int")))


def str_as(width: Width | None, data: str | bytes) -> msgspec.Raw:
    """A str with a str 8/16/32 header (None: the shortest); ``bytes`` are taken as they are (e.g. not UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if width is None:
        width = 8 if len(raw) < 1 << 8 else 16 if len(raw) < 1 << 16 else 32
        if len(raw) < 32:
            return msgspec.Raw(bytes([0xA0 | len(raw)]) + raw)
    return msgspec.Raw(_header("str", width, len(raw)) + raw)


def bin_as(width: Width, data: bytes) -> msgspec.Raw:
    return msgspec.Raw(_header("bin", width, len(data)) + data)


def array_as(width: Literal[16, 32], items: Sequence[object]) -> msgspec.Raw:
    return msgspec.Raw(_header("array", width, len(items)) + b"".join(pack(item) for item in items))


def map_as(pairs: Iterable[tuple[object, object]], width: Literal[16, 32] | None = None) -> msgspec.Raw:
    """A map of these (key, value) pairs in this order: keys of any type, repeated keys kept; ``width`` None
    writes the shortest header."""
    items = list(pairs)
    body = b"".join(pack(key) + pack(value) for key, value in items)
    if width is not None:
        header = _header("map", width, len(items))
    elif len(items) < 16:
        header = bytes([0x80 | len(items)])
    else:
        header = _header("map", 16 if len(items) < 1 << 16 else 32, len(items))
    return msgspec.Raw(header + body)


def repeated(mapping: Mapping[str, object], key: str, first: object) -> msgspec.Raw:
    """``mapping`` as a map in which ``key`` occurs twice: with ``first``, then (last) with its own value."""
    pairs: list[tuple[object, object]] = []
    for k, value in mapping.items():
        if k == key:
            pairs.append((k, first))
        pairs.append((k, value))
    return map_as(pairs)
