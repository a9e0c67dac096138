"""Sealing and opening protocol frames (spec sections 7 and 9).

``seal`` signs the exact msgpack bytes of one message. ``open_frame`` is the full receive path, in this order:
envelope shape and payload type; trust of ``key_id`` at ``now``; the signature over PAE(type, payload); only
then decoding of the payload; ``sender`` equal to the verified signer; the receiver's context (``Expect``);
freshness and replay. Every refusal is a typed :class:`SecurityError`, and a refused frame changes neither the
replay guard nor the trust store.

For frames a receiver may leave to connection-level authentication (see docs/VERIFICATION.md), ``peek``
decodes WITHOUT verifying the signature, and ``verify`` later checks one peeked frame (e.g. only the winning
bid). Given a trust store, ``peek`` still looks the key up before it decodes a byte of the payload, so a frame
from an unknown or revoked key costs an envelope parse and a dictionary lookup, never a payload decode. The
envelope parse does not copy the payload either (:func:`~accord.security.envelope.decode_envelope_view`): a
1 MiB frame from an unknown key costs what a small one does.

Both take the ``publisher`` the transport vouches for (the last token of the subject a frame arrived on, spec
4.1): a frame whose ``key_id`` is another party's is refused before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from accord.errors import LocalProtocolError, RemoteProtocolError
from accord.protocol.codec import decode, encode
from accord.protocol.digests import payload_digest
from accord.protocol.messages import AnyMessage, Message
from accord.security.certs import Certificate
from accord.security.envelope import (
    PAYLOAD_TYPE_FRAME,
    Envelope,
    decode_envelope_view,
    encode_envelope,
    sign_envelope,
    verify_signature,
)
from accord.security.errors import FrameError, Reason, ReplayError, SignatureError, TrustError
from accord.security.identity import Identity
from accord.security.replay import ReplayGuard
from accord.security.trust import TrustStore

__all__ = ["Expect", "Opened", "open_frame", "peek", "seal", "verify"]


@dataclass(frozen=True, slots=True)
class Expect:
    """The receiver's context a frame must belong to; None (or empty) fields are not checked.

    A mismatch raises ReplayError(context_mismatch): it is how a valid frame for task A, replayed into task B
    (or into attempt 2, or to another recipient), is refused even though its signature is good and its id new.
    """

    task_id: str | None = None
    """The message must carry this ``task_id``."""
    attempt: int | None = None
    """The message must carry this ``attempt`` (a Cancel with ``attempt=None`` covers every attempt)."""
    award_id: str | None = None
    """AwardAck, AwardReject and Result must answer this award."""
    recipient: str | None = None
    """Award's ``winner`` or Attestation's ``requester`` must be this agent (usually the receiver itself)."""
    sender: str | None = None
    """The message must come from this agent (e.g. a Result from the awardee)."""
    types: tuple[type[Message], ...] = ()
    """The message must be one of these types."""

    def check(self, message: AnyMessage) -> None:
        """Raise ReplayError(context_mismatch) unless ``message`` belongs to this context."""
        if self.types and not isinstance(message, self.types):
            _mismatch("type", type(message).__name__, "/".join(t.__name__ for t in self.types))
        if self.sender is not None and message.sender != self.sender:
            _mismatch("sender", message.sender, self.sender)
        if self.task_id is not None and getattr(message, "task_id", None) != self.task_id:
            _mismatch("task_id", getattr(message, "task_id", None), self.task_id)
        if self.attempt is not None:
            if not hasattr(message, "attempt"):
                _mismatch("attempt", None, self.attempt)
            attempt = getattr(message, "attempt", None)
            if attempt is not None and attempt != self.attempt:
                _mismatch("attempt", attempt, self.attempt)
        if self.award_id is not None and getattr(message, "award_id", None) != self.award_id:
            _mismatch("award_id", getattr(message, "award_id", None), self.award_id)
        if self.recipient is not None:
            recipient = getattr(message, "winner", None) or getattr(message, "requester", None)
            if recipient != self.recipient:
                _mismatch("recipient", recipient, self.recipient)


def _mismatch(what: str, got: object, expected: object) -> None:
    raise ReplayError(Reason.CONTEXT_MISMATCH, f"{what} {got!r}, expected {expected!r}")


class Opened(msgspec.Struct, frozen=True, gc=False):
    """A decoded frame. ``verified`` False means it came from :func:`peek` and nothing was checked.

    A Struct (never encoded) rather than a frozen dataclass: one is built for every frame received, and a frozen
    dataclass sets its seven fields through ``object.__setattr__`` (about 0.85 us against 0.1 us). ``gc=False``:
    it holds immutable values only (a message, bytes, a certificate) and can be part of no reference cycle."""

    message: AnyMessage
    payload: bytes
    """The exact payload bytes (their SHA-256 is the bid / award digest)."""
    signer: str
    """The verified signer's agent id; for a peeked frame, the unverified ``key_id`` claim."""
    certificate: Certificate | None
    """The certificate that made the signer trusted (None when peeked without a trust store)."""
    key_id: str
    sig: bytes
    verified: bool

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the payload bytes."""
        return payload_digest(self.payload)


def seal(message: Message, identity: Identity) -> bytes:
    """The signed frame bytes of ``message``, whose ``sender`` must be ``identity``'s id."""
    if message.sender != identity.id:
        raise LocalProtocolError(f"message sender {message.sender} is not the signing identity {identity.id}")
    return encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, encode(message), identity))


def open_frame(
    frame: bytes | bytearray | memoryview,
    trust: TrustStore,
    replay_guard: ReplayGuard | None,
    now_ns: int,
    *,
    expect: Expect | None = None,
    publisher: str | None = None,
) -> Opened:
    """Verify, decode and admit one frame, or raise a SecurityError with the reason.

    ``replay_guard=None`` skips freshness and replay checks (only for callers with their own, e.g. tests).
    ``publisher``: who the transport says published it (the subject's last token); another ``key_id`` is refused.
    """
    envelope, certificate = _trusted_envelope(frame, trust, now_ns, publisher)
    assert certificate is not None  # a trust store was given
    _check_signature(envelope, trust)
    message = _decode_payload(envelope.payload)
    return _admit(envelope, message, certificate, replay_guard, now_ns, expect)


def peek(
    frame: bytes | bytearray | memoryview,
    *,
    trust: TrustStore | None,
    now_ns: int = 0,
    expect: Expect | None = None,
    publisher: str | None = None,
) -> Opened:
    """Decode a frame WITHOUT verifying its signature or freshness.

    Only for frames a receiver does not act on alone and whose publisher the connection already authenticated
    (docs/VERIFICATION.md): anyone who can publish on the subject can forge a peeked frame. With ``trust`` (every
    receive path passes it) the key must hold a valid certificate at ``now_ns`` BEFORE the payload is decoded;
    ``trust=None`` is for tools that only inspect frames. The payload type, the publisher, the ``sender ==
    key_id`` consistency and ``expect`` are still checked (all cheap). Call :func:`verify` before acting on the
    frame; never record a peeked frame in a replay guard.
    """
    envelope, certificate = _trusted_envelope(frame, trust, now_ns, publisher)
    message = _decode_payload(envelope.payload)
    if message.sender != envelope.key_id:
        raise SignatureError(Reason.SENDER_MISMATCH, f"sender {message.sender} but key_id {envelope.key_id}")
    if expect is not None:
        expect.check(message)
    return Opened(message, envelope.payload, envelope.key_id, certificate, envelope.key_id, envelope.sig, False)


def verify(
    opened_or_frame: Opened | bytes | bytearray | memoryview,
    trust: TrustStore,
    now_ns: int,
    *,
    replay_guard: ReplayGuard | None = None,
    expect: Expect | None = None,
) -> Opened:
    """Fully verify a peeked frame (or raw frame bytes); returns a verified :class:`Opened`.

    Same checks as :func:`open_frame`; the replay guard is optional because a requester typically verifies
    only the winning bid, whose task and attempt ``expect`` already binds.
    """
    if not isinstance(opened_or_frame, Opened):
        return open_frame(opened_or_frame, trust, replay_guard, now_ns, expect=expect)
    peeked = opened_or_frame
    envelope = Envelope(
        v=1, payload_type=PAYLOAD_TYPE_FRAME, payload=peeked.payload, key_id=peeked.key_id, sig=peeked.sig
    )
    certificate = trust.check(envelope.key_id, now_ns)
    _check_signature(envelope, trust)
    # The message was decoded from exactly these payload bytes, so it need not be decoded again.
    return _admit(envelope, peeked.message, certificate, replay_guard, now_ns, expect)


def _trusted_envelope(
    frame: bytes | bytearray | memoryview, trust: TrustStore | None, now_ns: int, publisher: str | None
) -> tuple[Envelope, Certificate | None]:
    """Steps 1-3 of spec 7.5: the envelope's shape, its publisher, then the key's certificate, all before the
    payload is copied out of the frame (let alone decoded). ``trust=None`` (tools only) skips the key."""
    view = decode_envelope_view(frame, PAYLOAD_TYPE_FRAME)
    if publisher is not None and view.key_id != publisher:
        raise SignatureError(Reason.SENDER_MISMATCH, f"{view.key_id} published as {publisher}")
    certificate = trust.check(view.key_id, now_ns) if trust is not None else None
    return view.envelope(), certificate


def _check_signature(envelope: Envelope, trust: TrustStore) -> None:
    key = trust.public_key(envelope.key_id)
    if key is None:  # pragma: no cover - the store caches a key for every certificate it holds
        raise TrustError(Reason.UNKNOWN_KEY, f"no public key for {envelope.key_id}")
    verify_signature(key, PAYLOAD_TYPE_FRAME, envelope.payload, envelope.sig)


def _decode_payload(payload: bytes) -> AnyMessage:
    try:
        return decode(payload)
    except RemoteProtocolError as exc:
        raise FrameError(Reason.MALFORMED, f"payload: {exc.detail or exc.reason}") from exc


def _admit(
    envelope: Envelope,
    message: AnyMessage,
    certificate: Certificate,
    replay_guard: ReplayGuard | None,
    now_ns: int,
    expect: Expect | None,
) -> Opened:
    if message.sender != envelope.key_id:
        raise SignatureError(Reason.SENDER_MISMATCH, f"sender {message.sender} but signer {envelope.key_id}")
    if expect is not None:
        expect.check(message)
    if replay_guard is not None:
        replay_guard.admit(message.sender, message.id, message.ts, message.expires_ns, now_ns)
    return Opened(message, envelope.payload, envelope.key_id, certificate, envelope.key_id, envelope.sig, True)
