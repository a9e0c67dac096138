"""Checks of the market lifecycle: advertisement, eligibility, bids, award acknowledgement, results, cancel.

Each check drives the agent as a requester would (targeted Tasks to its inbox, Awards after the bid window
closes) and judges what comes back. Scenarios several checks share (the probe bid, the award flow, the round of
ineligible tasks) run once per session and are cached on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import msgspec

from accord.conformance.registry import CheckFailed, NotApplicable, check, fail
from accord.conformance.session import GRACE_MS, MS, Frame, KitSession, Match, Probe, about, now_ns
from accord.errors import LocalProtocolError
from accord.protocol import subjects
from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.messages import (
    MAX_SKEW_NS,
    PROTOCOL_VERSION,
    Advertise,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Decline,
    Failure,
    Progress,
    Result,
    Task,
)
from accord.security import Expect, SecurityError, open_frame, verify_attestation

__all__ = ["AwardFlow", "attested_award_digest", "award_flow", "probe"]

MIN_TTL_MS: Final = 1_000
MAX_TTL_MS: Final = 3_600_000
MAX_AGE_MS: Final = 60_000
MAX_SKEW_MS: Final = MAX_SKEW_NS // 1_000_000
UNSERVED_RESIDENCY: Final = "conformance-nowhere"
UNSERVED_KIND: Final = "conformance-unserved"


# --- shared scenarios -----------------------------------------------------------------------------------------
async def probe(s: KitSession) -> Probe:
    """The eligible probe: one targeted Task and the agent's Bid for it (cached)."""
    cached = s.cache.get("probe")
    if isinstance(cached, Probe):
        return cached
    if isinstance(cached, BaseException):
        raise cached
    try:
        result = await s.bid_for()
    except CheckFailed as exc:  # every check that needs the probe fails with the same evidence
        s.cache["probe"] = exc
        raise
    s.cache["probe"] = result
    return result


@dataclass(slots=True)
class AwardFlow:
    """The probe bid awarded honestly, and what came back."""

    probe: Probe
    award: Award
    answer: Frame | None
    """The first answer to the award: an AwardAck or AwardReject, or what acknowledges it as well (a Result,
    Progress or Failure of its attempt, spec 5.6)."""
    outcome: Frame | None
    """The Result (or Failure) for the award's attempt."""

    @property
    def award_payload(self) -> bytes:
        return encode(self.award)


async def award_flow(s: KitSession) -> AwardFlow:
    """Award the probe bid after its window closes; wait for the ack and the result (cached)."""
    cached = s.cache.get("flow")
    if isinstance(cached, AwardFlow):
        return cached
    p = await probe(s)
    if p.message.valid_until_ns < now_ns() + GRACE_MS * MS:  # never award a bid that lapses: get a fresh one
        await s.release(p.task)
        p = await s.bid_for()
    await s.sleep_until(p.window_close_ns + 5 * MS)
    award = s.award(p.task, p.bid)
    frame = s.seal(award)
    await s.send_all([frame])
    answer = await s.wait(_answer_to(p.task.task_id, award), award.ack_by_ns + GRACE_MS * MS)
    outcome = None
    if answer is None or not isinstance(answer.message, AwardReject):
        outcome = await s.wait(_outcome_of(p.task.task_id, award), award.lease_until_ns + GRACE_MS * MS)
    flow = AwardFlow(p, award, answer, outcome)
    s.cache["flow"] = flow
    return flow


def _answer_to(task_id: str, award: Award) -> Match:
    """An AwardAck or AwardReject naming the award, or a Result, Progress or Failure of its attempt (each
    acknowledges the award: an agent may hold its AwardAck briefly and let the Result stand for it, 5.6)."""
    named = about(task_id, AwardAck, AwardReject, Result, award_id=award.id)
    of_attempt = about(task_id, Progress, Failure, attempt=award.attempt)
    return lambda f: named(f) or of_attempt(f)


def _outcome_of(task_id: str, award: Award) -> Match:
    result = about(task_id, Result, award_id=award.id)
    failure = about(task_id, Failure, attempt=award.attempt)
    return lambda f: result(f) or failure(f)


def attested_award_digest(result: Result) -> str | None:
    """The ``award_digest`` an attestation names, read WITHOUT verifying it (None if it does not parse)."""
    try:
        envelope = msgspec.json.decode(result.attestation)
        statement = msgspec.json.decode(base64.b64decode(envelope["payload"], validate=True))
        digest = statement["predicate"]["award_digest"]
    except (msgspec.DecodeError, binascii.Error, KeyError, TypeError, ValueError):
        return None
    return digest if isinstance(digest, str) else None


# --- advertisement --------------------------------------------------------------------------------------------
def _advert_problems(s: KitSession, frame: Frame) -> list[str]:
    msg = frame.message
    assert isinstance(msg, Advertise)
    problems: list[str] = []
    try:
        at = frame.at_ns - GRACE_MS * MS
        open_frame(frame.data, s.trust, None, at, expect=Expect(sender=s.agent, types=(Advertise,)))
    except SecurityError as exc:
        problems.append(f"the frame does not verify: {exc}")
    try:
        expected = subjects.advertise(msg.tier, msg.region, s.agent)
    except LocalProtocolError as exc:  # an invalid region token
        problems.append(f"no valid advertise subject for region {msg.region!r}: {exc}")
    else:
        if frame.subject != expected:
            problems.append(f"published on {frame.subject}, expected {expected}")
    if PROTOCOL_VERSION not in msg.protocol_versions:
        problems.append(f"protocol_versions {msg.protocol_versions} lacks {PROTOCOL_VERSION}")
    if msg.ts > frame.at_ns + MAX_SKEW_MS * MS or msg.ts < frame.at_ns - MAX_AGE_MS * MS:
        problems.append(f"ts is {(frame.at_ns - msg.ts) / 1e6:.0f} ms off the kit's clock at arrival")
    if msg.expires_ns is not None and msg.expires_ns < frame.at_ns - GRACE_MS * MS:
        problems.append("expired on arrival (expires_ns passed)")
    if not MIN_TTL_MS <= msg.ttl_ms <= MAX_TTL_MS:
        problems.append(f"ttl_ms {msg.ttl_ms} outside {MIN_TTL_MS}..{MAX_TTL_MS}")
    return problems


@check(
    "advertise.valid",
    "Advertise: valid, signed, on its subject, sane TTL",
    sections=("3.1", "3.2", "4.1", "7.5", "9.1"),
    requirement="""The agent publishes its Advertise on accord.v1.adv.<tier>.<region>.<agent id> (its own tier and
    region). The frame verifies under the trust store (a valid certificate for key_id, the signature over
    PAE(payload_type, payload), sender == key_id == the agent id), decodes as a v1 Advertise within the message
    bounds (at least one model, protocol_versions containing 1), is fresh (ts within the skew window, not
    expired) and carries a TTL between 1 s and 1 h.""",
)
async def advertise_valid(s: KitSession) -> str:
    frame = await s.first_advert()
    msg = frame.message
    assert isinstance(msg, Advertise)
    problems = _advert_problems(s, frame)
    if problems:
        raise fail("; ".join(problems), frame)
    models = ", ".join(m.name for m in msg.models)
    return f"{msg.name}: {msg.tier.value}/{msg.region}, models {models}, ttl {msg.ttl_ms} ms"


@check(
    "advertise.heartbeat",
    "Advertise heartbeats repeat every ttl/3",
    sections=("3.2", "6.6"),
    requirement="""An agent re-sends its Advertise as a heartbeat at least every ttl_ms / 3, each one a new message
    (new id) newer in seq and ts than the last, for as long as it is online; a registry drops an agent ttl_ms
    after its newest Advertise. (The kit allows scheduling jitter: it fails an agent whose median interval exceeds
    ttl_ms / 3 + 250 ms, or any of whose intervals exceeds ttl_ms. Signatures and subjects of heartbeats are
    judged by advertise.valid and frames.signed.)""",
)
async def advertise_heartbeat(s: KitSession) -> str:
    first = await s.first_advert()
    adv = first.message
    assert isinstance(adv, Advertise)
    deadline = first.at_ns + (adv.ttl_ms + GRACE_MS) * MS
    second = await s.adverts.wait(lambda f: f.seq > first.seq and isinstance(f.message, Advertise), deadline)
    if second is None:
        raise fail(f"no new Advertise within ttl_ms ({adv.ttl_ms} ms) of the first one: registries drop it", first)
    frames = [f for f in s.adverts.frames if f.seq >= first.seq and isinstance(f.message, Advertise)]
    gaps: list[int] = []
    for previous, f in itertools.pairwise(frames):
        prev, msg = previous.message, f.message
        assert isinstance(prev, Advertise) and isinstance(msg, Advertise)
        if msg.id == prev.id:
            raise fail("a heartbeat repeats the previous message id (receivers refuse it as a replay)", f)
        if msg.ts <= prev.ts or msg.seq <= prev.seq:
            raise fail("a heartbeat is not newer than the previous one in both seq and ts", previous, f)
        gap_ms = (f.at_ns - previous.at_ns) // MS
        if gap_ms > prev.ttl_ms:
            raise fail(f"{gap_ms} ms between heartbeats, longer than ttl_ms {prev.ttl_ms}", previous, f)
        gaps.append(gap_ms)
    typical = statistics.median(gaps)
    if typical > adv.ttl_ms // 3 + GRACE_MS:
        raise fail(
            f"heartbeats every {typical:.0f} ms (median), not every ttl_ms / 3 = {adv.ttl_ms // 3}", *frames[:2]
        )
    return f"{len(frames)} heartbeats, median interval {typical:.0f} ms (ttl_ms / 3 = {adv.ttl_ms // 3})"


# --- eligibility ----------------------------------------------------------------------------------------------
@check(
    "task.bid_eligible",
    "Bids on an eligible targeted Task",
    sections=("5.6", "6.7"),
    requirement="""A Task sent to the agent's inbox that it can serve (a kind among its skills, no residency
    requirement, public, a generous budget and deadline) gets a Bid, not a Decline or silence.""",
)
async def task_bid_eligible(s: KitSession) -> str:
    p = await probe(s)
    b = p.message
    delay = (p.bid.at_ns - p.task.ts) / 1e6
    return (
        f"Bid {b.price_micros} micro-USD on {b.model}, est. {b.est_latency_ms} ms, {delay:.0f} ms after the Task"
    )


Case = tuple[Task, str]
"""An ineligible Task and the Decline reason it must get ("" for any reason)."""


def _builders(s: KitSession, adv: Advertise) -> dict[str, tuple[Callable[[], Awaitable[Task]], str] | str]:
    """Per case: how to build its Task and the reason it must get, or why the case does not apply."""
    residency = UNSERVED_RESIDENCY
    while residency in adv.residency:  # pragma: no cover - an agent serving our made-up class
        residency += "x"
    floor = s.min_price(adv)

    async def deadline() -> Task:
        ts = now_ns()
        return await s.task(ts=ts, constraints={"deadline_ns": ts + s.config.bid_window_ms * MS // 2})

    wrong_prompt = hashlib.sha256(b"another prompt").hexdigest()
    return {
        "residency": (lambda: s.task(constraints={"residency": residency}), "residency"),
        "kind": (lambda: s.task(kind=UNSERVED_KIND), "unsupported_kind")
        if adv.skills
        else "the agent advertises no skills (it serves every kind)",
        "deadline": (deadline, "deadline_infeasible"),
        "price": (lambda: s.task(constraints={"max_price_micros": floor - 1}), "over_budget")
        if floor > 0
        else "every advertised model is free for the kit's task (no budget is below the sheet)",
        "prompt": (lambda: s.task(prompt_digest=wrong_prompt), ""),
    }


async def _ineligible_round(s: KitSession) -> dict[str, Case | str]:
    """Send the ineligible Tasks at once; per case: (task, expected reason) or why it is not applicable.

    A case answered only with Decline(busy) is sent again (a new Task) until the reply timeout: busy says
    nothing about whether the agent checks what the case is about.
    """
    cached = s.cache.get("ineligible")
    if isinstance(cached, dict):
        return cached
    builders = _builders(s, await s.capabilities())
    cases: dict[str, Case | str] = {n: b for n, b in builders.items() if isinstance(b, str)}
    pending = [n for n, b in builders.items() if not isinstance(b, str)]
    give_up = s.until(s.config.timeout_ms)
    answered = False
    while pending:
        for name in pending:
            build = builders[name]
            assert not isinstance(build, str)
            cases[name] = (await build[0](), build[1])
        tasks = [c[0] for n in pending if isinstance(c := cases[n], tuple)]
        await s.send_all([s.seal(t) for t in tasks])
        answered = await _barrier(s)
        last = max(t.ts + t.bid_window_ms * MS for t in tasks)
        await s.sleep_until(last + s.config.quiet_ms * MS)
        pending = [n for n in pending if isinstance(c := cases[n], tuple) and _only_busy(s, c[0])]
        if now_ns() > give_up:
            break
    s.cache["ineligible.answered"] = answered
    s.cache["ineligible"] = cases
    return cases


async def _barrier(s: KitSession) -> bool:
    """Send an eligible Task after the others and wait for any answer to it: an agent that reads its inbox in
    order has then answered every earlier Task (its replies come on one subject, in order). False: no answer."""
    barrier = await s.task()
    await s.send_all([s.seal(barrier)])
    until = s.until(barrier.bid_window_ms + s.config.timeout_ms, barrier.ts)
    reply = await s.wait(about(barrier.task_id, Bid, Decline), until)
    if reply is not None and isinstance(reply.message, Bid):
        await s.release(barrier)
    return reply is not None


def _only_busy(s: KitSession, task: Task) -> bool:
    replies = s.select(about(task.task_id, Bid, Decline))
    return bool(replies) and all(isinstance(f.message, Decline) and f.message.reason == "busy" for f in replies)


async def _declines(s: KitSession, case: str) -> str:
    cases = await _ineligible_round(s)
    c = cases[case]
    if isinstance(c, str):
        raise NotApplicable(c)
    task, reason = c
    frames = s.select(about(task.task_id))
    bids = [f for f in frames if isinstance(f.message, Bid)]
    if bids:
        raise fail(f"bid on a Task it is not eligible for (expected a Decline with reason {reason!r})", *bids)
    replies = [f for f in frames if isinstance(f.message, Decline)]
    declines = [f for f in replies if isinstance(f.message, Decline) and f.message.reason != "busy"]
    if replies and not declines:
        raise fail("inconclusive: the agent declined with `busy` until the timeout", *replies)
    if not declines and case == "prompt":
        if not s.cache.get("ineligible.answered"):
            raise fail("inconclusive: the agent answered neither this Task nor an eligible one sent after it")
        return "no Bid (silence)"
    if not declines:
        raise fail(f"no Decline for a targeted Task it cannot serve (expected reason {reason!r})", *frames)
    d = declines[0].message
    assert isinstance(d, Decline)
    if reason == "":  # any reason will do
        reason = d.reason
    if d.reason != reason or d.attempt != task.attempt:
        raise fail(
            f"Decline with reason {d.reason!r} attempt {d.attempt}, expected {reason!r} attempt 1", *declines
        )
    return f"Decline({d.reason})" + (f": {d.detail}" if d.detail else "")


@check(
    "task.decline_residency",
    "Declines a Task needing a residency class it does not serve",
    sections=("3.6", "5.6", "6.7"),
    requirement="""A targeted Task whose residency class the agent does not serve gets a Decline with reason
    `residency` and no Bid.""",
)
async def task_decline_residency(s: KitSession) -> str:
    return await _declines(s, "residency")


@check(
    "task.decline_kind",
    "Declines a Task of a kind it does not serve",
    sections=("3.6", "5.6", "6.7"),
    requirement="""A targeted Task of a kind not among the agent's advertised skills gets a Decline with reason
    `unsupported_kind` and no Bid (not applicable when the agent advertises no skills, i.e. serves every kind).""",
)
async def task_decline_kind(s: KitSession) -> str:
    return await _declines(s, "kind")


@check(
    "task.decline_deadline",
    "Declines a Task whose deadline it cannot meet",
    sections=("3.6", "5.6", "6.7"),
    requirement="""A targeted Task whose deadline falls before its own bid window closes (no one can meet it) gets
    a Decline with reason `deadline_infeasible` and no Bid.""",
)
async def task_decline_deadline(s: KitSession) -> str:
    return await _declines(s, "deadline")


@check(
    "task.decline_price",
    "Declines a Task whose budget is below its price sheet",
    sections=("3.6", "5.6", "6.7"),
    requirement="""A targeted Task whose max_price_micros is below the price every advertised model's sheet gives
    for it gets a Decline with reason `over_budget` and no Bid (not applicable when the sheet is free).""",
)
async def task_decline_price(s: KitSession) -> str:
    return await _declines(s, "price")


@check(
    "task.prompt_digest",
    "Does not bid on a Task whose prompt does not match its digest",
    sections=("2.7", "3.4"),
    requirement="""A receiver that has the prompt MUST check it against prompt_digest and MUST NOT bid on or run a
    task whose prompt does not match: a targeted Task with a wrong prompt_digest gets no Bid (a Decline, with any
    reason, or nothing).""",
)
async def task_prompt_digest(s: KitSession) -> str:
    return await _declines(s, "prompt")


# --- bids -----------------------------------------------------------------------------------------------------
@check(
    "bid.window",
    "Bids arrive before the bid window closes",
    sections=("3.4", "6.5"),
    requirement="""A Bid must reach the requester before the Task's bid window closes (task ts + bid_window_ms);
    the requester ranks only the bids it holds then (the kit allows 250 ms for transit and its own scheduling).""",
)
async def bid_window(s: KitSession) -> str:
    p = await probe(s)
    late_ms = (p.bid.at_ns - p.window_close_ns) / 1e6
    if late_ms > GRACE_MS:
        raise fail(f"the Bid arrived {late_ms:.0f} ms after the bid window closed", p.bid)
    if late_ms > 0:
        return (
            f"arrived {late_ms:.0f} ms after the window closed, within the kit's {GRACE_MS} ms transit allowance"
        )
    return f"arrived {-late_ms:.0f} ms before the window closed ({p.task.bid_window_ms} ms window)"


@check(
    "bid.fields",
    "Bid fields: task, attempt, valid_until, model, price",
    sections=("3.5", "5.6", "6.4"),
    requirement="""A Bid names the Task's task_id and attempt, stays valid past the close of the bid window
    (valid_until_ns, and expires_ns if set, later than task ts + bid_window_ms) so that it can be awarded, offers
    a model the agent advertises, asks at most the Task's max_price_micros, and states the agent's advertised tier
    and region.""",
)
async def bid_fields(s: KitSession) -> str:
    p = await probe(s)
    b = p.message
    adv = await s.capabilities()
    problems: list[str] = []
    if b.task_id != p.task.task_id or b.attempt != p.task.attempt:
        problems.append(f"names task {b.task_id} attempt {b.attempt}, expected {p.task.task_id} attempt 1")
    if b.valid_until_ns <= p.window_close_ns:
        problems.append(
            f"valid_until_ns is {(p.window_close_ns - b.valid_until_ns) / 1e6:.0f} ms before the window closes"
        )
    if b.expires_ns is not None and b.expires_ns <= p.window_close_ns:
        problems.append("expires_ns falls before the window closes")
    if b.model not in {m.name for m in adv.models}:
        problems.append(f"model {b.model!r} is not among the advertised models")
    if b.price_micros > p.task.constraints.max_price_micros:
        problems.append(f"price {b.price_micros} exceeds max_price_micros {p.task.constraints.max_price_micros}")
    if b.tier != adv.tier or b.region != adv.region:
        problems.append(f"tier/region {b.tier.value}/{b.region}, advertised {adv.tier.value}/{adv.region}")
    if problems:
        raise fail("; ".join(problems), p.bid)
    valid_ms = (b.valid_until_ns - p.window_close_ns) / 1e6
    return f"{b.model} at {b.price_micros} micro-USD, valid {valid_ms:.0f} ms past the window"


# --- award, result, cancel ------------------------------------------------------------------------------------
@check(
    "award.ack",
    "Acknowledges (or rejects) an Award within the ack time",
    sections=("3.7", "3.8", "5.6"),
    requirement="""An Award of the agent's own bid is answered with an AwardAck (or an AwardReject) naming the
    award's id, task and attempt, before the award's ack_by_ns; a Result, Progress or Failure of the attempt sent
    by then acknowledges it too (the agent may hold its AwardAck for a moment, 5.6).""",
)
async def award_ack(s: KitSession) -> str:
    flow = await award_flow(s)
    a = flow.award
    if flow.answer is None:
        raise fail(
            f"no AwardAck, AwardReject, Result, Progress or Failure within ack_by ({s.config.ack_ms} ms after"
            " the Award)",
            *s.select(about(a.task_id, award_id=a.id)),
        )
    m = flow.answer.message
    assert isinstance(m, AwardAck | AwardReject | Result | Progress | Failure)
    if m.attempt != a.attempt:
        raise fail(f"the answer names attempt {m.attempt}, the award was for attempt {a.attempt}", flow.answer)
    in_ms = (flow.answer.at_ns - a.ts) / 1e6
    if isinstance(m, AwardReject):
        return f"AwardReject({m.reason}) after {in_ms:.0f} ms"
    if isinstance(m, AwardAck):
        return f"AwardAck after {in_ms:.0f} ms"
    return f"acknowledged by its {type(m).__name__} after {in_ms:.0f} ms"


async def _result(s: KitSession) -> tuple[AwardFlow, Frame, Result]:
    flow = await award_flow(s)
    a = flow.award
    if flow.answer is not None and isinstance(flow.answer.message, AwardReject):
        raise fail(
            "the agent rejected the honest award of its own bid, so no result could be checked", flow.answer
        )
    if flow.outcome is None:
        raise fail(
            "no Result for the awarded attempt before its lease ended",
            *s.select(about(a.task_id, award_id=a.id)),
        )
    m = flow.outcome.message
    if not isinstance(m, Result):
        raise fail("the awarded attempt ended in a Failure, not a Result", flow.outcome)
    return flow, flow.outcome, m


@check(
    "result.sealed",
    "Result: sealed and bound to the award and attempt",
    sections=("3.11", "5.3", "5.6", "7.5"),
    requirement="""The Result of an awarded attempt arrives before the lease ends as a signed frame that verifies
    (trust, signature, sender == key_id == the awardee), names the award's task_id, attempt and award_id, and the
    model of the winning bid.""",
)
async def result_sealed(s: KitSession) -> str:
    flow, frame, result = await _result(s)
    a = flow.award
    problems: list[str] = []
    expect = Expect(task_id=a.task_id, attempt=a.attempt, award_id=a.id, sender=s.agent, types=(Result,))
    try:
        open_frame(frame.data, s.trust, None, frame.at_ns - GRACE_MS * MS, expect=expect)
    except SecurityError as exc:
        problems.append(f"the Result frame does not verify: {exc}")
    if frame.at_ns > a.lease_until_ns + GRACE_MS * MS:
        problems.append(f"arrived {(frame.at_ns - a.lease_until_ns) / 1e6:.0f} ms after the lease ended")
    if result.model != flow.probe.message.model:
        problems.append(f"model {result.model!r}, but the winning bid offered {flow.probe.message.model!r}")
    if problems:
        raise fail("; ".join(problems), frame)
    return (
        f"{len(result.output)} characters from {result.model}, {(frame.at_ns - a.ts) / 1e6:.0f} ms after the Award"
    )


@check(
    "result.attested",
    "Result: attestation verifies and binds output, task, award, requester",
    sections=("3.12", "8.2", "8.3"),
    requirement="""Result.attestation is a DSSE envelope over an in-toto statement, signed by the agent (a trusted
    key), whose subject is the SHA-256 of the output, and whose predicate names the task_id, attempt, the
    requester (the kit), the prompt digest of the Task, the model of the Result, and as award_digest the SHA-256
    of the Award payload the kit sent.""",
)
async def result_attested(s: KitSession) -> str:
    flow, frame, result = await _result(s)
    a = flow.award
    if not result.attestation:
        raise fail("the Result carries no attestation", frame)
    expect = Expect(task_id=a.task_id, attempt=a.attempt, sender=s.agent, recipient=s.kit.id)
    try:
        verified = verify_attestation(
            result.attestation, s.trust, frame.at_ns, output=result.output, expect=expect
        )
    except SecurityError as exc:
        raise fail(f"the attestation does not verify: {exc}", frame) from exc
    st = verified.statement
    problems: list[str] = []
    award_digest = payload_digest(flow.award_payload)
    if st.award_digest != award_digest:
        problems.append(f"award_digest {st.award_digest} is not the SHA-256 of the Award sent ({award_digest})")
    if st.prompt_digest != flow.probe.task.prompt_digest:
        problems.append("prompt_digest is not the Task's")
    if st.model != result.model:
        problems.append(f"attests model {st.model!r}, the Result says {result.model!r}")
    if verified.signer != s.agent:
        problems.append(f"signed by {verified.signer}, not the agent")
    if problems:
        raise fail("; ".join(problems), frame)
    return f"signed by the agent; binds output, task, attempt {st.attempt}, award and requester"


@check(
    "cancel.stops",
    "Stops on Cancel",
    sections=("3.13", "5.6"),
    requirement="""After a Cancel of the running attempt (sent right after its Award) the agent stops: no Result
    for that attempt follows; a Failure, if any, has reason `cancelled`.""",
)
async def cancel_stops(s: KitSession) -> str:
    p = await s.bid_for()
    await s.sleep_until(p.window_close_ns + 5 * MS)
    award = s.award(p.task, p.bid)
    cancel = s.cancel(p.task, award.attempt)
    await s.send_all([s.seal(award), s.seal(cancel)])
    watch_ms = min(p.message.est_latency_ms + s.config.quiet_ms + GRACE_MS, 3 * s.config.timeout_ms)
    await s.sleep_until(s.until(watch_ms))
    results = s.select(about(p.task.task_id, Result, attempt=award.attempt))
    if results:
        raise fail("a Result for the cancelled attempt arrived after the Cancel", *results)
    failures = s.select(about(p.task.task_id, Failure, attempt=award.attempt))
    wrong = [f for f in failures if isinstance(f.message, Failure) and f.message.reason != "cancelled"]
    if wrong:
        raise fail("a Failure after the Cancel has a reason other than `cancelled`", *wrong)
    return f"no Result within {watch_ms} ms of the Cancel" + (" (Failure(cancelled))" if failures else "")
