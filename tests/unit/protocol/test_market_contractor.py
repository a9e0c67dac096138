"""The contractor machine: whether to bid, capacity reserved while a bid is valid and released on every path,
awards accepted or rejected, execution reports, cancel, lease, shutdown, heartbeats."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.protocol.actions import (
    BROADCAST,
    Abort,
    Action,
    CancelTimer,
    Execute,
    Reject,
    RejectReason,
    Send,
    SetTimer,
    new_message_id,
)
from accord.protocol.codec import encode
from accord.protocol.contractor import (
    SOLICITED_ADVERT_GAP_MS,
    AgentState,
    ContractorMachine,
    ContractorProfile,
    JobState,
    quote_task,
)
from accord.protocol.digests import payload_digest
from accord.protocol.events import (
    Distrusted,
    ExecutionDone,
    ExecutionFailed,
    ExecutionProgress,
    Received,
    Shutdown,
    Solicited,
    Start,
    TimerFired,
    TimerKind,
)
from accord.protocol.messages import (
    MAX_SKEW_NS,
    Advertise,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    Connectivity,
    Decline,
    Failure,
    Mechanism,
    ModelOffer,
    Privacy,
    Progress,
    ReasonCode,
    Result,
    Task,
    Tier,
    Timings,
    Usage,
    Withdraw,
)
from accord.protocol.pricing import Refusal, ResourceModel
from tests.support.market_world import BASE_NS, MS, agent_id, constraints

NOW = BASE_NS
REQ = agent_id("requester")
ME = agent_id("contractor")
DIGEST = "ee" * 32
_ids = random.Random(5)

FAST_SHEET = ModelOffer(
    name="fast", context_window=4_000, tokens_per_s=1_000.0, price_out_per_1k_micros=2_000, quality=0.7, ttft_ms=10
)
GOOD_SHEET = ModelOffer(
    name="good", context_window=8_000, tokens_per_s=250.0, price_out_per_1k_micros=9_000, quality=0.9, ttft_ms=10
)
FAST = ResourceModel.from_offer(FAST_SHEET, slots=2)
GOOD = ResourceModel.from_offer(GOOD_SHEET, slots=2)
PROFILE = ContractorProfile(
    name="c",
    tier=Tier.EDGE,
    region="eu",
    residency=("eu",),
    privacy=(Privacy.PUBLIC, Privacy.INTERNAL),
    models=(FAST, GOOD),
    slots=2,
    bid_hold_ms=200,
)


def mid() -> str:
    return new_message_id(_ids)


def task(**kw: object) -> Task:
    c = {k: kw.pop(k) for k in ("residency", "privacy", "tiers", "min_quality") if k in kw}
    fields: dict[str, object] = {
        "id": mid(),
        "sender": REQ,
        "ts": NOW,
        "task_id": mid(),
        "prompt_digest": DIGEST,
        "max_output_tokens": 100,
        "bid_window_ms": 50,
        "constraints": constraints(
            NOW, deadline_ms=int(kw.pop("deadline_ms", 2_000)), max_price=int(kw.pop("max_price", 10_000)), **c
        ),
    }
    fields.update(kw)
    return Task(**fields)  # type: ignore[arg-type]


class Agent:
    def __init__(self, profile: ContractorProfile = PROFILE) -> None:
        self.m = ContractorMachine(ME, profile, rng=random.Random(3))
        self.now = NOW
        self.m.handle(Start(), now=NOW)

    def at(self, ms: int) -> Agent:
        self.now = NOW + ms * MS
        return self

    def handle(self, event: object) -> list[Action]:
        out = self.m.handle(event, now=self.now)  # type: ignore[arg-type]
        self.m.check_invariants()
        assert 0 <= self.m.used_slots <= self.m.profile.slots
        return out

    def offer(self, t: Task, *, broadcast: bool = False) -> list[Action]:
        return self.handle(Received(t, broadcast=broadcast))

    def bid_for(self, t: Task) -> Bid:
        (bid,) = sent(self.offer(t), Bid)
        return bid

    def award(self, t: Task, bid: Bid | None, **kw: object) -> tuple[Award, list[Action]]:
        fields: dict[str, object] = {
            "id": mid(),
            "sender": REQ,
            "ts": self.now,
            "task_id": t.task_id,
            "attempt": 1,
            "winner": ME,
            "bid_id": bid.id if bid else mid(),
            "bid_digest": payload_digest(encode(bid)) if bid else DIGEST,
            "price_micros": bid.price_micros if bid else 10_000,
            "ack_by_ns": self.now + 100 * MS,
            "lease_until_ns": self.now + 1_000 * MS,
        }
        fields.update(kw)
        award = Award(**fields)  # type: ignore[arg-type]
        return award, self.handle(Received(award))


def sent(actions: Sequence[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, kind)]


def executed(actions: Sequence[Action]) -> list[Execute]:
    """The work an Award started: an accepted Award is executed (its AwardAck may be held, see below)."""
    return [a for a in actions if isinstance(a, Execute)]


# --- bidding -----------------------------------------------------------------------------------------------------
def test_bids_its_best_model_and_reserves_a_slot() -> None:
    ag = Agent()
    t = task()
    out = ag.offer(t)
    (bid,) = sent(out, Bid)
    assert out[0].to == REQ  # type: ignore[union-attr]
    # score = q - price - 0.01 * latency_s: fast 0.7 - 0.0002 - 0.0011, good 0.9 - 0.0009 - 0.0041
    assert (bid.model, bid.price_micros, bid.est_latency_ms, bid.quality) == ("good", 900, 410, 0.9)
    assert bid.valid_until_ns == NOW + 250 * MS and bid.task_id == t.task_id and bid.sender == ME
    assert (bid.tier, bid.region, bid.residency) == (Tier.EDGE, "eu", ["eu"])
    assert SetTimer(TimerKind.BID_EXPIRY, bid.valid_until_ns, t.task_id) in out
    assert ag.m.used_slots == 1 and ag.m.job_state(t.task_id) is JobState.BIDDING


@pytest.mark.parametrize(
    ("t", "reason"),
    [
        (task(kind="code"), ReasonCode.UNSUPPORTED_KIND),
        (task(residency="us"), ReasonCode.RESIDENCY),
        (task(privacy=Privacy.CONFIDENTIAL), ReasonCode.PRIVACY),
        (task(tiers=(Tier.CLOUD,)), ReasonCode.OTHER),
        (task(max_price=100), ReasonCode.OVER_BUDGET),
        # the requester's clock may be max_skew (5 s) behind ours: past that, or too slow to finish within it
        (task(deadline_ms=-5_001), ReasonCode.DEADLINE_INFEASIBLE),
        (task(deadline_ms=-2_000, max_output_tokens=3_900, max_price=100_000), ReasonCode.DEADLINE_INFEASIBLE),
        (task(min_quality=0.95), ReasonCode.QUALITY_BELOW_MIN),
        (task(est_input_tokens=7_950), ReasonCode.CONTEXT_TOO_LONG),
    ],
)
def test_declines_with_a_reason(t: Task, reason: ReasonCode) -> None:
    refusal = quote_task(PROFILE, t, now=NOW)
    assert isinstance(refusal, Refusal) and refusal.reason is reason
    ag = Agent()
    (decline,) = sent(ag.offer(t), Decline)
    assert decline.reason == reason.value and decline.task_id == t.task_id
    assert ag.offer(task(**{}), broadcast=True)  # a feasible broadcast still gets a bid
    silent = Agent()
    assert silent.offer(t, broadcast=True) == []  # infeasible broadcast: no answer
    assert silent.m.used_slots == 0


def test_busy_when_every_slot_is_reserved() -> None:
    ag = Agent()
    ag.bid_for(task())
    ag.bid_for(task())
    (decline,) = sent(ag.offer(task()), Decline)
    assert decline.reason == "busy" and ag.m.used_slots == 2


def test_posted_price_bids_the_posted_price_if_it_covers_the_cost() -> None:
    ag = Agent()
    bid = ag.bid_for(task(mechanism=Mechanism.POSTED_PRICE, max_price=5_000))
    assert bid.price_micros == 5_000
    assert sent(Agent().offer(task(mechanism=Mechanism.POSTED_PRICE, max_price=100)), Decline)


def test_latency_grows_with_the_queue_behind_a_one_slot_backend() -> None:
    one_slot = ResourceModel.from_offer(FAST_SHEET, slots=1)  # one request at a time: the others wait
    ag = Agent(ContractorProfile(name="s", tier=Tier.EDGE, region="eu", models=(one_slot,), slots=3))
    latencies = [ag.bid_for(task()).est_latency_ms for _ in range(3)]
    assert latencies == [110, 220, 330]


# --- awards ------------------------------------------------------------------------------------------------------
def test_award_is_acked_and_executed() -> None:
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    award, out = ag.at(60).award(t, bid)
    assert Execute(t, award, "good") in out
    assert CancelTimer(TimerKind.BID_EXPIRY, t.task_id) in out
    # its lease timer allows the requester's clock max_skew (spec 9.3)
    assert SetTimer(TimerKind.LEASE, award.lease_until_ns + MAX_SKEW_NS, t.task_id) in out
    assert ag.m.job_state(t.task_id) is JobState.RUNNING and ag.m.used_slots == 1
    # the AwardAck is held for ack_delay_ms (20 ms, under a quarter of the 100 ms ack window), then sent
    assert sent(out, AwardAck) == [] and SetTimer(TimerKind.SEND_ACK, ag.now + 20 * MS, t.task_id) in out
    (ack,) = sent(ag.at(80).handle(TimerFired(TimerKind.SEND_ACK, t.task_id)), AwardAck)
    assert (ack.task_id, ack.attempt, ack.award_id, ack.sender) == (t.task_id, 1, award.id, ME)
    # a duplicated award gets the same ack again (its first copy may have been lost)
    again = ag.handle(Received(award))
    assert sent(again, AwardAck) == [ack]
    out = ag.at(70).handle(ExecutionProgress(t.task_id, 1, "he", 1))
    (p,) = sent(out, Progress)
    assert (p.seq, p.delta, p.output_tokens) == (0, "he", 1)
    (p2,) = sent(ag.handle(ExecutionProgress(t.task_id, 1, "llo", 2)), Progress)
    (p3,) = sent(ag.handle(ExecutionProgress(t.task_id, 1, "!", 3)), Progress)
    assert [(q.seq, q.delta, q.output_tokens) for q in (p2, p3)] == [(1, "llo", 2), (2, "!", 3)]  # consecutive
    usage, timings = Usage(input_tokens=12, output_tokens=3), Timings(queued_ms=1, ttft_ms=20, total_ms=240)
    out = ag.at(300).handle(ExecutionDone(t.task_id, 1, "hello", usage, timings, attestation=b"dsse"))
    (result,) = sent(out, Result)
    assert (result.award_id, result.model, result.output, result.attestation) == (
        award.id,
        "good",
        "hello",
        b"dsse",
    )
    assert (result.usage, result.timings) == (usage, timings)  # what the backend reported, for the requester
    assert ag.m.used_slots == 0 and ag.m.job_state(t.task_id) is JobState.DONE
    assert [a.reason for a in ag.handle(ExecutionDone(t.task_id, 1, "again")) if isinstance(a, Reject)] == [
        RejectReason.STALE
    ]


def test_a_result_within_the_ack_delay_is_the_acknowledgement() -> None:
    """Spec 5.6: a Result sent while the AwardAck is held acknowledges the award; the AwardAck never goes out."""
    ag = Agent()
    t = task()
    _, out = ag.at(60).award(t, ag.bid_for(t))
    assert sent(out, AwardAck) == [] and (TimerKind.SEND_ACK, t.task_id) in ag.m.timers
    out = ag.at(65).handle(ExecutionDone(t.task_id, 1, "quick"))
    assert sent(out, Result) and CancelTimer(TimerKind.SEND_ACK, t.task_id) in out
    assert (TimerKind.SEND_ACK, t.task_id) not in ag.m.timers
    assert ag.at(80).handle(TimerFired(TimerKind.SEND_ACK, t.task_id)) == []  # a late timer sends nothing


@pytest.mark.parametrize(
    "report",
    [
        ExecutionProgress("", 1, "he", 1),
        ExecutionFailed("", 1, ReasonCode.BACKEND_ERROR, "boom"),
    ],
)
def test_progress_or_a_failure_within_the_ack_delay_acknowledges_too(
    report: ExecutionProgress | ExecutionFailed,
) -> None:
    ag = Agent()
    t = task()
    ag.at(60).award(t, ag.bid_for(t))
    out = ag.at(61).handle(msgspec.structs.replace(report, task_id=t.task_id))
    assert sent(out, Progress | Failure) and CancelTimer(TimerKind.SEND_ACK, t.task_id) in out
    assert sent(out, AwardAck) == [] and ag.at(90).handle(TimerFired(TimerKind.SEND_ACK, t.task_id)) == []


def test_a_cancel_while_the_ack_is_held_drops_it() -> None:
    ag = Agent()
    t = task()
    ag.at(60).award(t, ag.bid_for(t))
    out = ag.at(62).handle(Received(Cancel(id=mid(), sender=REQ, ts=ag.now, task_id=t.task_id)))
    assert CancelTimer(TimerKind.SEND_ACK, t.task_id) in out and sent(out, AwardAck) == []


@pytest.mark.parametrize(
    ("ack_delay_ms", "ack_window_ms", "held_ms"),
    [(20, 100, 20), (20, 40, 10), (50, 1_000, 50), (0, 100, 0)],
)
def test_the_ack_is_held_at_most_ack_delay_and_a_quarter_of_the_ack_window(
    ack_delay_ms: int, ack_window_ms: int, held_ms: int
) -> None:
    ag = Agent(msgspec.structs.replace(PROFILE, ack_delay_ms=ack_delay_ms))
    t = task()
    _, out = ag.at(60).award(t, ag.bid_for(t), ack_by_ns=NOW + (60 + ack_window_ms) * MS)
    if held_ms == 0:  # no delay configured: the AwardAck goes out with the Execute, as before
        assert len(sent(out, AwardAck)) == 1 and (TimerKind.SEND_ACK, t.task_id) not in ag.m.timers
    else:
        assert sent(out, AwardAck) == [] and ag.m.timers[(TimerKind.SEND_ACK, t.task_id)] == ag.now + held_ms * MS


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"price_micros": 899}, "over_budget", "price 899 below 900"),
        # times on the requester's clock, judged with max_skew (5 s) to spare
        ({"lease_until_ns": NOW - 4_800 * MS}, "deadline_infeasible", "lease too short"),
        ({"ack_by_ns": NOW - 4_940 * MS}, "other", "ack deadline passed"),
    ],
)
def test_unacceptable_award_is_rejected_and_releases(change: dict[str, object], reason: str, detail: str) -> None:
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    _, out = ag.at(60).award(t, bid, **change)
    (reject,) = sent(out, AwardReject)
    assert (reject.reason, reject.detail) == (reason, detail) and ag.m.used_slots == 0
    assert ag.m.job_state(t.task_id) is JobState.RELEASED


@pytest.mark.parametrize("change", [{"bid_id": "0" * 32}, {"bid_digest": "0" * 64}])
def test_award_for_a_bid_we_never_made_is_rejected_without_changing_state(change: dict[str, object]) -> None:
    """Spec 7.5: a refused frame changes no state; our real bid still binds us (3.5) and its award still works."""
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    _, out = ag.at(60).award(t, bid, **change)
    (reject,) = sent(out, AwardReject)
    assert reject.reason == "other" and ag.m.used_slots == 1
    assert ag.m.job_state(t.task_id) is JobState.BIDDING
    _, out = ag.award(t, bid)
    assert executed(out) and ag.m.job_state(t.task_id) is JobState.RUNNING


def test_award_after_bid_expiry_or_for_unknown_task_is_rejected() -> None:
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    assert ag.at(250).handle(TimerFired(TimerKind.BID_EXPIRY, t.task_id)) == []
    assert ag.m.used_slots == 0 and ag.m.job_state(t.task_id) is JobState.RELEASED
    _, out = ag.award(t, bid)
    assert sent(out, AwardReject)[0].reason == "bid_expired"
    _, out = ag.award(task(), None)
    assert sent(out, AwardReject)[0].reason == "unknown_task"


def test_awards_and_cancels_from_strangers_are_ignored() -> None:
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    _, out = ag.award(t, bid, sender=agent_id("impostor"))
    assert [a.reason for a in out if isinstance(a, Reject)] == [RejectReason.NOT_REQUESTER]
    _, out = ag.award(t, bid, winner=agent_id("other"))
    assert [a.reason for a in out if isinstance(a, Reject)] == [RejectReason.MISMATCH]
    cancel = Cancel(id=mid(), sender=agent_id("impostor"), ts=NOW, task_id=t.task_id)
    assert [a.reason for a in ag.handle(Received(cancel)) if isinstance(a, Reject)] == [RejectReason.NOT_REQUESTER]
    assert ag.m.used_slots == 1


def test_direct_task_then_award() -> None:
    ag = Agent()
    t = task(mechanism=Mechanism.DIRECT)
    assert not sent(ag.offer(t), Bid) and ag.m.job_state(t.task_id) is JobState.OFFERED and ag.m.used_slots == 0
    award, out = ag.at(5).award(t, None, price_micros=900)
    (execute,) = executed(out)
    assert execute.model == "good" and ag.m.used_slots == 1
    del award


# --- release on every path ---------------------------------------------------------------------------------------
def test_cancel_releases_bidding_and_running() -> None:
    ag = Agent()
    t1, t2 = task(), task()
    ag.bid_for(t1)
    bid2 = ag.bid_for(t2)
    ag.handle(Received(Cancel(id=mid(), sender=REQ, ts=NOW, task_id=t1.task_id)))
    assert ag.m.used_slots == 1
    ag.at(60).award(t2, bid2)
    # a cancel of another attempt does not touch the running one
    stale = Cancel(id=mid(), sender=REQ, ts=NOW, task_id=t2.task_id, attempt=2)
    assert [a.reason for a in ag.handle(Received(stale)) if isinstance(a, Reject)] == [RejectReason.FENCED]
    out = ag.handle(Received(Cancel(id=mid(), sender=REQ, ts=NOW, task_id=t2.task_id, attempt=1)))
    assert Abort(t2.task_id, 1, ReasonCode.CANCELLED) in out and ag.m.used_slots == 0


def test_backend_failure_and_lease_expiry_release() -> None:
    ag = Agent()
    t1, t2 = task(), task()
    b1, b2 = ag.bid_for(t1), ag.bid_for(t2)
    ag.at(60).award(t1, b1)
    award2, _ = ag.award(t2, b2)
    (failure,) = sent(ag.handle(ExecutionFailed(t1.task_id, 1, ReasonCode.BACKEND_TIMEOUT, "slow")), Failure)
    assert (failure.reason, failure.detail) == ("backend_timeout", "slow") and ag.m.used_slots == 1
    out = ag.at((award2.lease_until_ns + MAX_SKEW_NS - NOW) // MS).handle(TimerFired(TimerKind.LEASE, t2.task_id))
    assert Abort(t2.task_id, 1, ReasonCode.LEASE_EXPIRED) in out
    (expired,) = sent(out, Failure)
    assert (expired.reason, expired.detail, expired.attempt) == ("lease_expired", "", 1) and ag.m.used_slots == 0


def test_shutdown_fails_running_work_withdraws_and_refuses_awards() -> None:
    ag = Agent()
    t1, t2 = task(), task()
    b1 = ag.bid_for(t1)
    ag.bid_for(t2)
    ag.at(60).award(t1, b1)
    out = ag.handle(Shutdown())
    assert sent(out, Failure)[0].reason == "shutdown" and Abort(t1.task_id, 1, ReasonCode.SHUTDOWN) in out
    assert sent(out, Withdraw) and ag.m.state is AgentState.STOPPED and ag.m.used_slots == 0
    _, out = ag.award(t2, None)
    assert sent(out, AwardReject)[0].reason == "shutdown"
    assert ag.handle(TimerFired(TimerKind.HEARTBEAT)) == []


def test_reannounce_reevaluates_a_released_task_and_resends_a_standing_bid() -> None:
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    again = msgspec_replace(t, id=mid(), attempt=2)
    assert sent(ag.offer(again), Bid) == [bid]  # the bid stands: sent again in case it was lost
    assert [a.reason for a in ag.offer(t) if isinstance(a, Reject)] == [RejectReason.DUPLICATE]
    ag.at(250).handle(TimerFired(TimerKind.BID_EXPIRY, t.task_id))
    third = msgspec_replace(t, id=mid(), attempt=3)
    (fresh,) = sent(ag.offer(third), Bid)
    assert fresh.id != bid.id and ag.m.used_slots == 1


def msgspec_replace(t: Task, **kw: object) -> Task:

    return msgspec.structs.replace(t, **kw)


def test_heartbeats_carry_load_and_sequence() -> None:
    m = ContractorMachine(ME, PROFILE, rng=random.Random(1))
    out = m.handle(Start(), now=NOW)
    (adv,) = sent(out, Advertise)
    assert out[0].to == BROADCAST and (adv.seq, adv.load, adv.slots) == (0, 0, 2)  # type: ignore[union-attr]
    assert SetTimer(TimerKind.HEARTBEAT, NOW + PROFILE.ttl_ms * MS // 3) in out
    t = task()
    m.handle(Received(t), now=NOW)
    assert m.handle(TimerFired(TimerKind.HEARTBEAT), now=NOW + MS) == []  # early: stale
    (adv2,) = sent(m.handle(TimerFired(TimerKind.HEARTBEAT), now=NOW + 3_400 * MS), Advertise)
    assert (adv2.seq, adv2.load) == (1, 1)  # the bid holds its slot
    m.handle(TimerFired(TimerKind.BID_EXPIRY, t.task_id), now=NOW + 3_401 * MS)
    (adv3,) = sent(m.handle(TimerFired(TimerKind.HEARTBEAT), now=NOW + 7_000 * MS), Advertise)
    assert (adv3.seq, adv3.load) == (2, 0)
    assert m.job_state(t.task_id) is JobState.NONE  # forgotten after the task's deadline


def test_a_service_ping_brings_the_next_advert_forward() -> None:
    """Solicited (a NATS service PING): the heartbeat moves to at most SOLICITED_ADVERT_GAP_MS after the last
    advert, never later than it was; before Start and after Shutdown it changes nothing."""
    m = ContractorMachine(ME, PROFILE, rng=random.Random(1))
    assert m.handle(Solicited(), now=NOW) == []  # not online yet
    m.handle(Start(), now=NOW)
    gap = SOLICITED_ADVERT_GAP_MS * MS
    assert m.handle(Solicited(), now=NOW + MS) == [SetTimer(TimerKind.HEARTBEAT, NOW + gap)]
    assert m.handle(Solicited(), now=NOW + 2 * MS) == []  # already due then: one advert for a burst of pings
    (adv,) = sent(m.handle(TimerFired(TimerKind.HEARTBEAT), now=NOW + gap), Advertise)
    assert adv.seq == 1
    later = NOW + gap + 2_000 * MS
    assert m.handle(Solicited(), now=later) == [SetTimer(TimerKind.HEARTBEAT, later)]  # at once
    m.check_invariants()
    m.handle(Shutdown(), now=later)
    assert m.handle(Solicited(), now=later + MS) == []
    m.check_invariants()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["task", "award", "cancel", "expire", "done", "fail", "lease"]), st.integers(0, 3)
        ),
        max_size=40,
    )
)
def test_capacity_stays_within_bounds_under_any_sequence(ops: list[tuple[str, int]]) -> None:
    ag = Agent()
    tasks = [task() for _ in range(4)]
    bids: dict[int, Bid] = {}
    for step, (op, i) in enumerate(ops):
        t = tasks[i]
        ag.at(step * 20)
        if op == "task":
            for b in sent(ag.offer(msgspec_replace(t, id=mid(), attempt=1 + step)), Bid):
                bids[i] = b
        elif op == "award":
            ag.award(t, bids.get(i))
        elif op == "cancel":
            ag.handle(Received(Cancel(id=mid(), sender=REQ, ts=ag.now, task_id=t.task_id)))
        elif op == "expire":
            ag.handle(TimerFired(TimerKind.BID_EXPIRY, t.task_id))
        elif op == "lease":
            ag.handle(TimerFired(TimerKind.LEASE, t.task_id))
        elif op == "done":
            ag.handle(ExecutionDone(t.task_id, 1, "x"))
        else:
            ag.handle(ExecutionFailed(t.task_id, 1))
    ag.handle(Shutdown())
    assert ag.m.used_slots == 0


# --- losing: a Cancel releases a bid at once (spec 5.9) ----------------------------------------------------------
def test_losing_bid_is_released_and_forgotten_on_the_task_wide_cancel() -> None:
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    assert ag.m.used_slots == 1
    lost = Cancel(id=mid(), sender=REQ, ts=NOW, task_id=t.task_id, reason="superseded")
    out = ag.at(120).handle(Received(lost))
    assert out == [CancelTimer(TimerKind.BID_EXPIRY, t.task_id)]  # nothing is sent back
    assert ag.m.used_slots == 0 and ag.m.job_state(t.task_id) is JobState.RELEASED
    assert (TimerKind.BID_EXPIRY, t.task_id) not in ag.m.timers
    # idempotent: the same Cancel again (or another copy) changes nothing
    assert rejected(ag.handle(Received(lost))) == [RejectReason.DUPLICATE]
    assert ag.m.used_slots == 0
    # the task is over for us: a re-announce that arrives late gets no new bid, an Award no ack
    again = msgspec_replace(t, id=mid(), attempt=2)
    assert rejected(ag.offer(again)) == [RejectReason.TERMINAL] and ag.m.used_slots == 0
    _, out = ag.award(t, bid)
    assert not executed(out) and sent(out, AwardReject) and ag.m.used_slots == 0
    # the freed slot is usable at once by another task
    assert ag.bid_for(task()) and ag.bid_for(task()) and ag.m.used_slots == 2


def test_cancel_of_an_attempt_whose_award_never_arrived_releases_the_bid() -> None:
    """The requester awarded us attempt 1, the Award was lost, the ack timed out: the Cancel naming attempt 1
    reaches us while we only hold the bid. We can never win this task again (no agent gets two attempts)."""
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    out = ag.at(200).handle(Received(Cancel(id=mid(), sender=REQ, ts=NOW, task_id=t.task_id, attempt=1)))
    assert CancelTimer(TimerKind.BID_EXPIRY, t.task_id) in out and ag.m.used_slots == 0
    _, out = ag.award(t, bid, ack_by_ns=ag.now + 100 * MS)  # the lost Award turns up after all
    assert not executed(out) and sent(out, AwardReject) and ag.m.used_slots == 0


def test_cancel_for_a_direct_offer_and_for_unknown_tasks() -> None:
    ag = Agent()
    t = task(mechanism=Mechanism.DIRECT)
    ag.offer(t)
    ag.handle(Received(Cancel(id=mid(), sender=REQ, ts=NOW, task_id=t.task_id)))
    assert ag.m.job_state(t.task_id) is JobState.RELEASED and ag.m.used_slots == 0
    unknown = Cancel(id=mid(), sender=REQ, ts=NOW, task_id=mid())
    assert rejected(ag.handle(Received(unknown))) == [RejectReason.UNKNOWN_TASK]
    assert ag.m.job_state(unknown.task_id) is JobState.NONE


def test_a_bid_released_by_expiry_still_rebids_but_not_after_a_cancel() -> None:
    ag = Agent()
    t = task()
    ag.bid_for(t)
    ag.at(250).handle(TimerFired(TimerKind.BID_EXPIRY, t.task_id))
    assert sent(ag.offer(msgspec_replace(t, id=mid(), attempt=2)), Bid)  # re-announce: evaluated afresh
    ag.handle(Received(Cancel(id=mid(), sender=REQ, ts=NOW, task_id=t.task_id)))
    assert not sent(ag.offer(msgspec_replace(t, id=mid(), attempt=3)), Bid) and ag.m.used_slots == 0


def rejected(actions: Sequence[Action]) -> list[RejectReason]:
    return [a.reason for a in actions if isinstance(a, Reject)]


@pytest.mark.asyncio
async def test_agent_shells_free_the_losers_slots_when_the_task_completes() -> None:
    """Through the real shells on a MemoryBus: the losers' inboxes get the requester's signed Cancel, the Agent
    verifies it and feeds it to its machine, and their single slots are free long before their bids lapse."""
    import anyio

    from accord.bus.memory import MemoryBroker
    from accord.runtime.agent import Agent as AgentShell
    from accord.runtime.requester import Requester
    from accord.security.testing import Pki
    from tests.support.runtime_kit import make_profile, sim_backend, spec, wait_for, wait_registry

    broker = MemoryBroker(seed=4)
    pki = Pki(random.Random(4))
    agents = [
        AgentShell(
            pki.agent(f"loser-test-{i}", tier=Tier.CLOUD, region="local", residency=("eu",)),
            make_profile(f"loser-test-{i}", price_out_per_1k_micros=100 * (i + 1), slots=1, bid_hold_ms=60_000),
            {"sim-small": sim_backend()},
            bus=broker.bus(),
            trust=pki.trust,
            rng=random.Random(i),
        )
        for i in range(3)
    ]
    req = Requester(pki.agent("req"), bus=broker.bus(), trust=pki.trust, rng=random.Random(7))
    async with anyio.create_task_group() as tg:
        await tg.start(req.run)
        for a in agents:
            await tg.start(a.run)
        await wait_registry(req, agents)
        outcome = await req.submit(spec(deadline_ms=30_000))
        await wait_for(lambda: all(a.machine.free_slots == 1 for a in agents), timeout_s=10, what="slots freed")
        tg.cancel_scope.cancel()
    assert outcome.agent_id == agents[0].id
    assert [a.stats.bids for a in agents] == [1, 1, 1]
    assert [a.stats.cancels for a in agents] == [0, 1, 1]  # the winner is not told; each loser once
    assert all(a.stats.refused == 0 for a in agents)


def test_work_for_a_revoked_requester_stops_and_it_is_told_nothing() -> None:
    ag = Agent()
    running, bidding = task(), task()
    bid = ag.bid_for(running)
    ag.bid_for(bidding)
    ag.at(60).award(running, bid)
    assert ag.m.open_requesters() == {REQ} and ag.m.used_slots == 2
    out = ag.handle(Distrusted(REQ))
    assert Abort(running.task_id, 1, ReasonCode.VERIFICATION_FAILED) in out
    assert not [a for a in out if isinstance(a, Send)] and ag.m.used_slots == 0
    assert ag.m.open_requesters() == set()
    assert sent(ag.offer(task(task_id=bidding.task_id, attempt=2)), Bid) == []  # closed: no new bid for it


def test_refusals_name_what_they_refuse() -> None:
    """Declines carry the announced attempt, AwardRejects a detail only when there is one, and every Reject
    names the message it refuses."""
    ag = Agent()
    t = task(residency="us", attempt=2)
    (decline,) = sent(ag.offer(t), Decline)
    assert (decline.task_id, decline.attempt, decline.reason, decline.detail) == (t.task_id, 2, "residency", "")
    _, out = ag.award(task(), None)
    (unknown,) = sent(out, AwardReject)
    assert (unknown.reason, unknown.detail) == ("unknown_task", "")
    cancelled = task()
    bid = ag.bid_for(cancelled)
    ag.handle(Received(Cancel(id=mid(), sender=REQ, ts=NOW, task_id=cancelled.task_id)))
    _, out = ag.award(cancelled, bid)
    (late,) = sent(out, AwardReject)
    assert (late.reason, late.detail) == ("cancelled", "")
    stray = bid  # a requester's message sent to a contractor
    assert ag.handle(Received(stray)) == [Reject(RejectReason.UNEXPECTED, stray)]
    ag.handle(Shutdown())
    after = task()
    assert ag.handle(Received(after)) == [Reject(RejectReason.STOPPED, after)]
    award, out = ag.award(after, None)
    assert out[1:] == [Reject(RejectReason.STOPPED, award)]
    assert sent(out[:1], AwardReject)[0].reason == "shutdown"


def test_an_award_at_the_bids_last_instant_is_too_late() -> None:
    """A bid is valid strictly before valid_until_ns: an award arriving at that instant (before the expiry
    timer fired) is refused and releases the slot."""
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    _, out = ag.at((bid.valid_until_ns - NOW) // MS).award(t, bid)
    (reject,) = sent(out, AwardReject)
    assert (reject.reason, reject.detail) == ("bid_expired", "") and ag.m.used_slots == 0


def test_a_direct_award_needs_a_free_slot() -> None:
    """An OFFERED job holds no slot: its award is refused as busy while every slot is taken by bids."""
    ag = Agent()
    direct = task(mechanism=Mechanism.DIRECT)
    assert not [a for a in ag.offer(direct) if isinstance(a, Send)], "a direct task is not bid on"
    ag.bid_for(task())
    ag.bid_for(task())
    _, out = ag.at(5).award(direct, None, price_micros=900)
    (reject,) = sent(out, AwardReject)
    assert (reject.reason, reject.detail) == ("busy", "") and ag.m.used_slots == 2
    assert ag.m.job_state(direct.task_id) is JobState.RELEASED


def test_the_profile_advertises_each_models_sheet() -> None:
    assert PROFILE.offers() == (FAST.offer(), GOOD.offer())
    assert sent(ContractorMachine(ME, PROFILE, rng=random.Random(1)).handle(Start(), now=NOW), Advertise)[
        0
    ].models == list(PROFILE.offers())


REVERSED = ContractorProfile(
    name="c", tier=Tier.EDGE, region="eu", residency=("eu",), models=(GOOD, FAST), slots=2, bid_hold_ms=200
)


@pytest.mark.parametrize(
    ("profile", "t", "model"),
    [
        (PROFILE, task(min_quality=0.8), "good"),  # fast's quality is below the floor
        (PROFILE, task(est_input_tokens=3_950, deadline_ms=10_000), "good"),  # fast's window is too small
        (REVERSED, task(max_price=500), "fast"),  # good is over budget
        (REVERSED, task(deadline_ms=300), "fast"),  # good is too slow
    ],
)
def test_a_model_that_cannot_take_the_task_leaves_the_others_in_the_running(
    profile: ContractorProfile, t: Task, model: str
) -> None:
    quote = quote_task(profile, t, now=NOW)
    assert not isinstance(quote, Refusal) and quote.model == model


@pytest.mark.parametrize(
    "t",
    [
        task(min_quality=0.9),  # quality exactly at the floor
        task(max_price=900),  # price exactly the budget
        task(deadline_ms=460),  # done exactly at the deadline: 50 ms of bid window, then 410 ms
    ],
)
def test_limits_are_inclusive(t: Task) -> None:
    quote = quote_task(PROFILE, t, now=NOW)
    assert not isinstance(quote, Refusal) and (quote.model, quote.price_micros) == ("good", 900)


def test_work_starts_after_the_bid_window_except_for_a_direct_task() -> None:
    """A bid is priced for work that starts when the window closes; a direct task's starts now."""
    late = task(deadline_ms=2_000, bid_window_ms=1_950)
    refusal = quote_task(PROFILE, late, now=NOW)
    assert isinstance(refusal, Refusal) and refusal.reason is ReasonCode.DEADLINE_INFEASIBLE
    direct = msgspec_replace(late, mechanism=Mechanism.DIRECT)
    assert not isinstance(quote_task(PROFILE, direct, now=NOW), Refusal)
    halfway = quote_task(PROFILE, late, now=NOW - 1_900 * MS)  # asked early: starts at ts + window all the same
    assert isinstance(halfway, Refusal)


def test_the_profiles_overhead_adds_to_every_latency() -> None:
    slow = msgspec_replace_profile(PROFILE, overhead_ms=100)
    quote = quote_task(slow, task(), now=NOW)
    assert not isinstance(quote, Refusal) and (quote.model, quote.est_latency_ms) == ("good", 510)


def msgspec_replace_profile(p: ContractorProfile, **kw: object) -> ContractorProfile:
    import msgspec

    return msgspec.structs.replace(p, **kw)


def test_a_bid_names_its_attempt_and_expires_with_its_validity() -> None:
    ag = Agent()
    t = task(attempt=2)
    bid = ag.bid_for(t)
    assert (bid.attempt, bid.expires_ns) == (2, bid.valid_until_ns)


def test_an_award_for_a_declined_task_gives_the_decline_reason() -> None:
    ag = Agent()
    t = task(residency="us")
    ag.offer(t)
    _, out = ag.award(t, None)
    assert sent(out, AwardReject)[0].reason == "residency"
    assert rejected(ag.offer(t)) == [RejectReason.DUPLICATE]  # the same attempt again: not evaluated afresh


def test_a_cancelled_running_attempt_closes_the_task() -> None:
    """Once its attempt was revoked the agent is finished with the task: a re-announce gets no bid."""
    ag = Agent()
    t = task()
    ag.at(60).award(t, ag.bid_for(t))
    ag.handle(Received(Cancel(id=mid(), sender=REQ, ts=NOW, task_id=t.task_id, attempt=1)))
    assert rejected(ag.offer(msgspec_replace(t, id=mid(), attempt=2))) == [RejectReason.TERMINAL]
    assert ag.m.used_slots == 0


def test_adverts_carry_the_profile() -> None:
    linked = ResourceModel.from_offer(FAST_SHEET, Connectivity(metered=True, rtt_ms=40, bandwidth_kbps=8_000))
    profile = msgspec_replace_profile(PROFILE, skills=("chat", "code"), ttl_ms=6_000, models=(linked,))
    (adv,) = sent(ContractorMachine(ME, profile, rng=random.Random(1)).handle(Start(), now=NOW), Advertise)
    assert (adv.name, adv.tier, adv.region, adv.residency, adv.skills, adv.ttl_ms) == (
        "c",
        Tier.EDGE,
        "eu",
        ["eu"],
        ["chat", "code"],
        6_000,
    )
    assert adv.connectivity == Connectivity(metered=True, rtt_ms=40, bandwidth_kbps=8_000)


def test_a_lease_that_exactly_fits_the_work_is_taken() -> None:
    ag = Agent()
    t = task()
    bid = ag.bid_for(t)
    _, out = ag.at(60).award(t, bid, lease_until_ns=NOW + (60 + bid.est_latency_ms) * MS)
    assert executed(out) and ag.m.job_state(t.task_id) is JobState.RUNNING
