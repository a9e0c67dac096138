"""NATS nkey text encoding of Ed25519 public keys and seeds (the same keys authenticate NATS connections).

Public key: ``base32(prefix || key32 || crc16_le(prefix || key32))`` without padding: 35 bytes, 56 characters.
Seed: ``base32(b0 || b1 || seed32 || crc16_le(b0 || b1 || seed32))`` without padding: 36 bytes, 58 characters,
where ``b0 = SEED_PREFIX | (prefix >> 5)`` and ``b1 = (prefix & 31) << 3``; so a user seed starts ``SU`` and an
operator seed ``SO``. crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), stored little-endian.
This module is written from the nkeys format description and checked against the ``nkeys`` package in tests.
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Final

__all__ = [
    "KeyKind",
    "crc16",
    "decode_public",
    "decode_seed",
    "encode_public",
    "encode_seed",
]

SEED_PREFIX: Final = 18 << 3
"""First five bits of a seed: base32 ``S``."""


class KeyKind(enum.IntEnum):
    """The nkey role prefixes Accord uses (the byte value; base32 gives the first character)."""

    USER = 20 << 3
    """Agents: ids start with ``U``."""
    OPERATOR = 14 << 3
    """Operators (certificate issuers): ids start with ``O``."""

    @property
    def letter(self) -> str:
        return "U" if self is KeyKind.USER else "O"


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM of ``data`` (the nkeys checksum)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _with_crc(raw: bytes) -> bytes:
    return raw + crc16(raw).to_bytes(2, "little")


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _unb32(text: str, length: int) -> bytes | None:
    """Decode unpadded base32 of exactly ``length`` bytes, or None; re-encoding must give ``text`` back."""
    if not text.isascii():
        return None
    padded = text + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != length or _b32(raw) != text:  # canonical form only: one text per key
        return None
    return raw


def _check_crc(raw: bytes) -> bytes | None:
    body, crc = raw[:-2], raw[-2:]
    return body if crc16(body).to_bytes(2, "little") == crc else None


def encode_public(key: bytes, kind: KeyKind = KeyKind.USER) -> str:
    """The 56-character nkey text of a 32-byte Ed25519 public key."""
    if len(key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return _b32(_with_crc(bytes([kind]) + key))


def decode_public(text: str, kind: KeyKind | None = None) -> tuple[KeyKind, bytes] | None:
    """``(kind, key32)`` of an nkey public key text, or None when it is not one (wrong kind, checksum, length)."""
    raw = _unb32(text, 35)
    if raw is None:
        return None
    body = _check_crc(raw)
    if body is None:
        return None
    try:
        found = KeyKind(body[0])
    except ValueError:
        return None
    if kind is not None and found is not kind:
        return None
    return found, body[1:]


def encode_seed(seed: bytes, kind: KeyKind = KeyKind.USER) -> str:
    """The 58-character nkey seed text (``SU...``, ``SO...``) of a 32-byte Ed25519 private seed."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    header = bytes([SEED_PREFIX | (kind >> 5), (kind & 31) << 3])
    return _b32(_with_crc(header + seed))


def decode_seed(text: str) -> tuple[KeyKind, bytes] | None:
    """``(kind, seed32)`` of an nkey seed text, or None when it is not a valid user or operator seed."""
    raw = _unb32(text, 36)
    if raw is None:
        return None
    body = _check_crc(raw)
    if body is None:
        return None
    if body[0] & 0xF8 != SEED_PREFIX:
        return None
    prefix = ((body[0] & 0x07) << 5) | ((body[1] & 0xF8) >> 3)
    if body[1] & 0x07:
        return None
    try:
        kind = KeyKind(prefix)
    except ValueError:
        return None
    return kind, body[2:]
