"""Attestations: DSSE + in-toto Statement v1 round trip, exact structure, and tampering of every kind."""

from __future__ import annotations

import base64
import hashlib
import json
import random

import msgspec
import pytest

from accord.errors import LocalProtocolError
from accord.protocol.codec import encode
from accord.protocol.digests import output_digest, payload_digest
from accord.protocol.messages import Attestation, Award, Result, Timings, Usage
from accord.security import (
    INTOTO_PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    Expect,
    FrameError,
    Identity,
    Opened,
    Reason,
    ReplayError,
    SecurityError,
    SignatureError,
    TrustError,
    attest,
    open_frame,
    pae,
    peek,
    seal,
    verify_attestation,
    verify_result_attestation,
)
from accord.security.testing import Pki

S = 1_000_000_000
T0 = 1_767_225_600 * S
OUTPUT = "The data remains within the EU. ✓"


@pytest.fixture
def pki() -> Pki:
    return Pki(random.Random(9))


def _statement(agent: Identity, requester: Identity, output: str = OUTPUT) -> Attestation:
    return Attestation(
        id="ab" * 16,
        sender=agent.id,
        ts=T0,
        task_id="cd" * 16,
        attempt=2,
        agent=agent.id,
        requester=requester.id,
        prompt_digest="1" * 64,
        award_digest="2" * 64,
        output_digest=output_digest(output),
        model="llama-3.1-8b",
        backend="llamacpp",
        usage=Usage(input_tokens=12, output_tokens=34),
        timings=Timings(queued_ms=1, ttft_ms=20, total_ms=300),
    )


def _resign(doc: dict[str, object], statement: dict[str, object], signer: Identity) -> bytes:
    payload = json.dumps(statement).encode()
    doc = {**doc, "payload": base64.b64encode(payload).decode()}
    sig = signer.sign(pae(str(doc["payloadType"]), payload))
    doc["signatures"] = [{"keyid": signer.id, "sig": base64.b64encode(sig).decode()}]
    return json.dumps(doc).encode()


def test_round_trip_and_exact_structure(pki: Pki) -> None:
    agent, requester = pki.agent("alpha"), pki.agent("req")
    statement = _statement(agent, requester)
    envelope = attest(statement, agent)
    doc = json.loads(envelope)
    assert set(doc) == {"payload", "payloadType", "signatures"} and doc["payloadType"] == INTOTO_PAYLOAD_TYPE
    payload = base64.b64decode(doc["payload"])
    inner = json.loads(payload)
    assert inner["_type"] == STATEMENT_TYPE and inner["predicateType"] == PREDICATE_TYPE
    assert inner["subject"] == [
        {"name": "accord-output", "digest": {"sha256": hashlib.sha256(OUTPUT.encode()).hexdigest()}}
    ]
    assert inner["predicate"]["task_id"] == "cd" * 16 and inner["predicate"]["usage"]["output_tokens"] == 34
    assert payload == json.dumps(inner, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    [sig] = doc["signatures"]
    assert sig["keyid"] == agent.id
    agent.public_key.verify(base64.b64decode(sig["sig"]), pae(INTOTO_PAYLOAD_TYPE, payload))

    verified = verify_attestation(envelope, pki.trust, T0, output=OUTPUT)
    assert verified.statement == statement and verified.signer == agent.id and verified.output_checked
    assert verified.certificate.name == "alpha" and verified.payload == payload
    assert verify_attestation(envelope.decode(), pki.trust, T0, output=OUTPUT.encode()).output_checked
    assert not verify_attestation(envelope, pki.trust, T0).output_checked


def test_output_and_context_are_checked(pki: Pki) -> None:
    agent, requester, other = pki.agent(), pki.agent(), pki.agent()
    envelope = attest(_statement(agent, requester), agent)
    with pytest.raises(SignatureError) as info:
        verify_attestation(envelope, pki.trust, T0, output=OUTPUT + " ")
    assert info.value.reason is Reason.OUTPUT_MISMATCH
    verify_attestation(
        envelope, pki.trust, T0, expect=Expect(task_id="cd" * 16, attempt=2, recipient=requester.id)
    )
    with pytest.raises(ReplayError) as r:
        verify_attestation(envelope, pki.trust, T0, expect=Expect(recipient=other.id))
    assert r.value.reason is Reason.CONTEXT_MISMATCH


def test_attest_refuses_to_sign_for_someone_else(pki: Pki) -> None:
    agent, other = pki.agent(), pki.agent()
    with pytest.raises(LocalProtocolError):
        attest(_statement(agent, other), other)


def test_trust_is_checked(pki: Pki) -> None:
    stranger = Identity.generate()
    envelope = attest(_statement(stranger, stranger), stranger)
    with pytest.raises(TrustError) as info:
        verify_attestation(envelope, pki.trust, T0)
    assert info.value.reason is Reason.UNKNOWN_KEY
    agent = pki.agent(not_after_ns=T0)
    envelope = attest(_statement(agent, agent), agent)
    verify_attestation(envelope, pki.trust, T0)
    with pytest.raises(TrustError) as info:
        verify_attestation(envelope, pki.trust, T0 + 1)
    assert info.value.reason is Reason.CERT_EXPIRED


def test_tampering(pki: Pki) -> None:
    agent, requester, other = pki.agent(), pki.agent(), pki.agent()
    envelope = attest(_statement(agent, requester), agent)
    doc = json.loads(envelope)
    statement = json.loads(base64.b64decode(doc["payload"]))

    def with_(**changes: object) -> bytes:
        return json.dumps({**doc, **changes}).encode()

    urlsafe_sig = doc["signatures"][0]["sig"].replace("+", "-").replace("/", "_")
    assert urlsafe_sig != doc["signatures"][0]["sig"]
    swapped_output = {**statement, "subject": [{"name": "accord-output", "digest": {"sha256": "f" * 64}}]}
    cases: list[tuple[bytes, type[SecurityError], Reason]] = [
        # The agent's own signature over edited content is the attack surface.
        (
            with_(payload=base64.b64encode(json.dumps(swapped_output).encode()).decode()),
            SignatureError,
            Reason.BAD_SIGNATURE,
        ),
        (with_(payloadType="application/json"), FrameError, Reason.WRONG_PAYLOAD_TYPE),
        (
            with_(signatures=[{"keyid": other.id, "sig": doc["signatures"][0]["sig"]}]),
            SignatureError,
            Reason.BAD_SIGNATURE,
        ),
        (with_(signatures=[]), FrameError, Reason.MALFORMED),
        (with_(payload=doc["payload"].rstrip("=")), FrameError, Reason.MALFORMED),
        (with_(signatures=[{"keyid": agent.id, "sig": urlsafe_sig}]), FrameError, Reason.MALFORMED),
        (envelope[:-2], FrameError, Reason.MALFORMED),
        (b"x" * (64 * 1024 + 1), FrameError, Reason.TOO_LARGE),
        # Validly signed by a trusted key, but not a valid Accord attestation.
        (_resign(doc, swapped_output, agent), SignatureError, Reason.OUTPUT_MISMATCH),
        (
            _resign(doc, {**statement, "predicateType": "https://slsa.dev/provenance/v1"}, agent),
            FrameError,
            Reason.WRONG_PAYLOAD_TYPE,
        ),
        (
            _resign(doc, {**statement, "_type": "https://in-toto.io/Statement/v0.1"}, agent),
            FrameError,
            Reason.WRONG_PAYLOAD_TYPE,
        ),
        (_resign(doc, statement, other), SignatureError, Reason.SENDER_MISMATCH),  # other signs agent's claim
        (
            _resign(doc, {**statement, "subject": statement["subject"] * 2}, agent),
            SignatureError,
            Reason.OUTPUT_MISMATCH,
        ),
        (_resign(doc, {**statement, "predicate": {"task_id": 1}}, agent), FrameError, Reason.MALFORMED),
        # The predicate is a v1 Attestation message (spec 8.3 step 3): its tag, its version and its bounds.
        *(
            (_resign(doc, {**statement, "predicate": predicate}, agent), FrameError, Reason.MALFORMED)
            for predicate in (
                {k: v for k, v in statement["predicate"].items() if k != "type"},
                {**statement["predicate"], "type": "bid"},
                {**statement["predicate"], "v": 2},
                {**statement["predicate"], "attempt": 0},
            )
        ),
    ]
    for bad, error, reason in cases:
        with pytest.raises(SecurityError) as info:
            verify_attestation(bad, pki.trust, T0)
        assert type(info.value) is error and info.value.reason is reason, (reason, info.value)


def test_a_second_valid_signature_is_enough(pki: Pki) -> None:
    agent, requester = pki.agent(), pki.agent()
    doc = json.loads(attest(_statement(agent, requester), agent))
    junk = {"keyid": Identity.generate().id, "sig": base64.b64encode(b"\x00" * 64).decode()}
    doc["signatures"] = [junk, *doc["signatures"]]
    assert verify_attestation(json.dumps(doc).encode(), pki.trust, T0).signer == agent.id


def test_non_canonical_base64_is_refused(pki: Pki) -> None:
    """'YR==' and 'YQ==' both decode to b'a' in lenient decoders: only the canonical spelling is accepted."""
    agent, requester = pki.agent(), pki.agent()
    doc = json.loads(attest(_statement(agent, requester), agent))
    sig = doc["signatures"][0]["sig"]
    assert sig.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3])
    lenient_twin = sig[:-3] + alphabet[last ^ 1] + "=="  # differs only in the unused low bits
    assert base64.b64decode(lenient_twin) == base64.b64decode(sig)
    doc["signatures"][0]["sig"] = lenient_twin
    with pytest.raises(FrameError) as info:
        verify_attestation(json.dumps(doc).encode(), pki.trust, T0)
    assert info.value.reason is Reason.MALFORMED


def test_statement_decodes_with_a_plain_json_parser(pki: Pki) -> None:
    """What another language needs: base64-decode the payload, parse JSON, check fields (no msgspec)."""
    agent, requester = pki.agent(), pki.agent()
    doc = json.loads(attest(_statement(agent, requester), agent))
    statement = msgspec.json.decode(base64.b64decode(doc["payload"]))
    assert statement["predicate"]["agent"] == agent.id == doc["signatures"][0]["keyid"]


def test_result_and_its_attestation_must_agree(pki: Pki) -> None:
    agent, requester, other = pki.agent("alpha"), pki.agent("req"), pki.agent("other")
    award = Award(
        id="ee" * 16,
        sender=requester.id,
        ts=T0,
        task_id="cd" * 16,
        attempt=2,
        winner=agent.id,
        bid_id="ff" * 16,
        bid_digest="0" * 64,
        price_micros=5,
        ack_by_ns=T0 + S,
        lease_until_ns=T0 + 9 * S,
    )
    award_payload = encode(award)
    statement = msgspec.structs.replace(_statement(agent, requester), award_digest=payload_digest(award_payload))

    def result(attestation: bytes, output: str = OUTPUT, signer: Identity = agent) -> Opened:
        message = Result(
            id="12" * 16,
            sender=signer.id,
            ts=T0,
            task_id="cd" * 16,
            attempt=2,
            award_id=award.id,
            model="llama-3.1-8b",
            output=output,
            attestation=attestation,
        )
        return open_frame(seal(message, signer), pki.trust, None, T0)

    good = attest(statement, agent)
    verified = verify_result_attestation(
        result(good), pki.trust, T0, requester=requester.id, award_payload=award_payload
    )
    assert verified.output_checked and verified.signer == agent.id
    cases: list[tuple[Opened, str | None, bytes | None, Reason]] = [
        (result(good, output=OUTPUT + "!"), None, None, Reason.OUTPUT_MISMATCH),
        (result(good, signer=other), None, None, Reason.CONTEXT_MISMATCH),  # someone else's attestation
        (result(good), other.id, None, Reason.CONTEXT_MISMATCH),  # made for another requester
        (result(good), None, award_payload + b"x", Reason.CONTEXT_MISMATCH),  # for another award
        (result(b""), None, None, Reason.MALFORMED),
    ]
    for opened, req, payload, reason in cases:
        with pytest.raises(SecurityError) as info:
            verify_result_attestation(opened, pki.trust, T0, requester=req, award_payload=payload)
        assert info.value.reason is reason
    with pytest.raises(LocalProtocolError):
        verify_result_attestation(peek(seal(result(good).message, agent), trust=None), pki.trust, T0)
