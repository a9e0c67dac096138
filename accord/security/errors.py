"""Typed security failures, each with a stable reason code callers can branch on.

Every failure that :mod:`accord.security` raises on purpose is a :class:`SecurityError` with a
:class:`Reason`. Foreign exceptions (msgspec decode errors, libsodium's ``BadSignatureError``, ``OSError``
on key files) are mapped at the boundary with ``raise ... from exc``; none escapes untyped. The one exception is
a key or trust file path that names no regular file, or a file over its cap: that is refused before anything
reads it, as :class:`accord.files.FileRefusedError`, whatever the file was meant to hold.
"""

from __future__ import annotations

import enum

from accord.errors import AccordError

__all__ = [
    "FrameError",
    "KeyFileError",
    "Reason",
    "ReplayError",
    "SecurityError",
    "SignatureError",
    "TrustError",
]


class Reason(enum.StrEnum):
    """Why a frame, certificate, attestation or key file was refused (spec sections 7-10)."""

    # frame / envelope shape (FrameError)
    MALFORMED = "malformed"
    """The envelope (or the signed payload, or a trust file) does not parse."""
    TOO_LARGE = "too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    WRONG_PAYLOAD_TYPE = "wrong_payload_type"
    # authenticity (SignatureError)
    BAD_SIGNATURE = "bad_signature"
    SENDER_MISMATCH = "sender_mismatch"
    """The payload's ``sender`` (or an attestation's ``agent``) is not the verified signer."""
    OUTPUT_MISMATCH = "output_mismatch"
    """An attestation's subject digest is not the digest of the output it is checked against."""
    # trust (TrustError)
    UNKNOWN_KEY = "unknown_key"
    UNKNOWN_ISSUER = "unknown_issuer"
    REVOKED = "revoked"
    CERT_EXPIRED = "cert_expired"
    CERT_NOT_YET_VALID = "cert_not_yet_valid"
    # freshness and context (ReplayError)
    REPLAY = "replay"
    STALE = "stale"
    FUTURE = "future"
    EXPIRED = "expired"
    CONTEXT_MISMATCH = "context_mismatch"
    # key files (KeyFileError)
    INSECURE_KEY_FILE = "insecure_key_file"
    BAD_KEY_FILE = "bad_key_file"
    KEY_FILE_EXISTS = "key_file_exists"
    KEY_FILE_MISSING = "key_file_missing"


class SecurityError(AccordError):
    """Root of the security failures. ``reason`` is the stable code; the text is for humans."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class FrameError(SecurityError):
    """The bytes are not a well-formed envelope of the expected kind (malformed, too large, wrong type)."""


class SignatureError(SecurityError):
    """The signature does not verify, or it does not authenticate the claimed sender or output."""


class TrustError(SecurityError):
    """The signing key is not trusted now: unknown, revoked, or its certificate is outside its validity."""


class ReplayError(SecurityError):
    """A verified frame is a replay, is stale, from the future, expired, or belongs to another context."""


class KeyFileError(SecurityError):
    """A key file is missing, malformed, or readable by group or others."""
