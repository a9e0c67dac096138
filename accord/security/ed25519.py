"""Ed25519: the one place Accord makes and checks signatures (RFC 8032, pure Ed25519), with libsodium.

Everything that signs (frames, attestations, certificates, revocation lists) goes through
:meth:`PrivateKey.sign`, everything that checks through :meth:`PublicKey.verify`: swapping the library under
them changes nothing else. The library is libsodium through PyNaCl (its raw bindings: no object per call), which
signs in about 60% and verifies in about half the time of ``cryptography`` (OpenSSL) on the machines we measured
(``python -m tests.bench.security``). The tests cross-check both libraries on every spec vector
(tests/unit/security/test_security_ed25519.py); ``cryptography`` stays for that and for the benchmarks' floors.

:data:`counts` counts signatures made and checked in this process (an integer increment next to a 20-100 us
operation): the benchmarks read it to report what each role spends.
"""

from __future__ import annotations

import os
from typing import Final

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

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

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise ValueError("an Ed25519 public key is 32 bytes")
        self.raw = bytes(raw)

    def verify(self, sig: bytes, data: bytes) -> None:
        """Raise SignatureError(bad_signature) unless ``sig`` is this key's signature of ``data``."""
        counts.checked += 1
        if len(sig) != SIGNATURE_BYTES:
            raise SignatureError(Reason.BAD_SIGNATURE, "an Ed25519 signature is 64 bytes")
        try:
            crypto_sign_open(sig + data, self.raw)
        except BadSignatureError as exc:  # libsodium refuses a forged, corrupt or small-order signature or key
            raise SignatureError(Reason.BAD_SIGNATURE, "signature does not verify") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.raw.hex()})"


class PrivateKey:
    """An Ed25519 private key (RFC 8032's 32-byte secret seed). ``repr`` never shows the secret."""

    __slots__ = ("_secret", "_seed", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEY_BYTES:
            raise ValueError("an Ed25519 secret is 32 bytes")
        self._seed = bytes(seed)
        public, self._secret = crypto_sign_seed_keypair(self._seed)  # libsodium's 64-byte form: seed || public
        self.public = PublicKey(public)

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
        return crypto_sign(data, self._secret)[:SIGNATURE_BYTES]  # libsodium returns signature || data

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public.raw.hex()})"
