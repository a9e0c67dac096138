"""Byte and value mutations shared by the fuzzers (the decoder's, tests/unit/protocol/test_protocol_fuzz.py, and
the receive path's, tests/support/frame_fuzz.py): each is seeded by the ``random.Random`` it is given."""

from __future__ import annotations

import random
from typing import Any

import msgspec

__all__ = ["INTERESTING_BYTES", "bitflip", "byte_set", "random_value", "set_random_path", "splice", "truncate"]

INTERESTING_BYTES = bytes([0x00, 0x01, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4,
                           0xC7, 0xCA, 0xCB, 0xCC, 0xCF, 0xD0, 0xD3, 0xD4, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE,
                           0xDF, 0xE0, 0xFF])  # fmt: skip


def bitflip(frame: bytes, rng: random.Random) -> bytes:
    out = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def byte_set(frame: bytes, rng: random.Random, palette: bytes) -> bytes:
    out = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice(palette) if rng.random() < 0.7 else rng.randrange(256)
    return bytes(out)


def random_value(rng: random.Random, depth: int = 0, ext: bool = True) -> Any:
    """A value of a random msgpack type (containers only near the top, so it stays small); ``ext``: may be an
    msgpack extension value (not for JSON)."""
    choice = rng.randrange((14 if ext else 13) if depth < 2 else 11)
    if choice == 11:
        return [random_value(rng, depth + 1, ext) for _ in range(rng.randint(0, 3))]
    if choice == 12:
        return {"type": rng.choice(["bid", "task", "zzz", ""]), "k": random_value(rng, depth + 1, ext)}
    if choice == 13:
        return msgspec.msgpack.Ext(rng.randrange(-128, 128), b"\x01\x02")
    return [None, True, -1, 2**64 - 1, -(2**63), float("nan"), float("inf"), 1e308, "", "x" * rng.randint(1, 300),
            b"\x00" * rng.randint(0, 40)][choice]  # fmt: skip


def set_random_path(data: Any, rng: random.Random, value: Any) -> Any:
    """Replace a random (possibly nested) value in a copy of ``data``."""
    if isinstance(data, dict) and data and rng.random() < 0.85:
        key = rng.choice(list(data))
        copy = dict(data)
        copy[key] = set_random_path(data[key], rng, value) if rng.random() < 0.5 else value
        return copy
    if isinstance(data, list) and data and rng.random() < 0.85:
        i = rng.randrange(len(data))
        copy_list = list(data)
        copy_list[i] = set_random_path(data[i], rng, value)
        return copy_list
    return value


def truncate(frame: bytes, rng: random.Random) -> bytes:
    return frame[: rng.randrange(len(frame))]


def splice(frame: bytes, other: bytes, rng: random.Random) -> bytes:
    """The head of ``frame`` and the tail of ``other``, each cut at random."""
    return frame[: rng.randrange(len(frame) + 1)] + other[rng.randrange(len(other)) :]
