"""Ed25519: the one place Accord makes and checks signatures (RFC 8032, pure Ed25519).

Everything that signs (frames, attestations, certificates, revocation lists) goes through
:meth:`PrivateKey.sign`, everything that checks through :meth:`PublicKey.verify`: swapping the library under
them changes nothing else. The tests cross-check these functions against ``cryptography`` on every spec vector.

:data:`counts` counts signatures made and checked in this process (an integer increment next to a 20-100 us
operation): the benchmarks read it to report what each role spends.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from accord.security.errors import Reason, SignatureError

__all__ = ["KEY_BYTES", "SIGNATURE_BYTES", "PrivateKey", "PublicKey", "SignatureCounts", "counts"]

KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64


class SignatureCounts:
    """Signatures made and checked by this process since it started (or since :meth:`reset`)."""

    __slots__ = ("checked", "signed")

    def __init__(self) -> None:
        self.signed = 0
        self.checked = 0

    def reset(self) -> None:
        self.signed = 0
        self.checked = 0


counts: Final = SignatureCounts()


class PublicKey:
    """An Ed25519 public key (32 raw bytes), ready to check signatures."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise ValueError("an Ed25519 public key is 32 bytes")
        self.raw = bytes(raw)
        self._key = Ed25519PublicKey.from_public_bytes(self.raw)

    def verify(self, sig: bytes, data: bytes) -> None:
        """Raise SignatureError(bad_signature) unless ``sig`` is this key's signature of ``data``."""
        counts.checked += 1
        if len(sig) != SIGNATURE_BYTES:
            raise SignatureError(Reason.BAD_SIGNATURE, "an Ed25519 signature is 64 bytes")
        try:
            self._key.verify(sig, data)
        except InvalidSignature as exc:
            raise SignatureError(Reason.BAD_SIGNATURE, "signature does not verify") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.raw.hex()})"


class PrivateKey:
    """An Ed25519 private key (RFC 8032's 32-byte secret seed). ``repr`` never shows the secret."""

    __slots__ = ("_key", "_seed", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEY_BYTES:
            raise ValueError("an Ed25519 secret is 32 bytes")
        self._seed = bytes(seed)
        self._key = Ed25519PrivateKey.from_private_bytes(self._seed)
        self.public = PublicKey(
            self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(os.urandom(KEY_BYTES))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret. Secret: write it only through a key file."""
        return self._seed

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        counts.signed += 1
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public.raw.hex()})"
