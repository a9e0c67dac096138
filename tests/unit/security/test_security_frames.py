"""Signed frames: seal / open_frame / peek / verify, context binding, and typed errors for every bad input."""

from __future__ import annotations

import random
import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.errors import LocalProtocolError
from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.messages import MAX_FRAME_BYTES, Advertise, Award, AwardAck, Bid, Cancel, ModelOffer, Tier
from accord.security import (
    PAYLOAD_TYPE_FRAME,
    Envelope,
    Expect,
    FrameError,
    Identity,
    Reason,
    ReplayError,
    ReplayGuard,
    SecurityError,
    SignatureError,
    TrustError,
    open_frame,
    pae,
    peek,
    seal,
    verify,
)
from accord.security.testing import Pki

S = 1_000_000_000
T0 = 1_767_225_600 * S
TASK = "7b" * 16
OTHER_TASK = "c3" * 16


@pytest.fixture
def pki() -> Pki:
    return Pki(random.Random(5))


def _id(rng: random.Random) -> str:
    return rng.randbytes(16).hex()


def _bid(sender: Identity, rng: random.Random, *, task_id: str = TASK, attempt: int = 1, ts: int = T0) -> Bid:
    return Bid(
        id=_id(rng),
        sender=sender.id,
        ts=ts,
        task_id=task_id,
        attempt=attempt,
        model="m",
        price_micros=10,
        est_latency_ms=100,
        quality=0.7,
        valid_until_ns=ts + S,
        tier=Tier.EDGE,
        region="eu",
    )


def _award(sender: Identity, winner: Identity, rng: random.Random) -> Award:
    return Award(
        id=_id(rng),
        sender=sender.id,
        ts=T0,
        task_id=TASK,
        attempt=1,
        winner=winner.id,
        bid_id=_id(rng),
        bid_digest="0" * 64,
        price_micros=5,
        ack_by_ns=T0 + S,
        lease_until_ns=T0 + 5 * S,
    )


def _advert(sender: Identity, rng: random.Random) -> Advertise:
    """A message of no task and no attempt."""
    return Advertise(
        id=_id(rng),
        sender=sender.id,
        ts=T0,
        name="x",
        tier=Tier.EDGE,
        region="eu",
        models=[ModelOffer(name="m", context_window=10, tokens_per_s=1.0)],
    )


def _envelope(frame: bytes) -> Envelope:
    return msgspec.msgpack.decode(frame, type=Envelope)


def test_seal_and_open_round_trip(pki: Pki) -> None:
    agent = pki.agent("alpha")
    bid = _bid(agent, pki.rng)
    frame = seal(bid, agent)
    env = _envelope(frame)
    assert env.v == 1 and env.payload_type == PAYLOAD_TYPE_FRAME and env.key_id == agent.id
    assert env.payload == encode(bid), "the payload is the exact message bytes"
    agent.public_key.verify(env.sig, pae(PAYLOAD_TYPE_FRAME, env.payload))
    opened = open_frame(frame, pki.trust, ReplayGuard(), T0)
    assert opened.message == bid and opened.signer == agent.id and opened.verified
    assert opened.certificate is not None and opened.certificate.name == "alpha"
    assert opened.digest == payload_digest(encode(bid))


def test_pae_is_dsse_v1() -> None:
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    assert pae("application/x", b"hello world") == b"DSSEv1 13 application/x 11 hello world"
    assert pae("é", b"\x00") == b"DSSEv1 2 \xc3\xa9 1 \x00"  # lengths count UTF-8 bytes


def test_seal_refuses_a_message_from_someone_else(pki: Pki) -> None:
    a, b = pki.agent(), pki.agent()
    with pytest.raises(LocalProtocolError, match=f"message sender {a.id} is not the signing identity {b.id}"):
        seal(_bid(a, pki.rng), b)


def test_peek_then_verify_only_the_winner(pki: Pki) -> None:
    agents = [pki.agent(f"a{i}") for i in range(5)]
    frames = [seal(_bid(a, pki.rng), a) for a in agents]
    frames[2] = frames[2][:-1] + bytes([frames[2][-1] ^ 1])  # a forged bid, cheap to peek
    peeked = [peek(f, trust=None, expect=Expect(task_id=TASK, attempt=1)) for f in frames]
    assert all(not p.verified and p.certificate is None for p in peeked)
    winner = peeked[0]  # say the market scored it best
    guard = ReplayGuard()
    verified = verify(winner, pki.trust, T0, replay_guard=guard, expect=Expect(task_id=TASK))
    assert verified.verified and verified.message == winner.message and verified.payload == winner.payload
    assert len(guard) == 1
    with pytest.raises(SignatureError) as info:
        verify(peeked[2], pki.trust, T0)
    assert info.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(ReplayError):
        verify(winner, pki.trust, T0, replay_guard=guard)


def test_verify_accepts_raw_frames(pki: Pki) -> None:
    agent = pki.agent()
    opened = verify(seal(_bid(agent, pki.rng), agent), pki.trust, T0)
    assert opened.verified and opened.signer == agent.id


@pytest.mark.parametrize("peeked", [False, True], ids=["raw", "peeked"])
def test_verify_applies_the_context_and_the_replay_guard(pki: Pki, peeked: bool) -> None:
    """Raw or peeked, verify checks the receiver's context and admits the frame to the guard it is given."""
    agent = pki.agent()
    frame = seal(_bid(agent, pki.rng), agent)
    given = peek(frame, trust=pki.trust) if peeked else frame
    with pytest.raises(ReplayError) as info:
        verify(given, pki.trust, T0, expect=Expect(task_id=OTHER_TASK))
    assert info.value.reason is Reason.CONTEXT_MISMATCH
    guard = ReplayGuard()
    verify(given, pki.trust, T0, replay_guard=guard, expect=Expect(task_id=TASK))
    with pytest.raises(ReplayError) as info:
        verify(given, pki.trust, T0, replay_guard=guard)
    assert info.value.reason is Reason.REPLAY


def test_peek_refuses_key_id_that_is_not_the_sender(pki: Pki) -> None:
    a, b = pki.agent(), pki.agent()
    payload = encode(_bid(a, pki.rng))
    env = Envelope(
        v=1,
        payload_type=PAYLOAD_TYPE_FRAME,
        payload=payload,
        key_id=b.id,
        sig=b.sign(pae(PAYLOAD_TYPE_FRAME, payload)),
    )
    frame = msgspec.msgpack.encode(env)
    for call, detail in (
        (lambda: peek(frame, trust=None), f"sender {a.id} but key_id {b.id}"),
        (lambda: open_frame(frame, pki.trust, None, T0), f"sender {a.id} but signer {b.id}"),
    ):
        with pytest.raises(SignatureError) as info:
            call()
        assert info.value.reason is Reason.SENDER_MISMATCH
        assert str(info.value).endswith(detail)


@pytest.mark.parametrize(
    ("expect", "ok"),
    [
        (Expect(task_id=TASK), True),
        (Expect(task_id=OTHER_TASK), False),
        (Expect(task_id=TASK, attempt=1), True),
        (Expect(task_id=TASK, attempt=2), False),
        (Expect(types=(Bid,)), True),
        (Expect(types=(Award, AwardAck)), False),
        (Expect(award_id="0" * 32), False),
        (Expect(recipient="U" + "A" * 55), False),
    ],
)
def test_context_binding(pki: Pki, expect: Expect, ok: bool) -> None:
    agent = pki.agent()
    frame = seal(_bid(agent, pki.rng), agent)
    guard = ReplayGuard()
    if ok:
        open_frame(frame, pki.trust, guard, T0, expect=expect)
        return
    with pytest.raises(ReplayError) as info:
        open_frame(frame, pki.trust, guard, T0, expect=expect)
    assert info.value.reason is Reason.CONTEXT_MISMATCH
    assert len(guard) == 0, "a frame out of context does not use up its id"


def test_context_recipient_sender_and_cancel_all_attempts(pki: Pki) -> None:
    requester, winner, other = pki.agent("req"), pki.agent("win"), pki.agent("other")
    award = seal(_award(requester, winner, pki.rng), requester)
    open_frame(award, pki.trust, None, T0, expect=Expect(recipient=winner.id, sender=requester.id))
    for expect in (Expect(recipient=other.id), Expect(sender=other.id)):
        with pytest.raises(ReplayError):
            open_frame(award, pki.trust, None, T0, expect=expect)
    cancel = Cancel(id=_id(pki.rng), sender=requester.id, ts=T0, task_id=TASK, attempt=None)
    open_frame(seal(cancel, requester), pki.trust, None, T0, expect=Expect(task_id=TASK, attempt=3))
    advert = _advert(other, pki.rng)
    with pytest.raises(ReplayError):  # no task at all is not this task
        open_frame(seal(advert, other), pki.trust, None, T0, expect=Expect(task_id=TASK, attempt=1))


def test_envelope_shape_errors(pki: Pki) -> None:
    agent = pki.agent()
    frame = seal(_bid(agent, pki.rng), agent)
    env = _envelope(frame)
    cases: list[tuple[bytes, Reason]] = [
        (msgspec.msgpack.encode(msgspec.structs.replace(env, v=2)), Reason.UNSUPPORTED_VERSION),
        (msgspec.msgpack.encode(msgspec.structs.replace(env, v=256)), Reason.UNSUPPORTED_VERSION),
        (msgspec.msgpack.encode(msgspec.structs.replace(env, v=-1)), Reason.UNSUPPORTED_VERSION),
        (msgspec.msgpack.encode(msgspec.structs.replace(env, sig=env.sig[:63])), Reason.MALFORMED),
        (msgspec.msgpack.encode(msgspec.structs.replace(env, key_id="x" * 65)), Reason.MALFORMED),
        (msgspec.msgpack.encode({"v": 1, "payload": b"x"}), Reason.MALFORMED),
        (b"\xc1", Reason.MALFORMED),
        (b"", Reason.MALFORMED),
        (b"\x00" * (MAX_FRAME_BYTES + 1), Reason.TOO_LARGE),
    ]
    for bad, reason in cases:
        with pytest.raises(FrameError) as info:
            open_frame(bad, pki.trust, None, T0)
        assert info.value.reason is reason, bad[:40]
    with pytest.raises(TrustError) as trust_info:  # key_id is only a hint: whatever it says is looked up
        open_frame(msgspec.msgpack.encode(msgspec.structs.replace(env, key_id="nope")), pki.trust, None, T0)
    assert trust_info.value.reason is Reason.UNKNOWN_KEY


def test_payload_that_is_signed_but_not_a_message(pki: Pki) -> None:
    """A trusted key signing garbage: verified, then refused as malformed (never an untyped error)."""
    agent = pki.agent()
    for payload in (b"\x81\xa4type\xa3bid", b"not msgpack", msgspec.msgpack.encode({"type": "nope"})):
        env = Envelope(
            v=1,
            payload_type=PAYLOAD_TYPE_FRAME,
            payload=payload,
            key_id=agent.id,
            sig=agent.sign(pae(PAYLOAD_TYPE_FRAME, payload)),
        )
        with pytest.raises(FrameError) as info:
            open_frame(msgspec.msgpack.encode(env), pki.trust, None, T0)
        assert info.value.reason is Reason.MALFORMED
        assert re.match(r"malformed: payload: \S", str(info.value)), str(info.value)  # says what did not decode


def test_untrusted_frames_are_refused_before_signature_work(pki: Pki) -> None:
    stranger = Identity.generate()
    frame = seal(_bid(stranger, pki.rng), stranger)
    with pytest.raises(TrustError) as info:
        open_frame(frame, pki.trust, ReplayGuard(), T0)
    assert info.value.reason is Reason.UNKNOWN_KEY


@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_ever_raise_security_errors(data: bytes) -> None:
    pki = _SHARED
    try:
        open_frame(data, pki.trust, ReplayGuard(), T0)
    except SecurityError:
        return
    raise AssertionError("random bytes were accepted")


@given(st.integers(0, 10_000), st.integers(0, 7))
def test_every_single_bit_flip_of_a_frame_is_refused(position: int, bit: int) -> None:
    """Any flipped bit is refused; one inside the signed payload always for its signature (verify before
    decode: the flip may well have made the payload undecodable, and that must not be what is reported)."""
    frame = bytearray(_SHARED_FRAME)
    at = position % len(frame)
    frame[at] ^= 1 << bit
    with pytest.raises(SecurityError) as info:
        open_frame(bytes(frame), _SHARED.trust, ReplayGuard(), T0)
    if _PAYLOAD_AT <= at < _PAYLOAD_AT + len(_SHARED_PAYLOAD):
        assert info.value.reason is Reason.BAD_SIGNATURE, info.value


@given(st.binary(max_size=400), st.binary(min_size=64, max_size=64))
def test_any_bad_signature_over_any_payload_is_refused_before_decoding(payload: bytes, sig: bytes) -> None:
    """A trusted key id, any payload bytes (almost never a message), a signature that does not verify: refused
    with ``bad_signature``, whatever the payload is; decoding it first would report ``malformed``."""
    env = Envelope(v=1, payload_type=PAYLOAD_TYPE_FRAME, payload=payload, key_id=_SHARED_AGENT.id, sig=sig)
    with pytest.raises(SignatureError) as info:
        open_frame(msgspec.msgpack.encode(env), _SHARED.trust, ReplayGuard(), T0)
    assert info.value.reason is Reason.BAD_SIGNATURE


_SHARED = Pki(random.Random(11))
_SHARED_AGENT = _SHARED.agent()
_SHARED_BID = _bid(_SHARED_AGENT, random.Random(1))
_SHARED_FRAME = seal(_SHARED_BID, _SHARED_AGENT)
_SHARED_PAYLOAD = encode(_SHARED_BID)
_PAYLOAD_AT = _SHARED_FRAME.index(_SHARED_PAYLOAD)


def test_a_frame_on_someone_elses_subject_is_refused_by_open_and_by_peek(pki: Pki) -> None:
    """Spec 4.1: the subject's last token names the publisher; a good frame of A's published as B is refused."""
    a, b = pki.agent("a"), pki.agent("b")
    frame = seal(_bid(a, pki.rng), a)
    for call in (
        lambda: open_frame(frame, pki.trust, ReplayGuard(), T0, publisher=b.id),
        lambda: peek(frame, trust=pki.trust, now_ns=T0, publisher=b.id),
    ):
        with pytest.raises(SignatureError) as info:
            call()
        assert info.value.reason is Reason.SENDER_MISMATCH
        assert str(info.value).endswith(f"{a.id} published as {b.id}")
    assert open_frame(frame, pki.trust, None, T0, publisher=a.id).signer == a.id
    assert peek(frame, trust=pki.trust, now_ns=T0, publisher=a.id).key_id == a.id


def test_a_peek_with_a_trust_store_carries_the_keys_certificate(pki: Pki) -> None:
    agent = pki.agent("peeked")
    peeked = peek(seal(_bid(agent, pki.rng), agent), trust=pki.trust, now_ns=T0)
    assert not peeked.verified
    assert peeked.certificate is not None and peeked.certificate.name == "peeked"  # what the market reads


@pytest.mark.parametrize(
    ("expect", "detail"),
    [
        (Expect(types=(Award, AwardAck)), "type 'Bid', expected 'Award/AwardAck'"),
        (Expect(sender="U" + "A" * 55), "sender '{sender}', expected 'U" + "A" * 55 + "'"),
        (Expect(task_id=OTHER_TASK), f"task_id '{TASK}', expected '{OTHER_TASK}'"),
        (Expect(attempt=2), "attempt 1, expected 2"),
        (Expect(award_id="0" * 32), "award_id None, expected '" + "0" * 32 + "'"),
        (Expect(recipient="U" + "A" * 55), "recipient None, expected 'U" + "A" * 55 + "'"),
    ],
    ids=["type", "sender", "task_id", "attempt", "award_id", "recipient"],
)
def test_a_context_mismatch_says_which_field_and_both_values(pki: Pki, expect: Expect, detail: str) -> None:
    agent = pki.agent()
    with pytest.raises(ReplayError) as info:
        open_frame(seal(_bid(agent, pki.rng), agent), pki.trust, None, T0, expect=expect)
    assert info.value.reason is Reason.CONTEXT_MISMATCH
    assert str(info.value).endswith(detail.format(sender=agent.id))


def test_a_context_that_wants_an_attempt_refuses_a_message_without_one(pki: Pki) -> None:
    requester = pki.agent("req")
    advert = _advert(requester, pki.rng)
    with pytest.raises(ReplayError) as info:
        open_frame(seal(advert, requester), pki.trust, None, T0, expect=Expect(attempt=1))
    assert str(info.value).endswith("attempt None, expected 1")


def test_an_answer_to_another_award_or_an_award_for_another_agent_says_whose(pki: Pki) -> None:
    requester, winner, other = pki.agent("req"), pki.agent("win"), pki.agent("other")
    ack = AwardAck(id=_id(pki.rng), sender=winner.id, ts=T0, task_id=TASK, attempt=1, award_id="a1" * 16)
    with pytest.raises(ReplayError) as info:
        open_frame(seal(ack, winner), pki.trust, None, T0, expect=Expect(award_id="b2" * 16))
    assert str(info.value).endswith(f"award_id '{'a1' * 16}', expected '{'b2' * 16}'")
    award = seal(_award(requester, winner, pki.rng), requester)
    with pytest.raises(ReplayError) as info:
        open_frame(award, pki.trust, None, T0, expect=Expect(recipient=other.id))
    assert str(info.value).endswith(f"recipient '{winner.id}', expected '{other.id}'")
