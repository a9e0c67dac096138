"""Attestations (spec section 8): a DSSE JSON envelope over an in-toto Statement v1.

The statement's subject is the SHA-256 of the result's output; its predicate is the
:class:`accord.protocol.messages.Attestation` message in Accord's JSON form. Standard DSSE / in-toto tooling can
parse and verify it given the agent's Ed25519 public key (the nkey id decodes to the 32 raw key bytes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec
from msgspec import Meta, field

from accord.errors import LocalProtocolError, RemoteProtocolError
from accord.protocol.codec import decode_json
from accord.protocol.digests import payload_digest
from accord.protocol.messages import Attestation, Result
from accord.security.certs import Certificate
from accord.security.envelope import b64decode_strict, b64encode, pae, verify_signature
from accord.security.errors import FrameError, Reason, ReplayError, SecurityError, SignatureError, TrustError
from accord.security.frames import Expect, Opened
from accord.security.identity import Identity
from accord.security.trust import TrustStore

__all__ = [
    "INTOTO_PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "SUBJECT_NAME",
    "VerifiedAttestation",
    "attest",
    "verify_attestation",
    "verify_result_attestation",
]

INTOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "urn:accord:attestation:v1"
SUBJECT_NAME: Final = "accord-output"
MAX_ATTESTATION_BYTES: Final = 64 * 1024
"""Result.attestation's bound; a larger envelope is refused before parsing."""


class _Signature(msgspec.Struct, frozen=True, kw_only=True):
    keyid: Annotated[str, Meta(max_length=128)]
    sig: Annotated[str, Meta(max_length=256)]


class _Dsse(msgspec.Struct, frozen=True, kw_only=True):
    payload: str
    payload_type: Annotated[str, Meta(max_length=128)] = field(name="payloadType")
    signatures: Annotated[list[_Signature], Meta(min_length=1, max_length=8)]


class _Subject(msgspec.Struct, frozen=True, kw_only=True):
    name: Annotated[str, Meta(max_length=256)] = ""
    digest: Annotated[dict[str, str], Meta(max_length=8)]


class _Statement(msgspec.Struct, frozen=True, kw_only=True):
    type_: str = field(name="_type")
    subject: Annotated[list[_Subject], Meta(min_length=1, max_length=16)]
    predicate_type: str = field(name="predicateType")
    predicate: msgspec.Raw
    """Decoded only once ``predicate_type`` is known, as a message (spec 2.6 in JSON form: tag, bounds, ``v``)."""


_json: Final = msgspec.json.Encoder(order="sorted")
_dsse_decoder: Final = msgspec.json.Decoder(_Dsse)
_statement_decoder: Final = msgspec.json.Decoder(_Statement)


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    """Who produced what: the verified statement of one result."""

    statement: Attestation
    signer: str
    certificate: Certificate
    output_digest: str
    output_checked: bool
    """True when the caller supplied the output and its digest matched the subject."""
    payload: bytes
    """The exact statement bytes that were signed."""


def attest(statement: Attestation, identity: Identity) -> bytes:
    """The DSSE envelope (compact JSON bytes) of ``statement``, signed by the agent it names."""
    if statement.agent != identity.id or statement.sender != identity.id:
        raise LocalProtocolError(f"an attestation by {identity.id} must name it as agent and sender")
    payload = _json.encode(
        _Statement(
            type_=STATEMENT_TYPE,
            subject=[_Subject(name=SUBJECT_NAME, digest={"sha256": statement.output_digest})],
            predicate_type=PREDICATE_TYPE,
            predicate=msgspec.Raw(_json.encode(statement)),
        )
    )
    sig = identity.sign(pae(INTOTO_PAYLOAD_TYPE, payload))
    envelope = _Dsse(
        payload=b64encode(payload),
        payload_type=INTOTO_PAYLOAD_TYPE,
        signatures=[_Signature(keyid=identity.id, sig=b64encode(sig))],
    )
    return _json.encode(envelope)


def verify_attestation(
    envelope: bytes | str,
    trust: TrustStore,
    now_ns: int,
    *,
    output: str | bytes | None = None,
    expect: Expect | None = None,
) -> VerifiedAttestation:
    """Verify an attestation envelope; with ``output``, also that it attests exactly that output.

    Order: envelope shape and payload type; a signature by a key trusted at ``now_ns`` (the first listed
    signature that verifies counts); only then the statement is parsed and checked (statement and predicate
    types; the predicate decoded as a v1 Attestation message with its bounds; one ``accord-output`` subject equal
    to the predicate's ``output_digest``; predicate ``agent`` and ``sender`` equal to the signer); then ``expect``
    and ``output``.
    """
    if len(envelope) > MAX_ATTESTATION_BYTES:
        raise FrameError(Reason.TOO_LARGE, f"attestation larger than {MAX_ATTESTATION_BYTES} bytes")
    try:
        dsse = _dsse_decoder.decode(envelope)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FrameError(Reason.MALFORMED, f"attestation envelope: {exc}") from exc
    if dsse.payload_type != INTOTO_PAYLOAD_TYPE:
        raise FrameError(Reason.WRONG_PAYLOAD_TYPE, f"{dsse.payload_type!r}, expected {INTOTO_PAYLOAD_TYPE!r}")
    payload = b64decode_strict(dsse.payload)
    signer, certificate = _first_valid_signature(dsse.signatures, payload, trust, now_ns)

    try:
        statement = _statement_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FrameError(Reason.MALFORMED, f"statement: {exc}") from exc
    if statement.type_ != STATEMENT_TYPE or statement.predicate_type != PREDICATE_TYPE:
        raise FrameError(
            Reason.WRONG_PAYLOAD_TYPE, f"statement {statement.type_!r} with predicate {statement.predicate_type!r}"
        )
    predicate = _predicate(statement.predicate)
    digests = [s.digest.get("sha256") for s in statement.subject if s.name == SUBJECT_NAME]
    if len(statement.subject) != 1 or digests != [predicate.output_digest]:
        raise SignatureError(Reason.OUTPUT_MISMATCH, "the subject is not the predicate's output digest")
    if predicate.agent != signer or predicate.sender != signer:
        raise SignatureError(
            Reason.SENDER_MISMATCH, f"statement names agent {predicate.agent}, signed by {signer}"
        )
    if expect is not None:
        expect.check(predicate)
    checked = False
    if output is not None:
        data = output.encode("utf-8") if isinstance(output, str) else output
        if hashlib.sha256(data).hexdigest() != predicate.output_digest:
            raise SignatureError(Reason.OUTPUT_MISMATCH, "the output's SHA-256 is not the attested digest")
        checked = True
    return VerifiedAttestation(predicate, signer, certificate, predicate.output_digest, checked, payload)


def _predicate(raw: msgspec.Raw) -> Attestation:
    """The statement's predicate as a valid v1 Attestation message, or FrameError(malformed)."""
    try:
        message = decode_json(bytes(raw))
    except RemoteProtocolError as exc:
        raise FrameError(Reason.MALFORMED, f"predicate: {exc.reason}: {exc.detail}") from exc
    if not isinstance(message, Attestation):
        raise FrameError(Reason.MALFORMED, f"the predicate is a {type(message).__name__}, not an Attestation")
    return message


def verify_result_attestation(
    result: Opened,
    trust: TrustStore,
    now_ns: int,
    *,
    requester: str | None = None,
    award_payload: bytes | None = None,
) -> VerifiedAttestation:
    """Check a verified Result's attestation against the Result itself (spec 8.3, last paragraph).

    The attestation must verify, be signed by the Result's signer, attest exactly ``result.output`` for the
    same task and attempt, name ``requester`` (when given) and, when the Award payload the requester sent is
    given, carry its SHA-256 as ``award_digest``.
    """
    message = result.message
    if not result.verified or not isinstance(message, Result):
        raise LocalProtocolError("verify_result_attestation needs a verified Result (open_frame or verify first)")
    expect = Expect(task_id=message.task_id, attempt=message.attempt, sender=result.signer, recipient=requester)
    verified = verify_attestation(message.attestation, trust, now_ns, output=message.output, expect=expect)
    if award_payload is not None and verified.statement.award_digest != payload_digest(award_payload):
        raise ReplayError(Reason.CONTEXT_MISMATCH, "the attestation's award_digest is not the award sent")
    return verified


def _first_valid_signature(
    signatures: list[_Signature], payload: bytes, trust: TrustStore, now_ns: int
) -> tuple[str, Certificate]:
    first_error: SecurityError | None = None
    for entry in signatures:
        try:
            sig = b64decode_strict(entry.sig)
            if len(sig) != 64:
                raise FrameError(Reason.MALFORMED, "an Ed25519 signature is 64 bytes")
            certificate = trust.check(entry.keyid, now_ns)
            key = trust.public_key(entry.keyid)
            if key is None:  # pragma: no cover - the store caches a key for every certificate it holds
                raise TrustError(Reason.UNKNOWN_KEY, f"no public key for {entry.keyid}")
            verify_signature(key, INTOTO_PAYLOAD_TYPE, payload, sig)
        except SecurityError as exc:
            first_error = first_error or exc
            continue
        return entry.keyid, certificate
    assert first_error is not None  # signatures has min_length=1
    raise first_error
