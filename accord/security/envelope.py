"""The signed envelope (spec section 7): DSSE's pre-authentication encoding over exact payload bytes.

``Envelope`` is the msgpack map ``{v, payload_type, payload, key_id, sig}``. ``sig`` is Ed25519 over
``PAE(payload_type, payload)``; the payload travels unchanged beside it, so a receiver verifies the very bytes
it will decode, before decoding them. The same envelope carries frames, certificates and revocation lists,
told apart by ``payload_type`` (which the signature covers).

Trust before decode starts here: :func:`decode_envelope_view` parses and shape-checks an envelope without copying
its payload (the payload stays a view into the frame), so a receiver looks its ``key_id`` up before it pays for a
byte of the payload; a 1 MiB frame from an unknown key costs what a small one does (spec 7.5 step 3).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from accord.errors import RemoteProtocolError
from accord.protocol.codec import decode_as
from accord.protocol.messages import MAX_FRAME_BYTES
from accord.security.ed25519 import PublicKey
from accord.security.errors import FrameError, Reason
from accord.security.identity import Identity

__all__ = [
    "ENVELOPE_VERSION",
    "PAYLOAD_TYPE_CERT",
    "PAYLOAD_TYPE_FRAME",
    "PAYLOAD_TYPE_REVOCATIONS",
    "Envelope",
    "EnvelopeView",
    "b64decode_strict",
    "b64encode",
    "decode_envelope",
    "decode_envelope_view",
    "encode_envelope",
    "pae",
    "sign_envelope",
    "verify_signature",
]

ENVELOPE_VERSION: Final = 1
PAYLOAD_TYPE_FRAME: Final = "application/vnd.accord.v1+msgpack"
"""A protocol message (accord.protocol.codec.encode)."""
PAYLOAD_TYPE_CERT: Final = "application/vnd.accord.cert.v1+msgpack"
"""An agent certificate signed by an operator."""
PAYLOAD_TYPE_REVOCATIONS: Final = "application/vnd.accord.revocations.v1+msgpack"
"""A revocation list signed by an operator."""

KeyId = Annotated[
    str, Meta(max_length=64, description="nkey public key text: a hint, looked up in the trust store")
]


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One signed frame on the wire. Every field is required; unknown fields are ignored."""

    # Any msgpack int, so that every version but 1 is refused as unsupported_version (spec 7.1), not malformed;
    # only 1 is ever encoded. The length bounds count characters, as every text bound of the spec does.
    v: int
    payload_type: Annotated[str, Meta(max_length=128)]
    payload: Annotated[bytes, Meta(max_length=MAX_FRAME_BYTES)]
    key_id: KeyId
    sig: Annotated[bytes, Meta(min_length=64, max_length=64)]


class EnvelopeView(msgspec.Struct, frozen=True, kw_only=True):
    """An :class:`Envelope` as parsed, its payload a view into the frame (not copied, not decoded)."""

    v: int
    payload_type: Annotated[str, Meta(max_length=128)]
    payload: Annotated[memoryview, Meta(max_length=MAX_FRAME_BYTES)]
    key_id: KeyId
    sig: Annotated[bytes, Meta(min_length=64, max_length=64)]

    def envelope(self) -> Envelope:
        """The envelope, its payload copied out of the frame (do this only once ``key_id`` is trusted)."""
        return Envelope(
            v=self.v, payload_type=self.payload_type, payload=bytes(self.payload), key_id=self.key_id, sig=self.sig
        )


_encoder: Final = msgspec.msgpack.Encoder(order="deterministic")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def sign_envelope(payload_type: str, payload: bytes, identity: Identity) -> Envelope:
    return Envelope(
        v=ENVELOPE_VERSION,
        payload_type=payload_type,
        payload=payload,
        key_id=identity.id,
        sig=identity.sign(pae(payload_type, payload)),
    )


def encode_envelope(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode_envelope(frame: bytes | bytearray | memoryview, payload_type: str) -> Envelope:
    """Parse and shape-check an envelope; raise FrameError (malformed, too_large, version, payload type)."""
    return decode_envelope_view(frame, payload_type).envelope()


def decode_envelope_view(frame: bytes | bytearray | memoryview, payload_type: str) -> EnvelopeView:
    """:func:`decode_envelope` without copying the payload: the same checks, in the same order, at a cost that
    does not grow with the payload (msgpack gives its length up front; msgspec takes a view of it)."""
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameError(Reason.TOO_LARGE, f"{len(frame)} bytes > limit {MAX_FRAME_BYTES}")
    try:
        envelope = decode_as(frame, EnvelopeView)
    except RemoteProtocolError as exc:
        raise FrameError(Reason.MALFORMED, exc.detail or exc.reason) from exc
    if envelope.v != ENVELOPE_VERSION:
        raise FrameError(Reason.UNSUPPORTED_VERSION, f"envelope v{envelope.v}, this build speaks v1")
    if envelope.payload_type != payload_type:
        raise FrameError(Reason.WRONG_PAYLOAD_TYPE, f"{envelope.payload_type!r}, expected {payload_type!r}")
    return envelope


def verify_signature(key: PublicKey, payload_type: str, payload: bytes, sig: bytes) -> None:
    """Raise SignatureError(bad_signature) unless ``sig`` is ``key``'s signature of PAE(type, payload)."""
    key.verify(sig, pae(payload_type, payload))


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4), the only form Accord writes in JSON."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes:
    """Decode standard padded base64, refusing every other spelling (URL-safe, unpadded, non-zero pad bits).

    One byte string has exactly one accepted text, so changing any character of a signed JSON document
    changes the bytes it carries (spec section 8).
    """
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FrameError(Reason.MALFORMED, "invalid base64") from exc
    if base64.b64encode(data).decode("ascii") != text:
        raise FrameError(Reason.MALFORMED, "non-canonical base64")
    return data
