"""Checks that the agent refuses what it must refuse, without changing state, and survives malformed input.

The refusal checks share one scenario: the agent bids on a fresh Task; after the bid window the kit sends the
bad Awards under test, then the honest Award of the same bid, then more bad Awards and bad Cancels while the work
runs. The agent passes when nothing answers the bad frames with an AwardAck or a Result, the honest Award still
works (its Result arrives), the bad Cancels did not stop it, and the Result's attestation binds the honest Award,
not a bad one. Contractors MUST verify Awards and Cancels before acting on them (PROTOCOL.md 7.5; Tasks they may
only peek, docs/VERIFICATION.md), so the forged, expired and stale variants are Awards and Cancels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from accord.bus.base import PayloadTooLargeError, PermissionDeniedError
from accord.conformance.market_checks import attested_award_digest
from accord.conformance.registry import CheckFailed, check, fail
from accord.conformance.session import (
    GRACE_MS,
    MS,
    Frame,
    KitSession,
    Probe,
    about,
    corrupt_signature,
    new_id,
    now_ns,
)
from accord.protocol import subjects
from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.messages import (
    MAX_FRAME_BYTES,
    MAX_SKEW_NS,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    ChatMessage,
    Decline,
    Failure,
    Result,
    Role,
)
from accord.security import Expect, Identity, ReplayGuard, SecurityError, open_frame
from accord.security.envelope import (
    PAYLOAD_TYPE_CERT,
    PAYLOAD_TYPE_FRAME,
    Envelope,
    encode_envelope,
    sign_envelope,
)

__all__: list[str] = []

TEN_MINUTES_NS: Final = 600 * 1_000_000_000
EXPIRED_MS: Final = MAX_SKEW_NS // 1_000_000 + 1_000
"""How long ago the kit's expired frames expired: beyond the skew every receiver allows (spec 9.3)."""


@dataclass(frozen=True, slots=True)
class Bad:
    """One frame the agent must refuse: the message (for ids and digests) and the bytes sent."""

    message: Award | Cancel
    frame: bytes

    @property
    def digest(self) -> str:
        return payload_digest(encode(self.message))


BadAwards = Callable[[Probe], list[Bad]]
BadCancels = Callable[[Probe, Award], list[Bad]]


def _none(p: Probe, honest: Award | None = None) -> list[Bad]:
    return []


async def _refused(
    s: KitSession, pre: BadAwards, post: BadAwards, cancels: BadCancels, what: str, *, may_reject: bool = False
) -> str:
    """Run the shared scenario (see the module docstring); a note on success, CheckFailed otherwise.

    ``may_reject``: the bad Awards are verified frames the agent may answer with an AwardReject (5.6); otherwise
    any answer naming them fails (a refused frame is never acted on, 7.5; an Award for another winner MUST be
    ignored, 3.7).
    """
    p = await s.bid_for()
    await s.sleep_until(p.window_close_ns + 5 * MS)
    before = pre(p)
    honest = s.award(p.task, p.bid)
    after = post(p)
    stop = cancels(p, honest)
    frames_out = [b.frame for b in before] + [s.seal(honest)] + [b.frame for b in after] + [b.frame for b in stop]
    await s.send_all(frames_out)
    task_id = p.task.task_id
    answer = await s.wait(
        about(task_id, AwardAck, AwardReject, Result, award_id=honest.id), honest.ack_by_ns + GRACE_MS * MS
    )
    if answer is None or not isinstance(answer.message, AwardReject):  # no Result will follow a reject
        await s.wait(about(task_id, Result, Failure), honest.lease_until_ns + GRACE_MS * MS)
    await s.sleep_until(s.until(s.config.quiet_ms))

    bad = [*before, *after]
    bad_ids = {b.message.id for b in bad}
    frames = s.select(about(task_id))
    answered = (AwardAck, Result) if may_reject else (AwardAck, AwardReject, Result)
    acted = [f for f in frames if isinstance(f.message, answered) and f.message.award_id in bad_ids]
    if acted:
        names = "/".join(t.__name__ for t in answered)
        raise fail(f"acted on {what} Award: {names} names its award_id", *acted)
    results = [f for f in frames if isinstance(f.message, Result)]
    mine = [f for f in results if isinstance(f.message, Result) and f.message.award_id == honest.id]
    if not mine:
        rejected = [f for f in frames if isinstance(f.message, AwardReject) and f.message.award_id == honest.id]
        if rejected:
            raise fail(
                f"the honest Award sent with {what} Award was rejected: "
                "the refused frame changed the agent's state",
                *rejected,
            )
        failures = [f for f in frames if isinstance(f.message, Failure)]
        why = f" ({what} Cancel stopped it?)" if stop else ""
        raise fail(f"no Result for the honest Award sent with {what} frames{why}", *failures, *frames[-3:])
    if len({f.message.id for f in results if f.message is not None}) > 1:
        raise fail("more than one Result for the task", *results)
    result = mine[0].message
    assert isinstance(result, Result)
    bound = attested_award_digest(result)
    if bound is not None and bound in {b.digest for b in bad}:
        raise fail(
            f"the Result's attestation binds {what} Award (award_digest {bound}), not the honest one: "
            "the refused frame changed the agent's state",
            mine[0],
        )
    rejects = sum(isinstance(f.message, AwardReject) and f.message.award_id in bad_ids for f in frames)
    note = f" (answered {rejects} with AwardReject)" if rejects else ""
    refused = f"{_n(len(bad), 'Award')} and {_n(len(stop), 'Cancel')}"
    return f"{refused} not acted on{note}; the honest Award still worked"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _award(s: KitSession, p: Probe, **changes: object) -> Award:
    return s.award(p.task, p.bid, **changes)


@check(
    "refuse.bad_signature",
    "Refuses Awards and Cancels with a bad signature",
    sections=("7.3", "7.5"),
    requirement="""A frame whose signature does not verify over PAE(payload_type, payload) is refused
    (bad_signature) before it is decoded, is not answered and changes nothing: no AwardAck, AwardReject or Result
    for a forged Award, a forged Cancel does not stop the work, and the honest Award sent with them still works
    and is the one its Result attests.""",
)
async def refuse_bad_signature(s: KitSession) -> str:
    def forged(p: Probe) -> list[Bad]:
        a = _award(s, p)
        return [Bad(a, corrupt_signature(s.seal(a)))]

    def forged_cancel(p: Probe, honest: Award) -> list[Bad]:
        c = s.cancel(p.task, honest.attempt)
        return [Bad(c, corrupt_signature(s.seal(c)))]

    return await _refused(s, forged, forged, forged_cancel, "a forged (bad signature)")


@check(
    "refuse.unknown_key",
    "Refuses frames signed by a key it does not trust",
    sections=("4.1", "7.5", "10.4"),
    requirement="""A frame whose key_id has no valid certificate in the trust store is refused (unknown_key) and
    changes nothing: an Award or Cancel signed by an unknown key (even one claiming to come from the requester) is
    never answered or acted on, and an untrusted requester's Task never leads to paid work (no AwardAck, no Result
    for its Award).""",
)
async def refuse_unknown_key(s: KitSession) -> str:
    u = s.unknown

    def by_unknown(p: Probe) -> list[Bad]:
        a = _award(s, p)
        return [Bad(a, s.seal_as(a, u))]

    def cancel_by_unknown(p: Probe, honest: Award) -> list[Bad]:
        c = s.cancel(p.task, honest.attempt)
        return [Bad(c, s.seal_as(c, u))]

    note = await _refused(s, by_unknown, by_unknown, cancel_by_unknown, "an unknown key's")
    if not s.unknown_observable:
        return note + "; (replies to an untrusted requester not observable: subscribe permission denied)"
    # A whole round from an untrusted requester, on its own subject (4.1): it may get a Bid (Tasks may be peeked,
    # docs/VERIFICATION.md), never paid work.
    subject = subjects.direct(s.agent, u.id)
    t = await s.task(sender=u.id)
    if not await _try_send(s, s.seal_as(t, u), subject):
        return note + "; (cannot publish as an untrusted requester here: publish permission denied)"
    reply = await s.wait(about(t.task_id, Bid, Decline), s.until(t.bid_window_ms + s.config.quiet_ms, t.ts))
    if reply is None or not isinstance(reply.message, Bid):
        return note + "; an untrusted requester's Task got no Bid"
    await s.sleep_until(t.ts + t.bid_window_ms * MS + 5 * MS)
    award = s.award(t, reply, sender=u.id)
    await _try_send(s, s.seal_as(award, u), subject)
    watch_ms = reply.message.est_latency_ms + s.config.quiet_ms + GRACE_MS
    acted = await s.wait(about(t.task_id, AwardAck, Result), s.until(watch_ms))
    if acted is not None:
        raise fail("acted on an Award from a requester whose key it does not trust", reply, acted)
    return note + "; an untrusted requester's Award was not acted on"


async def _try_send(s: KitSession, frame: bytes, subject: str) -> bool:
    """Publish on ``subject``; False when the server's permissions refuse it."""
    try:
        await s.send(frame, subject)
        await s.bus.flush()
    except PermissionDeniedError:
        return False
    return True


@check(
    "refuse.expired",
    "Refuses expired Awards and Cancels",
    sections=("3.1", "7.5", "9.1"),
    requirement="""A frame whose expires_ns has passed by more than the max skew (5 s) MUST NOT be acted on
    (expired): no AwardAck, AwardReject or Result for an expired Award, an expired Cancel does not stop the work,
    and the honest Award sent with them still works.""",
)
async def refuse_expired(s: KitSession) -> str:
    def expired(p: Probe) -> list[Bad]:
        a = _award(s, p, expires_ns=now_ns() - EXPIRED_MS * MS)
        return [Bad(a, s.seal(a))]

    def expired_cancel(p: Probe, honest: Award) -> list[Bad]:
        c = s.cancel(p.task, honest.attempt, expires_ns=now_ns() - EXPIRED_MS * MS)
        return [Bad(c, s.seal(c))]

    return await _refused(s, expired, expired, expired_cancel, "an expired")


@check(
    "refuse.stale",
    "Refuses stale and future-dated Awards and Cancels",
    sections=("7.5", "9.1", "9.3"),
    requirement="""A frame whose ts is older than the receiver's max_age (60 s by default) is refused (stale), one
    dated beyond its max_skew (5 s) ahead is refused (future); neither is answered or changes anything (checked
    with frames ten minutes off), and the honest Award sent with them still works.""",
)
async def refuse_stale(s: KitSession) -> str:
    def stale(p: Probe) -> list[Bad]:
        now = now_ns()
        old, ahead = _award(s, p, ts=now - TEN_MINUTES_NS), _award(s, p, ts=now + TEN_MINUTES_NS)
        return [Bad(old, s.seal(old)), Bad(ahead, s.seal(ahead))]

    def stale_cancels(p: Probe, honest: Award) -> list[Bad]:
        now = now_ns()
        old = s.cancel(p.task, honest.attempt, ts=now - TEN_MINUTES_NS)
        ahead = s.cancel(p.task, honest.attempt, ts=now + TEN_MINUTES_NS)
        return [Bad(old, s.seal(old)), Bad(ahead, s.seal(ahead))]

    return await _refused(s, stale, stale, stale_cancels, "a stale or future-dated")


@check(
    "refuse.wrong_winner",
    "Refuses an Award naming another winner",
    sections=("3.7", "7.5"),
    requirement="""A receiver that is not an Award's winner MUST ignore it (3.7; context_mismatch, 7.5 step 7): no
    AwardAck, AwardReject or Result for it and no change of state; the honest Award of the same bid, sent before
    and after such Awards, still works and is the one its Result attests.""",
)
async def refuse_wrong_winner(s: KitSession) -> str:
    def other_winner(p: Probe) -> list[Bad]:
        a = _award(s, p, winner=Identity.generate().id)
        return [Bad(a, s.seal(a))]

    return await _refused(s, other_winner, other_winner, _none, "a misaddressed (other winner)")


@check(
    "refuse.unknown_bid",
    "Refuses an Award for a bid it never made",
    sections=("3.7", "5.6", "7.5", "7.6"),
    requirement="""An Award whose bid_id and bid_digest name no bid this agent made is not acted on (at most an
    AwardReject, 5.6; no AwardAck, no Result) and changes no state (7.5): the honest Award of the bid it did make,
    sent before and after such Awards, still works and is the one its Result attests. An Award for a task it
    never saw gets no AwardAck or Result (5.6: AwardReject `unknown_task`).""",
)
async def refuse_unknown_bid(s: KitSession) -> str:
    def unknown_bid(p: Probe) -> list[Bad]:
        a = _award(s, p, bid_id=new_id(), bid_digest=hashlib.sha256(new_id().encode()).hexdigest())
        return [Bad(a, s.seal(a))]

    note = await _refused(s, unknown_bid, unknown_bid, _none, "an unknown-bid", may_reject=True)
    p = await s.bid_for()
    await s.sleep_until(p.window_close_ns + 5 * MS)
    stray = s.award(p.task, p.bid, task_id=new_id())
    await s.send_all([s.seal(stray)])
    await s.sleep_until(s.until(s.config.quiet_ms))
    await s.release(p.task)
    acted = s.select(about(None, AwardAck, Result, award_id=stray.id))
    if acted:
        raise fail("acted on an Award for a task it never saw", *acted)
    return note + "; an Award for a task it never saw was not acted on"


@check(
    "refuse.replay_task",
    "A replayed Task has one effect",
    sections=("5.6", "9.1"),
    requirement="""The same Task frame delivered twice has one effect only: one Bid (the second copy is a replay,
    refused or ignored).""",
)
async def refuse_replay_task(s: KitSession) -> str:
    p = await s.bid_for(copies=2)
    await s.sleep_until(s.until(s.config.quiet_ms))
    await s.release(p.task)
    replies = s.select(about(p.task.task_id, Bid, Decline))
    ids = {f.message.id for f in replies if f.message is not None}
    if len(ids) > 1:
        raise fail(f"{len(ids)} different answers to one Task frame sent twice", *replies)
    return "one Bid for the Task frame sent twice"


@check(
    "refuse.replay_award",
    "A replayed Award has one effect",
    sections=("5.6", "9.1"),
    requirement="""The same Award frame delivered twice is acted on once (the copy is a replay, rule 4): at most
    one AwardAck, exactly one Result, no AwardReject for it.""",
)
async def refuse_replay_award(s: KitSession) -> str:
    p = await s.bid_for()
    await s.sleep_until(p.window_close_ns + 5 * MS)
    award = s.award(p.task, p.bid)
    frame = s.seal(award)
    await s.send_all([frame, frame])
    await s.wait(about(p.task.task_id, Result, award_id=award.id), award.lease_until_ns + GRACE_MS * MS)
    watch_ms = p.message.est_latency_ms + s.config.quiet_ms
    await s.sleep_until(s.until(watch_ms))
    frames = s.select(about(p.task.task_id, award_id=award.id))
    acks = {f.message.id for f in frames if isinstance(f.message, AwardAck)}
    results = {f.message.id for f in frames if isinstance(f.message, Result)}
    rejects = [f for f in frames if isinstance(f.message, AwardReject)]
    if len(acks) > 1 or len(results) > 1 or rejects:
        raise fail(
            f"acted on the replayed copy: {len(acks)} AwardAcks, {len(results)} Results, "
            f"{len(rejects)} AwardRejects",
            *frames,
        )
    if not results:
        raise fail("no Result for the Award (sent twice)", *frames)
    return f"{len(acks)} AwardAck and 1 Result for the Award frame sent twice"


async def _malformed(s: KitSession) -> list[tuple[str, bytes, str]]:
    """(label, frame, task id or "") of each malformed frame; a task id here must never get an answer."""
    kit = s.kit
    garbage = b"\xc1" + hashlib.sha256(b"garbage").digest() * 2  # 0xc1 is never used in msgpack
    out = [("an empty frame", b"", ""), ("64 garbage bytes", garbage[:64], "")]
    t = await s.task()
    sealed = s.seal(t)
    out.append(("a truncated envelope", sealed[: len(sealed) // 2], t.task_id))
    t = await s.task()
    signed = sign_envelope(PAYLOAD_TYPE_FRAME, encode(t), kit)
    v2 = Envelope(v=2, payload_type=signed.payload_type, payload=signed.payload, key_id=kit.id, sig=signed.sig)
    out.append(("an envelope of version 2", encode_envelope(v2), t.task_id))
    t = await s.task()
    as_cert = encode_envelope(sign_envelope(PAYLOAD_TYPE_CERT, encode(t), kit))
    out.append(("a Task under the certificate payload type", as_cert, t.task_id))
    no_message = encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, b"\x93\x01\x02\x03", kit))
    out.append(("a signed payload that is no message", no_message, ""))
    return out


@check(
    "robust.malformed",
    "Survives malformed and over-size frames",
    sections=("2.6", "7.1", "7.5"),
    requirement="""Frames that are empty, garbage, truncated, of another envelope version or payload type, or whose
    signed payload is no message are refused (malformed, unsupported_version, wrong_payload_type); a frame over
    1 MiB is refused unread (too_large) even when validly signed. None gets an answer, and the agent still bids
    on a fresh honest Task afterwards.""",
)
async def robust_malformed(s: KitSession) -> str:
    frames = await _malformed(s)  # only ever to the agent's inbox: other agents on the bus are not under test
    for _label, frame, _task_id in frames:
        await s.send(frame)
    big = await s.task(messages=[ChatMessage(role=Role.USER, content="x" * 250_000) for _ in range(5)])
    big_frame = s.seal(big)
    note = ""
    try:
        await s.send(big_frame)
        frames.append((f"a signed Task of {len(big_frame)} bytes (over 1 MiB)", big_frame, big.task_id))
    except PayloadTooLargeError:
        note = "; the bus refuses frames over 1 MiB (server max_payload), so the over-size case did not reach it"
        try:
            await s.send(b"\xc1" * MAX_FRAME_BYTES)
            frames.append(("1 MiB of garbage", b"", ""))
        except PayloadTooLargeError:
            pass
    await s.bus.flush()
    try:
        p = await s.bid_for()
    except CheckFailed as exc:
        why = f"after {len(frames)} malformed frames the agent no longer bids on a fresh Task: {exc.detail}"
        raise fail(why, *exc.frames) from exc
    await s.release(p.task)
    answered = [f for _label, _frame, task_id in frames if task_id for f in s.select(about(task_id))]
    if answered:
        raise fail("answered a malformed frame", *answered)
    return f"refused {len(frames)} malformed frames, then bid on a fresh Task{note}"


@check(
    "frames.signed",
    "Every frame the agent sent is sealed and fresh",
    sections=("4.1", "7.1", "7.5", "9.1"),
    requirement="""Every frame the agent publishes (advertisements, bids, declines, acks, progress, results,
    failures) is an envelope that verifies under the trust store (its certificate, the signature over
    PAE(payload_type, payload), sender == key_id == the agent), fresh (ts within max_skew and max_age, not
    expired on arrival), and never reuses a message id for different content.""",
)
async def frames_signed(s: KitSession) -> str:
    guard = ReplayGuard()
    seen: dict[str, bytes | None] = {}
    problems: list[tuple[Frame, str]] = []
    frames = sorted([*s.adverts.frames, *s.inbox.frames], key=lambda f: (f.at_ns, f.seq))
    for f in frames:
        if f.message is None:
            problems.append((f, f"does not decode: {f.error}"))
            continue
        previous = seen.get(f.message.id, b"")
        if previous != b"":
            if previous != f.payload:
                problems.append((f, f"message id {f.message.id} reused for different content"))
            continue  # an identical re-send (e.g. a bid re-sent for a lost one) is the same message
        seen[f.message.id] = f.payload
        try:
            # judged as of arrival minus the kit's allowance: its own scheduling lag must not expire a frame
            open_frame(f.data, s.trust, guard, f.at_ns - GRACE_MS * MS, expect=Expect(sender=s.agent))
        except SecurityError as exc:
            problems.append((f, str(exc)))
    if problems:
        first = "; ".join(f"{f.type_name}: {why}" for f, why in problems[:3])
        raise fail(f"{len(problems)} of {len(frames)} frames fail: {first}", *(f for f, _ in problems[:3]))
    return f"all {len(frames)} frames verified"
