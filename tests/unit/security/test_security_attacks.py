"""The attack suite (issue 3 acceptance): >= 10^4 generated hostile frames, 100% refused with the expected reason
and no state change in the receiver; the honest frames of the same run are 100% accepted.

Each class below builds frames that differ from an honest one in exactly the way the class names, so the
expected reason is known. The receiver is one trust store and one replay guard, as a requester would hold.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import pytest

from accord.protocol.codec import encode
from accord.protocol.messages import (
    AwardAck,
    Bid,
    Failure,
    Message,
    Progress,
    Result,
    Tier,
)
from accord.security import (
    INTOTO_PAYLOAD_TYPE,
    PAYLOAD_TYPE_CERT,
    PAYLOAD_TYPE_FRAME,
    PAYLOAD_TYPE_REVOCATIONS,
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
    seal,
)
from accord.security.testing import Pki

PER_CLASS = 700
HONEST = 1_500
_MS = 1_000_000
_S = 1_000 * _MS
T0 = 1_767_225_600 * _S

_envelope_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)


def _hex(rng: random.Random) -> str:
    return rng.randbytes(16).hex()


@dataclass
class World:
    rng: random.Random
    pki: Pki
    honest: list[Identity]
    other_trusted: Identity
    outsider: Identity
    revoked_serial: Identity
    revoked_key: Identity
    expired: Identity
    not_yet_valid: Identity
    task_id: str
    award_id: str
    guard: ReplayGuard
    now: int

    @property
    def expect(self) -> Expect:
        return Expect(task_id=self.task_id, attempt=1)

    def tick(self) -> int:
        self.now += self.rng.randrange(1, 3 * _MS)
        return self.now

    def message(
        self, sender: str, *, task_id: str | None = None, attempt: int = 1, **header: int | None
    ) -> Message:
        """A random task-bound message of a random type, fresh id, ts a little before now."""
        rng = self.rng
        fields: dict[str, object] = {
            "id": _hex(rng),
            "sender": sender,
            "ts": self.now - rng.randrange(0, 2_000 * _MS),
            "expires_ns": rng.choice([None, self.now + rng.randrange(1, 30 * _S)]),
            "task_id": task_id or self.task_id,
            "attempt": attempt,
        }
        fields.update(header)
        kind = rng.choice([Bid, AwardAck, Result, Progress, Failure])
        if kind is Bid:
            extra: dict[str, object] = {
                "model": "m-1",
                "price_micros": rng.randrange(0, 10**6),
                "est_latency_ms": rng.randrange(0, 10**4),
                "quality": rng.random(),
                "valid_until_ns": self.now + _S,
                "tier": rng.choice(list(Tier)),
                "region": "eu-central",
            }
        elif kind is AwardAck:
            extra = {"award_id": self.award_id}
        elif kind is Result:
            extra = {"award_id": self.award_id, "model": "m-1", "output": "answer " * rng.randrange(1, 50)}
        elif kind is Progress:
            extra = {"seq": rng.randrange(0, 100), "delta": "tok"}
        else:
            extra = {"reason": "backend_error"}
        message: Message = msgspec.convert({**fields, **extra}, kind)
        return message


def _world() -> World:
    rng = random.Random(20260101)
    pki = Pki(rng)
    year = 365 * 24 * 3600 * _S
    honest = [pki.agent(f"honest-{i}", not_before_ns=T0 - year, not_after_ns=T0 + year) for i in range(4)]
    other = pki.agent("other", not_before_ns=T0 - year, not_after_ns=T0 + year)
    revoked_serial = pki.agent("revoked-serial")
    revoked_key = pki.agent("revoked-key")
    serial = pki.trust.check(revoked_serial.id, T0).serial
    pki.revoke(serials=[serial], agents=[revoked_key.id], now_ns=T0)
    expired = pki.agent("expired", not_before_ns=T0 - year, not_after_ns=T0 - 1)
    not_yet = pki.agent("not-yet", not_before_ns=T0 + year, not_after_ns=T0 + 2 * year)
    outsider = Identity.from_private_bytes(rng.randbytes(32))
    guard = ReplayGuard(max_age_ms=60_000, max_skew_ms=5_000, max_ids_per_sender=100_000, max_senders=64)
    return World(
        rng,
        pki,
        honest,
        other,
        outsider,
        revoked_serial,
        revoked_key,
        expired,
        not_yet,
        _hex(rng),
        _hex(rng),
        guard,
        T0,
    )


def _reenvelope(frame: bytes, **changes: object) -> bytes:
    envelope = _envelope_decoder.decode(frame)
    return _envelope_encoder.encode(msgspec.structs.replace(envelope, **changes))


def _flip_bit(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    i = rng.randrange(len(out))
    out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _sign_raw(identity: Identity, key_id: str, payload_type: str, payload: bytes) -> bytes:
    envelope = Envelope(
        v=1,
        payload_type=payload_type,
        payload=payload,
        key_id=key_id,
        sig=identity.sign(pae(payload_type, payload)),
    )
    return _envelope_encoder.encode(envelope)


# --- the attack classes: each returns (frame, expect, expected error type, expected reason) ------------------
Attack = tuple[bytes, Expect, type[SecurityError], Reason]


def sig_bitflip(w: World) -> Attack:
    sender = w.rng.choice(w.honest)
    frame = seal(w.message(sender.id), sender)
    envelope = _envelope_decoder.decode(frame)
    return _reenvelope(frame, sig=_flip_bit(envelope.sig, w.rng)), w.expect, SignatureError, Reason.BAD_SIGNATURE


def payload_bitflip(w: World) -> Attack:
    sender = w.rng.choice(w.honest)
    frame = seal(w.message(sender.id), sender)
    envelope = _envelope_decoder.decode(frame)
    flipped = _flip_bit(envelope.payload, w.rng)
    return _reenvelope(frame, payload=flipped), w.expect, SignatureError, Reason.BAD_SIGNATURE


def wrong_key(w: World) -> Attack:
    victim = w.rng.choice(w.honest)
    payload = encode(w.message(victim.id))
    frame = _sign_raw(w.other_trusted, victim.id, PAYLOAD_TYPE_FRAME, payload)  # claims victim's key id
    return frame, w.expect, SignatureError, Reason.BAD_SIGNATURE


def impersonation(w: World) -> Attack:
    victim = w.rng.choice(w.honest)
    payload = encode(w.message(victim.id))
    frame = _sign_raw(w.other_trusted, w.other_trusted.id, PAYLOAD_TYPE_FRAME, payload)  # own key, victim sender
    return frame, w.expect, SignatureError, Reason.SENDER_MISMATCH


def unknown_key(w: World) -> Attack:
    return seal(w.message(w.outsider.id), w.outsider), w.expect, TrustError, Reason.UNKNOWN_KEY


def revoked_key(w: World) -> Attack:
    who = w.rng.choice([w.revoked_serial, w.revoked_key])
    return seal(w.message(who.id), who), w.expect, TrustError, Reason.REVOKED


def cert_expired(w: World) -> Attack:
    return seal(w.message(w.expired.id), w.expired), w.expect, TrustError, Reason.CERT_EXPIRED


def cert_not_yet_valid(w: World) -> Attack:
    frame = seal(w.message(w.not_yet_valid.id), w.not_yet_valid)
    return frame, w.expect, TrustError, Reason.CERT_NOT_YET_VALID


def stale(w: World) -> Attack:
    sender = w.rng.choice(w.honest)
    ts = w.now - 60 * _S - w.rng.randrange(1, 3600 * _S)
    return seal(w.message(sender.id, ts=ts, expires_ns=None), sender), w.expect, ReplayError, Reason.STALE


def future(w: World) -> Attack:
    sender = w.rng.choice(w.honest)
    ts = w.now + 5 * _S + w.rng.randrange(1, 3600 * _S)
    return seal(w.message(sender.id, ts=ts, expires_ns=None), sender), w.expect, ReplayError, Reason.FUTURE


def expired_frame(w: World) -> Attack:
    sender = w.rng.choice(w.honest)
    expires = w.now - 5 * _S - w.rng.randrange(1, 25 * _S)  # beyond max_skew: the sender's clock cannot explain it
    frame = seal(w.message(sender.id, expires_ns=expires), sender)
    return frame, w.expect, ReplayError, Reason.EXPIRED


def payload_type_swapped(w: World) -> Attack:
    sender = w.rng.choice(w.honest)
    frame = seal(w.message(sender.id), sender)
    swapped = w.rng.choice(
        [PAYLOAD_TYPE_CERT, PAYLOAD_TYPE_REVOCATIONS, INTOTO_PAYLOAD_TYPE, "application/vnd.accord.v2+msgpack"]
    )
    if w.rng.random() < 0.5:  # keep the original signature
        attacked = _reenvelope(frame, payload_type=swapped)
    else:  # or a valid signature over the swapped type (cross-protocol: a "certificate" signed by an agent)
        attacked = _sign_raw(sender, sender.id, swapped, _envelope_decoder.decode(frame).payload)
    return attacked, w.expect, FrameError, Reason.WRONG_PAYLOAD_TYPE


def cross_task(w: World) -> Attack:
    """A valid, fresh frame for task B (or for attempt 2 of task A) delivered into task A's context."""
    sender = w.rng.choice(w.honest)
    if w.rng.random() < 0.7:
        message = w.message(sender.id, task_id=_hex(w.rng))
    else:
        message = w.message(sender.id, attempt=2)
    return seal(message, sender), w.expect, ReplayError, Reason.CONTEXT_MISMATCH


def malformed(w: World) -> Attack:
    sender = w.rng.choice(w.honest)
    frame = seal(w.message(sender.id), sender)
    choice = w.rng.randrange(3)
    if choice == 0:
        bad = frame[: w.rng.randrange(len(frame))]
    elif choice == 1:
        bad = w.rng.randbytes(w.rng.randrange(0, 300))
    else:
        bad = frame + w.rng.randbytes(w.rng.randrange(1, 8))
    return bad, w.expect, FrameError, Reason.MALFORMED


ATTACKS: dict[str, Callable[[World], Attack]] = {
    f.__name__: f
    for f in (
        sig_bitflip,
        payload_bitflip,
        wrong_key,
        impersonation,
        unknown_key,
        revoked_key,
        cert_expired,
        cert_not_yet_valid,
        stale,
        future,
        expired_frame,
        payload_type_swapped,
        cross_task,
        malformed,
    )
}


def test_attack_suite(capsys: pytest.CaptureFixture[str]) -> None:
    w = _world()
    trust_before = w.pki.trust.to_json()
    rng = random.Random(7)
    schedule = ["honest"] * HONEST + ["replay"] * PER_CLASS + [n for n in ATTACKS for _ in range(PER_CLASS)]
    rng.shuffle(schedule)
    accepted: collections.Counter[str] = collections.Counter()
    refused: collections.Counter[str] = collections.Counter()
    delivered: list[tuple[bytes, Message]] = []  # honest frames already accepted, for the replay class
    snapshot = w.guard.snapshot()
    honest_sent = 0

    for kind in schedule:
        w.tick()
        replayable = [
            frame
            for frame, m in delivered[-64:]
            if (m.expires_ns is None or m.expires_ns >= w.now) and m.ts >= w.now - 60 * _S
        ]
        if kind == "honest" or (kind == "replay" and not replayable):
            sender = w.rng.choice(w.honest)
            message = w.message(sender.id)
            frame = seal(message, sender)
            honest_sent += 1
            opened = open_frame(frame, w.pki.trust, w.guard, w.now, expect=w.expect)
            assert opened.message == message and opened.signer == sender.id and opened.verified
            assert opened.payload == encode(message)
            delivered.append((frame, message))
            replayable.append(frame)
            accepted["honest"] += 1
            snapshot = w.guard.snapshot()
            if kind == "honest":
                continue
        if kind == "replay":
            attack: Attack = (w.rng.choice(replayable), w.expect, ReplayError, Reason.REPLAY)
        else:
            attack = ATTACKS[kind](w)
        frame, expect, error_type, reason = attack
        with pytest.raises(SecurityError) as info:
            open_frame(frame, w.pki.trust, w.guard, w.now, expect=expect)
        assert type(info.value) is error_type and info.value.reason is reason, (kind, info.value)
        assert w.guard.snapshot() == snapshot, f"{kind}: a refused frame changed the replay guard"
        refused[kind] += 1

    assert w.pki.trust.to_json() == trust_before, "the trust store changed"
    total = sum(refused.values())
    assert total >= 10_000
    assert accepted["honest"] == honest_sent >= HONEST
    with capsys.disabled():
        print(
            f"\nattack suite: {total} hostile frames refused (100%), {accepted['honest']} honest accepted (100%)"
        )
        for kind in ["replay", *ATTACKS]:
            print(f"  {kind:<22} {refused[kind]:>6} refused")
