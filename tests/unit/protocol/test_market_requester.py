"""The requester machine: rounds, awards, fencing, re-awards, deadlines, persistence, targeted and direct calls."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.errors import LocalProtocolError
from accord.protocol.actions import (
    BROADCAST,
    Accept,
    Action,
    AttemptEnded,
    CancelTimer,
    Fail,
    Multicast,
    Reject,
    RejectReason,
    ReportProgress,
    Send,
    SetTimer,
    new_message_id,
)
from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.events import CancelTask, Distrusted, Received, Recovered, Start, TimerFired, TimerKind
from accord.protocol.market import Credentials
from accord.protocol.messages import (
    MAX_SKEW_NS,
    MAX_TEXT,
    Advertise,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    ChatMessage,
    Decline,
    Failure,
    Mechanism,
    ModelOffer,
    Progress,
    ReasonCode,
    Result,
    Role,
    Task,
    Tier,
)
from accord.protocol.registry import Registry
from accord.protocol.requester import RequesterConfig, RequesterMachine, RequesterState, TaskSpec, frame_problem
from tests.support.market_world import BASE_NS, CLOUD_EU, MS, PROFILES, World, agent_id, constraints

NOW = BASE_NS
REQ = agent_id("requester")
A, B, C, D = (agent_id(n) for n in "ABCD")
_ids = random.Random(99)


def mid() -> str:
    return new_message_id(_ids)


class Harness:
    """One requester machine driven by hand: crafted peer messages in, actions out, invariants after each step."""

    def __init__(
        self,
        *,
        deadline_ms: int = 2_000,
        max_price: int = 10_000,
        mechanism: Mechanism = Mechanism.FIRST_PRICE,
        window_ms: int = 50,
        forged: Sequence[str] = (),
        untrusted: Sequence[str] = (),
        registry: Registry | None = None,
        config: RequesterConfig | None = None,
        residency: str | None = None,
        agent: str | None = None,
    ) -> None:
        self.forged = set(forged)
        self.untrusted = set(untrusted)
        self.verified: list[str] = []
        self.spec = TaskSpec(
            constraints=constraints(NOW, deadline_ms=deadline_ms, max_price=max_price, residency=residency),
            mechanism=mechanism,
            bid_window_ms=window_ms,
            max_output_tokens=100,
        )
        self.registry = registry
        self.config = config or RequesterConfig(ack_timeout_ms=100, lease_margin_ms=100)
        self.m = RequesterMachine(
            REQ,
            self.spec,
            rng=random.Random(1),
            credentials=self.credentials,
            verify_bid=self.verify,
            registry=registry,
            config=self.config,
            agent=agent,
        )
        self.now = NOW
        self.log: list[Action] = []

    def credentials(self, agent: str) -> Credentials | None:
        """Every bidder here is certified as it claims (cloud, eu) unless it is ``untrusted``."""
        return None if agent in self.untrusted else CLOUD_EU

    def verify(self, bid_id: str, digest: str) -> bool:
        self.verified.append(bid_id)
        return bid_id not in self.forged

    @property
    def tid(self) -> str:
        return self.m.task_id

    def at(self, ms: int) -> Harness:
        self.now = NOW + ms * MS
        return self

    def handle(self, event: object) -> list[Action]:
        out = self.m.handle(event, now=self.now)  # type: ignore[arg-type]
        self.m.check_invariants()
        self.log += out
        return out

    def start(self) -> list[Action]:
        return self.handle(Start())

    def bid(self, sender: str, **kw: object) -> tuple[Bid, list[Action]]:
        fields: dict[str, object] = {
            "id": mid(),
            "sender": sender,
            "ts": self.now,
            "task_id": self.tid,
            "model": "m",
            "price_micros": 1_000,
            "est_latency_ms": 100,
            "quality": 0.8,
            "valid_until_ns": NOW + 1_500 * MS,
            "tier": Tier.CLOUD,
            "region": "eu",
            "residency": ["eu"],
        }
        fields.update(kw)
        bid = Bid(**fields)  # type: ignore[arg-type]
        data = encode(bid)
        return bid, self.handle(Received(bid, payload_digest(data)))

    def timer(self, kind: TimerKind) -> list[Action]:
        return self.handle(TimerFired(kind, self.tid))

    def close_window(self) -> list[Action]:
        return self.timer(TimerKind.BID_WINDOW)

    def ack(self, award: Award, sender: str | None = None, attempt: int | None = None) -> list[Action]:
        return self.handle(
            Received(
                AwardAck(
                    id=mid(),
                    sender=sender or award.winner,
                    ts=self.now,
                    task_id=self.tid,
                    attempt=attempt or award.attempt,
                    award_id=award.id,
                )
            )
        )

    def result(self, award: Award, sender: str | None = None, model: str = "m") -> tuple[Result, list[Action]]:
        r = Result(
            id=mid(),
            sender=sender or award.winner,
            ts=self.now,
            task_id=self.tid,
            attempt=award.attempt,
            award_id=award.id,
            model=model,
            output="answer",
        )
        return r, self.handle(Received(r))


def sent(actions: Sequence[Action], kind: type) -> list:  # type: ignore[type-arg]
    out = []
    for a in actions:
        if isinstance(a, Send | Multicast) and isinstance(a.message, kind):
            out.append(a.message)
    return out


def award_in(actions: Sequence[Action]) -> Award:
    (award,) = sent(actions, Award)
    return award


def rejected(actions: Sequence[Action]) -> list[RejectReason]:
    return [a.reason for a in actions if isinstance(a, Reject)]


# --- the round ---------------------------------------------------------------------------------------------------
def test_happy_round_first_price() -> None:
    h = Harness()
    out = h.start()
    (task,) = sent(out, Task)
    assert isinstance(out[1], Send) and out[1].to == BROADCAST
    assert task.task_id == h.tid and task.sender == REQ and task.ts == NOW and task.attempt == 1
    assert SetTimer(TimerKind.DEADLINE, NOW + 2_000 * MS, h.tid) in out
    assert SetTimer(TimerKind.BID_WINDOW, NOW + 50 * MS, h.tid) in out
    assert h.m.state is RequesterState.ANNOUNCED
    h.at(1).bid(A, price_micros=900, quality=0.7)
    bid_b, _ = h.at(2).bid(B, price_micros=800, quality=0.8)
    assert h.m.state is RequesterState.COLLECTING
    out = h.at(50).close_window()
    award = award_in(out)
    assert (award.winner, award.attempt, award.price_micros, award.bid_id) == (B, 1, 800, bid_b.id)
    assert award.bid_digest == payload_digest(encode(bid_b))
    # lease: max(promise 100 ms x factor 2, ack 100 + margin 100) after the award, whatever the deadline
    assert award.ack_by_ns == NOW + 150 * MS and award.lease_until_ns == NOW + 50 * MS + 200 * MS
    assert h.verified == [bid_b.id]  # only the winner's signature is checked
    assert h.m.state is RequesterState.AWARDED
    h.at(60).ack(award)
    assert h.m.state is RequesterState.ACKNOWLEDGED
    result, out = h.at(120).result(award)
    accept = next(a for a in out if isinstance(a, Accept))
    assert accept.result == result and accept.price_micros == 800 and h.m.paid_micros == 800
    assert AttemptEnded(B, h.tid, 1, True, None, "m") in out
    assert h.m.state is RequesterState.COMPLETED and not h.m.timers
    assert {a.kind for a in out if isinstance(a, CancelTimer)} == {TimerKind.LEASE, TimerKind.DEADLINE}


def test_bids_are_sealed_and_refused_when_late_duplicate_or_expired() -> None:
    h = Harness()
    h.start()
    bid, out = h.at(1).bid(A)
    assert out == [] and not sent(h.log, Award)  # nothing is awarded before the window closes
    assert rejected(h.handle(Received(bid))) == [RejectReason.DUPLICATE]
    _, out = h.bid(B, valid_until_ns=NOW - MAX_SKEW_NS)  # the bidder's clock: max_skew to spare
    assert rejected(out) == [RejectReason.EXPIRED]
    _, out = h.bid(C, task_id="f" * 32)
    assert rejected(out) == [RejectReason.UNKNOWN_TASK]
    h.at(50).close_window()
    _, out = h.at(51).bid(D, price_micros=1)
    assert rejected(out) == [RejectReason.LATE]


def test_second_price_pays_the_runner_up_price_and_verifies_it() -> None:
    h = Harness(mechanism=Mechanism.SECOND_PRICE)
    h.start()
    a, _ = h.bid(A, price_micros=500)
    b, _ = h.bid(B, price_micros=700)
    h.bid(C, price_micros=900)
    award = award_in(h.at(50).close_window())
    assert award.winner == A and award.price_micros == 700
    assert h.verified == [a.id, b.id]


def test_a_forged_runner_up_does_not_set_the_second_price() -> None:
    h = Harness(mechanism=Mechanism.SECOND_PRICE)
    h.start()
    a, _ = h.bid(A, price_micros=500)
    forged, _ = h.bid(B, price_micros=600)
    c, _ = h.bid(C, price_micros=700)
    h.forged.add(forged.id)
    out = h.at(50).close_window()
    assert RejectReason.FORGED in rejected(out)
    award = award_in(out)
    assert (award.winner, award.price_micros) == (A, 700)  # C's price, not the forger's
    assert h.verified == [a.id, forged.id, c.id]
    h = Harness(mechanism=Mechanism.SECOND_PRICE, max_price=10_000)
    h.start()
    h.bid(A, price_micros=500)
    forged, _ = h.bid(B, price_micros=600)
    h.forged.add(forged.id)
    assert award_in(h.at(50).close_window()).price_micros == 10_000  # no runner-up left: the reserve


def test_reports_naming_another_award_or_from_another_agent_change_nothing() -> None:
    """Ack, Result and Progress of the current attempt must come from its awardee and, where they name one,
    answer its award: else they are refused and the award stays as it was."""
    h = Harness()
    award = _two_bids(h)
    other = msgspec.structs.replace(award, id=mid())
    assert rejected(h.at(55).ack(other)) == [RejectReason.MISMATCH]
    _, out = h.result(other)
    assert rejected(out) == [RejectReason.MISMATCH]
    progress = Progress(id=mid(), sender=B, ts=h.now, task_id=h.tid, attempt=1, seq=1)
    assert rejected(h.handle(Received(progress))) == [RejectReason.NOT_AWARDEE]
    assert h.m.state is RequesterState.AWARDED and TimerKind.ACK in h.m.timers  # no implicit ack from B


def test_forged_winner_is_dropped_and_the_next_best_wins() -> None:
    h = Harness()
    h.start()
    forged, _ = h.bid(A, price_micros=1, quality=1.0)
    h.forged.add(forged.id)
    good, _ = h.bid(B, price_micros=900)
    out = h.at(50).close_window()
    assert RejectReason.FORGED in rejected(out)
    assert award_in(out).bid_id == good.id
    assert h.verified == [forged.id, good.id]


def test_ineligible_bids_never_win() -> None:
    h = Harness(residency="eu", untrusted=[A])
    h.start()
    h.bid(A, price_micros=1)  # untrusted
    h.bid(B, price_micros=1, residency=["us"])  # wrong residency
    h.bid(C, price_micros=10_001)  # over budget
    h.bid(D, est_latency_ms=5_000)  # too slow
    out = h.at(50).close_window()
    assert rejected(out).count(RejectReason.INELIGIBLE) == 4
    assert not sent(out, Award)  # nothing eligible: re-announced
    (task,) = sent(out, Task)
    assert task.attempt == 1 and h.m.state is RequesterState.ANNOUNCED
    assert h.verified == []


# --- re-award and fencing ----------------------------------------------------------------------------------------
def _two_bids(h: Harness) -> Award:
    h.start()
    h.at(1).bid(A, price_micros=100)
    h.at(2).bid(B, price_micros=200)
    return award_in(h.at(50).close_window())


def test_ack_timeout_reawards_with_the_next_attempt_and_fences_the_old_awardee() -> None:
    h = Harness()
    first = _two_bids(h)
    assert first.winner == A
    out = h.at(150).timer(TimerKind.ACK)
    (cancel,) = sent(out, Cancel)
    assert cancel.attempt == 1 and cancel.reason == "ack_timeout"
    assert AttemptEnded(A, h.tid, 1, False, ReasonCode.ACK_TIMEOUT, "m") in out
    second = award_in(out)
    assert (second.winner, second.attempt) == (B, 2)
    # the old awardee wakes up: its ack and its result are refused, not accepted
    assert rejected(h.at(160).ack(first)) == [RejectReason.FENCED]
    _, out = h.result(first)
    assert rejected(out) == [RejectReason.FENCED]
    assert h.m.state is RequesterState.AWARDED
    # an agent other than the awardee cannot speak for the attempt
    assert rejected(h.ack(second, sender=C)) == [RejectReason.NOT_AWARDEE]
    h.ack(second)
    _, out = h.at(200).result(second)
    assert any(isinstance(a, Accept) for a in out)


@pytest.mark.parametrize("how", ["reject", "failure", "lease"])
def test_attempt_failures_reaward(how: str) -> None:
    h = Harness()
    first = _two_bids(h)
    if how == "reject":
        msg = AwardReject(id=mid(), sender=A, ts=h.now, task_id=h.tid, attempt=1, award_id=first.id, reason="busy")
        out = h.at(60).handle(Received(msg))
        reason = ReasonCode.AWARD_REJECTED
    elif how == "failure":
        h.at(55).ack(first)
        msg2 = Failure(id=mid(), sender=A, ts=h.now, task_id=h.tid, attempt=1, reason="backend_error")
        out = h.at(60).handle(Received(msg2))
        reason = ReasonCode.BACKEND_ERROR
    else:
        h.at(55).ack(first)
        out = h.at((first.lease_until_ns - NOW) // MS).timer(TimerKind.LEASE)
        reason = ReasonCode.LEASE_EXPIRED
        assert sent(out, Cancel)[0].attempt == 1
    assert AttemptEnded(A, h.tid, 1, False, reason, "m") in out
    assert award_in(out).winner == B and h.m.attempt == 2


def test_no_agent_gets_two_attempts_and_attempts_are_bounded() -> None:
    h = Harness(config=RequesterConfig(ack_timeout_ms=10, max_attempts=2, lease_margin_ms=10))
    _two_bids(h)
    out = h.at(60).timer(TimerKind.ACK)
    assert award_in(out).winner == B
    out = h.at(70).timer(TimerKind.ACK)
    fail = next(a for a in out if isinstance(a, Fail))
    assert fail.reason is ReasonCode.ATTEMPTS_EXHAUSTED and h.m.state is RequesterState.FAILED


def test_result_with_another_model_is_refused() -> None:
    h = Harness()
    award = _two_bids(h)
    _, out = h.at(60).result(award, model="other")
    assert rejected(out) == [RejectReason.MISMATCH] and h.m.state is RequesterState.AWARDED


def test_at_most_one_result_is_accepted() -> None:
    h = Harness()
    award = _two_bids(h)
    h.at(55).ack(award)
    result, out = h.at(60).result(award)
    assert any(isinstance(a, Accept) for a in out)
    assert rejected(h.handle(Received(result))) == [RejectReason.DUPLICATE]
    _, out = h.result(award)
    assert rejected(out) == [RejectReason.TERMINAL]
    assert sum(isinstance(a, Accept) for a in h.log) == 1


def test_a_completed_task_refuses_every_later_result_even_after_a_restart() -> None:
    """Completed at attempt 2, then restored from its snapshot: the same Result again, the awardee's retry with
    a new id and attempt 1's late answer are all refused, and nothing else happens (no Accept, no payment)."""
    h = Harness()
    first = _two_bids(h)
    second = award_in(h.at(150).timer(TimerKind.ACK))
    accepted, out = h.at(160).result(second)
    assert [a.result for a in out if isinstance(a, Accept)] == [accepted]
    h.m = RequesterMachine.restore(
        h.m.snapshot(), rng=random.Random(3), credentials=h.credentials, verify_bid=h.verify, config=h.config
    )
    assert h.at(170).handle(Recovered()) == []
    retry = msgspec.structs.replace(accepted, id=mid())
    _, late = h.result(first)
    for out, reason in (
        (h.handle(Received(accepted)), RejectReason.DUPLICATE),
        (h.handle(Received(retry)), RejectReason.TERMINAL),
        (late, RejectReason.TERMINAL),
    ):
        assert out == [Reject(reason, out[0].message)], out
    assert h.m.state is RequesterState.COMPLETED and h.m.paid_micros == second.price_micros


def test_an_expired_lease_with_no_bid_left_starts_a_new_round() -> None:
    h = Harness()
    h.start()
    h.at(1).bid(A, price_micros=100)
    award = award_in(h.at(50).close_window())
    h.at(55).ack(award)
    out = h.at((award.lease_until_ns - NOW) // MS).timer(TimerKind.LEASE)
    assert AttemptEnded(A, h.tid, 1, False, ReasonCode.LEASE_EXPIRED, "m") in out
    assert not any(isinstance(a, Fail) for a in out)
    (task,) = sent(out, Task)
    assert task.attempt == 2 and h.m.state is RequesterState.ANNOUNCED
    _, out = h.bid(B, price_micros=200)  # the new round takes bids from others (A had its attempt)
    assert award_in(h.at((award.lease_until_ns - NOW) // MS + 50).close_window()).winner == B


def test_progress_is_an_implicit_ack_and_stale_progress_is_refused() -> None:
    h = Harness()
    award = _two_bids(h)

    def progress(seq: int) -> list[Action]:
        p = Progress(id=mid(), sender=A, ts=h.now, task_id=h.tid, attempt=1, seq=seq, delta=f"{seq}")
        return h.handle(Received(p))

    out = h.at(55).handle(Received(Progress(id=mid(), sender=A, ts=h.now, task_id=h.tid, attempt=1, seq=1)))
    assert h.m.state is RequesterState.ACKNOWLEDGED and CancelTimer(TimerKind.ACK, h.tid) in out
    assert isinstance(out[-1], ReportProgress)
    assert rejected(progress(0)) == [RejectReason.STALE]
    assert isinstance(progress(2)[-1], ReportProgress)
    assert rejected(h.ack(award)) == [RejectReason.DUPLICATE]


# --- rounds without a winner, deadline, cancel -------------------------------------------------------------------
def test_no_bids_reannounces_then_fails_with_a_reason() -> None:
    h = Harness(config=RequesterConfig(max_announces=2))
    first = sent(h.start(), Task)[0]
    out = h.at(50).close_window()
    assert not sent(out, Task) and h.m.state is RequesterState.BACKOFF  # nobody bid: pause first (5.4)
    (at,) = [a.at_ns for a in out if isinstance(a, SetTimer) and a.kind is TimerKind.REANNOUNCE]
    out = h.at((at - NOW) // MS + 1).timer(TimerKind.REANNOUNCE)
    (again,) = sent(out, Task)
    assert again.task_id == first.task_id and again.id != first.id and again.ts == h.now
    out = h.at((at - NOW) // MS + 51).close_window()
    fail = next(a for a in out if isinstance(a, Fail))
    assert fail.reason is ReasonCode.NO_BIDS and h.m.outcome is ReasonCode.NO_BIDS


def test_deadline_fails_the_task_even_when_its_timer_is_late() -> None:
    h = Harness(deadline_ms=300)
    award = _two_bids(h)
    h.at(60).ack(award)
    # the shell's deadline timer is late; a result arrives after the deadline: the task fails first
    _, out = h.at(301).result(award)
    fail = next(a for a in out if isinstance(a, Fail))
    assert fail.reason is ReasonCode.DEADLINE_EXCEEDED
    assert rejected(out) == [RejectReason.TERMINAL]
    assert sent(out, Cancel)[0].attempt is None
    assert not any(isinstance(a, Accept) for a in out)
    assert h.timer(TimerKind.DEADLINE) == []  # the late timer is now stale


def test_reannounce_only_if_the_deadline_leaves_time() -> None:
    h = Harness(deadline_ms=120, window_ms=50, config=RequesterConfig(min_exec_ms=40))
    h.start()
    out = h.at(50).close_window()  # 50 + 50 + 40 = 140 > 120: no second round
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.NO_BIDS


def test_cancel() -> None:
    h = Harness()
    award = _two_bids(h)
    out = h.at(60).handle(CancelTask())
    (cancel,) = sent(out, Cancel)
    assert cancel.attempt is None and cancel.reason == "cancelled"
    assert Fail(h.tid, ReasonCode.CANCELLED) in out and h.m.state is RequesterState.CANCELLED
    with pytest.raises(LocalProtocolError):
        h.handle(CancelTask())
    _, out = h.result(award)
    assert rejected(out) == [RejectReason.TERMINAL]


def test_start_after_the_deadline_fails_at_once() -> None:
    h = Harness(deadline_ms=10)
    out = h.at(10).start()
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.DEADLINE_EXCEEDED
    assert not sent(out, Task)


# --- persistence -------------------------------------------------------------------------------------------------
def test_snapshot_restore_recovers_timers_and_fencing() -> None:
    h = Harness()
    award = _two_bids(h)
    snap = h.m.snapshot()
    restored = RequesterMachine.restore(
        snap, rng=random.Random(2), credentials=h.credentials, verify_bid=h.verify, config=h.config
    )
    assert restored.snapshot() == snap and restored.state is RequesterState.AWARDED
    out = restored.handle(Recovered(), now=h.at(70).now)
    assert {(a.kind, a.at_ns) for a in out if isinstance(a, SetTimer)} == set(h.m.timers.items())
    h.m = restored
    out = h.at(150).timer(TimerKind.ACK)  # the restored machine re-awards as the original would have
    assert award_in(out).attempt == 2
    assert rejected(h.ack(award)) == [RejectReason.FENCED]


def test_restore_after_the_deadline_fails_at_once() -> None:
    h = Harness(deadline_ms=300)
    _two_bids(h)
    restored = RequesterMachine.restore(
        h.m.snapshot(), rng=random.Random(2), credentials=h.credentials, verify_bid=h.verify
    )
    out = restored.handle(Recovered(), now=NOW + 400 * MS)
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.DEADLINE_EXCEEDED
    restored.check_invariants()


# --- targeted calls and direct awards ----------------------------------------------------------------------------
def _advert(sender: str, *, price_out: int = 1_000, quality: float = 0.8, seq: int = 0) -> Advertise:
    return Advertise(
        id=mid(),
        sender=sender,
        ts=NOW,
        name="a",
        tier=Tier.CLOUD,
        region="eu",
        residency=["eu"],
        skills=["chat"],
        models=[
            ModelOffer(
                name="m",
                context_window=4_000,
                tokens_per_s=1_000.0,
                price_out_per_1k_micros=price_out,
                quality=quality,
            )
        ],
        seq=seq,
    )


def test_targeted_call_goes_to_the_shortlist_and_closes_early() -> None:
    reg = Registry()
    for i, agent in enumerate((A, B, C, D)):
        reg.observe(_advert(agent, price_out=1_000 * (i + 1)), now=NOW, digest="0" * 64)
    h = Harness(registry=reg, config=RequesterConfig(shortlist_k=2))
    out = h.start()
    (multi,) = [a for a in out if isinstance(a, Multicast)]
    assert multi.to == (A, B)
    h.at(1).bid(A)
    decline = Decline(id=mid(), sender=B, ts=h.now, task_id=h.tid, reason="busy")
    out = h.at(2).handle(Received(decline))
    assert award_in(out).winner == A  # everyone invited answered: no need to wait for the window
    assert CancelTimer(TimerKind.BID_WINDOW, h.tid) in out


def test_direct_award_from_price_sheets() -> None:
    reg = Registry()
    adv_a = _advert(A, price_out=5_000)
    reg.observe(adv_a, now=NOW, digest=payload_digest(encode(adv_a)))
    reg.observe(_advert(B, price_out=9_000, quality=0.7), now=NOW, digest="1" * 64)
    h = Harness(registry=reg, mechanism=Mechanism.DIRECT)
    out = h.start()
    (task,) = sent(out, Task)
    award = award_in(out)
    assert task.mechanism is Mechanism.DIRECT and [a.to for a in out if isinstance(a, Send)] == [A, A]
    assert (award.winner, award.bid_id, award.price_micros) == (A, adv_a.id, 500)
    assert award.bid_digest == payload_digest(encode(adv_a))
    h.at(5).ack(award)
    _, out = h.at(30).result(award, model="whatever-it-runs")
    assert any(isinstance(a, Accept) for a in out)


def test_short_deadline_awards_directly_and_falls_back_to_a_round() -> None:
    reg = Registry()
    reg.observe(_advert(A), now=NOW, digest="0" * 64)
    h = Harness(registry=reg, deadline_ms=140, window_ms=100)  # 140 < 100 + min_exec 50: no time for a round
    out = h.start()
    assert award_in(out).winner == A and sent(out, Task)[0].mechanism is Mechanism.DIRECT
    empty = Harness(registry=Registry(), deadline_ms=200, window_ms=50)
    out = empty.start()
    assert sent(out, Task)[0].mechanism is Mechanism.FIRST_PRICE  # nobody known: a normal round


def test_asking_one_agent_awards_it_directly_even_when_another_is_cheaper() -> None:
    reg = Registry()
    adv_b = _advert(B, price_out=9_000)
    reg.observe(_advert(A, price_out=1_000), now=NOW, digest="0" * 64)
    reg.observe(adv_b, now=NOW, digest=payload_digest(encode(adv_b)))
    h = Harness(registry=reg, agent=B)  # a first-price task: naming the agent is what makes it direct
    out = h.start()
    (task,) = sent(out, Task)
    award = award_in(out)
    assert task.mechanism is Mechanism.DIRECT and task.bid_window_ms == 0
    assert [a.to for a in out if isinstance(a, Send)] == [B, B], "Task and Award to the named agent, nobody else"
    assert (award.winner, award.bid_id, award.bid_digest) == (B, adv_b.id, payload_digest(encode(adv_b)))
    h.at(2).ack(award)
    _, out = h.at(3).result(award)
    assert any(isinstance(a, Accept) for a in out)


def test_asking_one_agent_without_its_sheet_invites_it_alone_and_awards_no_other() -> None:
    reg = Registry()
    reg.observe(_advert(A), now=NOW, digest="0" * 64)  # only A is known; C is named
    h = Harness(registry=reg, agent=C)
    out = h.start()
    (multi,) = [a for a in out if isinstance(a, Multicast)]
    assert multi.to == (C,) and sent(out, Task)[0].mechanism is Mechanism.FIRST_PRICE
    h.at(1).bid(A, price_micros=10)  # a cheaper bid from someone not asked: never awarded
    _, out = h.at(2).bid(C, price_micros=900)
    assert award_in(out).winner == C, "the named agent answered: the round closes at once"


def test_asking_one_agent_that_rejects_fails_without_asking_anyone_else() -> None:
    reg = Registry()
    reg.observe(_advert(A), now=NOW, digest="0" * 64)
    reg.observe(_advert(B), now=NOW, digest="1" * 64)
    h = Harness(registry=reg, agent=A)
    award = award_in(h.start())
    out = h.at(2).handle(
        Received(
            AwardReject(id=mid(), sender=A, ts=h.now, task_id=h.tid, attempt=1, award_id=award.id, reason="busy")
        )
    )
    assert not sent(out, Task) and not sent(out, Award)
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.AWARD_REJECTED


def test_the_named_agent_survives_a_snapshot() -> None:
    reg = Registry()
    h = Harness(registry=reg, agent=C)
    h.start()
    restored = RequesterMachine.restore(
        h.m.snapshot(), rng=random.Random(2), credentials=h.credentials, verify_bid=h.verify, registry=reg
    )
    out = restored.handle(
        Received(
            Bid(
                id=mid(),
                sender=A,
                ts=NOW,
                task_id=h.tid,
                model="m",
                price_micros=1,
                est_latency_ms=1,
                quality=0.9,
                valid_until_ns=NOW + 1_500 * MS,
                tier=Tier.CLOUD,
                region="eu",
                residency=["eu"],
            ),
            "0" * 64,
        ),
        now=NOW + MS,
    )
    restored.check_invariants()
    assert not sent(out, Award), "a bid of another agent never closes the named agent's round"


# --- end to end with honest contractors --------------------------------------------------------------------------
@pytest.mark.parametrize("mechanism", list(Mechanism))
def test_end_to_end_each_mechanism(mechanism: Mechanism) -> None:
    w = World(seed=3)
    req = w.add_requester("req")
    for profile, slowness in PROFILES[:4]:
        w.add_contractor(profile.name, profile, slowness)
    w.deliver_all()  # the registry learns the price sheets
    spec = TaskSpec(
        constraints=constraints(w.now, deadline_ms=1_000, max_price=5_000),
        est_input_tokens=200,
        max_output_tokens=100,
        mechanism=mechanism,
    )
    tid = w.announce(req.agent_id, spec)
    w.settle()
    w.check()
    assert w.tasks[tid].outcome == "completed", w.tasks[tid]
    (accept,) = w.accepted[tid]
    assert accept.price_micros <= 5_000
    if mechanism is Mechanism.POSTED_PRICE:
        assert accept.price_micros == 5_000


def test_last_attempt_failing_reports_one_outcome_and_one_cancel() -> None:
    h = Harness(deadline_ms=400, config=RequesterConfig(ack_timeout_ms=100, min_exec_ms=300))
    h.start()
    h.at(1).bid(A)
    award_in(h.at(50).close_window())
    out = h.at(150).timer(TimerKind.ACK)  # no other bid, no time for another round: the task fails
    assert [a for a in out if isinstance(a, AttemptEnded)] == [
        AttemptEnded(A, h.tid, 1, False, ReasonCode.ACK_TIMEOUT, "m")
    ]
    assert [c.attempt for c in sent(out, Cancel)] == [1]
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.ACK_TIMEOUT


def test_a_silent_shortlist_is_followed_by_a_broadcast() -> None:
    reg = Registry()
    for agent in (A, B):
        reg.observe(_advert(agent), now=NOW, digest="0" * 64)
    h = Harness(registry=reg, config=RequesterConfig(shortlist_k=1))
    out = h.start()
    assert [a.to for a in out if isinstance(a, Multicast)] == [(A,)]
    h.at(50).close_window()  # A never answered (crashed, partitioned...): the registry may be stale
    out = h.at(101).timer(TimerKind.REANNOUNCE)  # after the backoff (at most reannounce_backoff_ms = 50)
    assert [a.to for a in out if isinstance(a, Send) and isinstance(a.message, Task)] == [BROADCAST]
    h.at(110).bid(B)
    out = h.at(151).close_window()
    assert award_in(out).winner == B


# --- losers are told when the task ends (spec 5.9) ---------------------------------------------------------------
def cancels(actions: Sequence[Action]) -> list[Multicast]:
    """The task-wide Cancels among ``actions`` (each a Multicast of one Cancel for all attempts)."""
    out = []
    for a in actions:
        if isinstance(a, Send) and isinstance(a.message, Cancel):
            assert a.message.attempt is not None, "a task-wide Cancel must go out as one Multicast"
        if isinstance(a, Multicast) and isinstance(a.message, Cancel):
            out.append(a)
    return out


def test_losers_get_one_multicast_cancel_when_the_task_completes() -> None:
    h = Harness()
    h.start()
    h.at(1).bid(C, price_micros=300)
    h.at(2).bid(A, price_micros=100)
    h.at(3).bid(B, price_micros=200)
    award = award_in(h.at(50).close_window())
    assert award.winner == A
    assert cancels(h.log) == []  # nobody is told anything before the end
    h.at(60).ack(award)
    _, out = h.at(100).result(award)
    (multi,) = cancels(out)
    assert multi.to == tuple(sorted((B, C)))  # every loser, never the agent whose result was accepted
    cancel = multi.message
    assert isinstance(cancel, Cancel)
    assert (cancel.task_id, cancel.attempt, cancel.reason, cancel.sender) == (h.tid, None, "superseded", REQ)
    assert out.index(multi) < next(i for i, a in enumerate(out) if isinstance(a, Accept))


def test_bidders_of_every_round_and_late_bidders_are_told_on_failure() -> None:
    h = Harness(deadline_ms=1_000, config=RequesterConfig(ack_timeout_ms=100, lease_margin_ms=100))
    h.start()
    h.at(1).bid(A, price_micros=50_000)  # over budget: ineligible, dropped at the window, still holds a slot
    out = h.at(50).close_window()
    assert sent(out, Task) and h.m.state is RequesterState.ANNOUNCED  # the round had a bid: no backoff
    h.at(60).bid(B)
    award = award_in(h.at(100).close_window())
    assert award.winner == B
    _, out = h.at(110).bid(C)  # after the window: refused as late, but C holds a slot for it
    assert rejected(out) == [RejectReason.LATE]
    out = h.at(200).timer(TimerKind.ACK)  # B never acked: told with a Cancel of attempt 1
    assert [c.attempt for c in sent(out, Cancel)] == [1] and cancels(out) == []
    out = h.at(1_000).timer(TimerKind.DEADLINE)
    (multi,) = cancels(out)
    assert multi.to == tuple(sorted((A, C)))  # B already got its Cancel
    assert isinstance(multi.message, Cancel) and multi.message.reason == "deadline_exceeded"
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.DEADLINE_EXCEEDED


def test_user_cancel_tells_the_awardee_and_the_losers_at_once() -> None:
    h = Harness()
    award = _two_bids(h)
    out = h.at(60).handle(CancelTask())
    (multi,) = cancels(out)
    assert multi.to == tuple(sorted((award.winner, B)))
    assert isinstance(multi.message, Cancel) and multi.message.reason == "cancelled"
    assert len([a for a in out if isinstance(a, Send | Multicast)]) == 1  # one frame signed, not one per agent


def test_a_failure_reason_not_allowed_in_cancel_is_sent_as_other() -> None:
    h = Harness(deadline_ms=400, config=RequesterConfig(ack_timeout_ms=100, min_exec_ms=300))
    h.start()
    h.at(1).bid(A)
    h.at(2).bid(B, price_micros=20_000)  # ineligible: never awarded, but a bidder
    award = award_in(h.at(50).close_window())
    h.at(60).ack(award)
    failure = Failure(id=mid(), sender=A, ts=h.now, task_id=h.tid, attempt=1, reason="backend_error")
    out = h.at(70).handle(Received(failure))
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.BACKEND_ERROR
    (multi,) = cancels(out)
    assert multi.to == tuple(sorted((A, B))) and isinstance(multi.message, Cancel)
    assert multi.message.reason == "other"  # backend_error is a Failure reason, not a Cancel reason (section 12)


def test_no_bidder_no_cancel_and_the_record_is_bounded() -> None:
    h = Harness(config=RequesterConfig(max_announces=1, max_bids=3))
    h.start()
    out = h.at(50).close_window()
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.NO_BIDS and cancels(out) == []
    h = Harness(config=RequesterConfig(max_bids=3))
    h.start()
    names = [agent_id(f"bidder-{i}") for i in range(6)]
    for i, name in enumerate(names[:4]):
        _, out = h.at(1 + i).bid(name, price_micros=100 + i)
    assert rejected(out) == [RejectReason.TOO_MANY]
    award = award_in(h.at(50).close_window())
    for name in names[4:]:
        h.at(55).bid(name)  # late: not recorded past the bound
    h.at(60).ack(award)
    _, out = h.at(70).result(award)
    (multi,) = cancels(out)
    assert multi.to == tuple(sorted(names[1:3]))


def test_a_bidder_whose_attempt_was_cancelled_is_told_again_only_if_it_bids_again() -> None:
    h = Harness()
    first = _two_bids(h)
    out = h.at(150).timer(TimerKind.ACK)
    second = award_in(out)
    h.at(160).ack(second)
    _, out = h.at(200).result(second)
    assert cancels(out) == []  # A got its Cancel(attempt 1); B won: nobody else holds a slot
    del first


# --- backoff between rounds without bids (spec 5.4) --------------------------------------------------------------
def _backoff_at(actions: Sequence[Action]) -> int:
    (at,) = [a.at_ns for a in actions if isinstance(a, SetTimer) and a.kind is TimerKind.REANNOUNCE]
    return at


BACKOFF = RequesterConfig(
    ack_timeout_ms=100,
    lease_margin_ms=100,
    max_announces=6,
    reannounce_backoff_ms=100,
    reannounce_backoff_max_ms=300,
    reannounce_jitter=0.5,
)


def _empty_rounds(h: Harness, rounds: int) -> list[int]:
    """Run ``rounds`` rounds nobody bids in; the backoff pause (ms, from window close to re-announce) of each."""
    h.start()
    pauses = []
    close = NOW + 50 * MS
    for _ in range(rounds):
        h.now = close
        out = h.close_window()
        assert h.m.state is RequesterState.BACKOFF and not sent(out, Task)
        at = _backoff_at(out)
        pauses.append((at - close) / MS)
        assert h.timer(TimerKind.REANNOUNCE) == [] if at > h.now else True  # an early firing is ignored
        h.now = at
        (task,) = sent(h.timer(TimerKind.REANNOUNCE), Task)
        assert task.ts == at and h.m.state is RequesterState.ANNOUNCED
        close = at + 50 * MS
    return pauses


def test_backoff_is_exponential_jittered_and_capped() -> None:
    h = Harness(deadline_ms=10_000, config=BACKOFF)
    pauses = _empty_rounds(h, 4)
    bounds = [(50, 100), (100, 200), (150, 300), (150, 300)]  # 100 ms doubled per empty round, capped at 300
    for pause, (lo, hi) in zip(pauses, bounds, strict=True):
        assert lo <= pause <= hi, (pauses, bounds)
    assert len(set(pauses)) == len(pauses)  # jittered
    again = Harness(deadline_ms=10_000, config=BACKOFF)
    assert _empty_rounds(again, 4) == pauses  # the jitter comes only from the injected rng


def test_backoff_without_jitter_and_switched_off() -> None:
    h = Harness(deadline_ms=10_000, config=msgspec_replace(BACKOFF, reannounce_jitter=0.0))
    assert _empty_rounds(h, 3) == [100, 200, 300]
    h = Harness(config=RequesterConfig(reannounce_backoff_ms=0))
    h.start()
    out = h.at(50).close_window()
    assert sent(out, Task) and h.m.state is RequesterState.ANNOUNCED  # re-announced at once


def test_backoff_never_pushes_the_next_round_past_the_deadline() -> None:
    # the last round must start by deadline - window - min_exec: 1_000 - 50 - 50 = 900 ms
    config = msgspec_replace(BACKOFF, reannounce_backoff_ms=5_000, reannounce_backoff_max_ms=5_000)
    h = Harness(deadline_ms=1_000, config=config)
    h.start()
    at = _backoff_at(h.at(50).close_window())
    assert at == NOW + 900 * MS - 1
    h.now = at
    (task,) = sent(h.timer(TimerKind.REANNOUNCE), Task)
    assert task.ts + (50 + config.min_exec_ms) * MS < task.constraints.deadline_ns
    # a backoff timer that fires late, when no round fits any more, ends the task with the round's reason
    late = Harness(deadline_ms=1_000, config=config)
    late.start()
    late.at(50).close_window()
    out = late.at(950).timer(TimerKind.REANNOUNCE)
    assert not sent(out, Task)
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.NO_BIDS
    # and the deadline itself ends a task that is backing off
    dl = Harness(deadline_ms=1_000, config=config)
    dl.start()
    dl.at(50).close_window()
    out = dl.at(1_000).timer(TimerKind.DEADLINE)
    assert next(a for a in out if isinstance(a, Fail)).reason is ReasonCode.DEADLINE_EXCEEDED


def test_a_bid_during_backoff_is_held_for_the_next_round_and_resets_the_backoff() -> None:
    h = Harness(deadline_ms=10_000, config=msgspec_replace(BACKOFF, reannounce_jitter=0.0))
    h.start()
    h.at(50).close_window()
    bid, out = h.at(60).bid(A)  # e.g. a delayed answer to the first Task
    assert out == [] and h.m.state is RequesterState.BACKOFF  # sealed: nothing is awarded during the pause
    out = h.at(150).timer(TimerKind.REANNOUNCE)
    assert sent(out, Task) and h.m.state is RequesterState.COLLECTING
    award = award_in(h.at(200).close_window())
    assert award.bid_id == bid.id
    # a round with a bid resets the exponent: after a failed attempt the next empty round pauses the base again
    out = h.at(300).timer(TimerKind.ACK)
    assert sent(out, Task)  # the attempt failed: re-announced at once (bids came, so no backoff)
    out = h.at(350).close_window()
    assert _backoff_at(out) == NOW + 450 * MS


def test_backoff_survives_a_requester_restart() -> None:
    h = Harness(deadline_ms=10_000, config=BACKOFF)
    h.start()
    h.at(50).close_window()
    snap = h.m.snapshot()
    restored = RequesterMachine.restore(
        snap, rng=random.Random(2), credentials=h.credentials, verify_bid=h.verify, config=h.config
    )
    assert restored.state is RequesterState.BACKOFF
    out = restored.handle(Recovered(), now=h.at(60).now)
    assert {(a.kind, a.at_ns) for a in out if isinstance(a, SetTimer)} == set(h.m.timers.items())
    assert TimerKind.REANNOUNCE in restored.timers


def msgspec_replace(config: RequesterConfig, **kw: object) -> RequesterConfig:
    return msgspec.structs.replace(config, **kw)


def test_losers_slots_are_free_right_after_the_task_ends_end_to_end() -> None:
    """Honest contractors with a long bid hold: once the winner's result is accepted and the Cancel delivered,
    no loser holds a slot for the task any more (before, each held it until its bid lapsed)."""
    w = World(seed=5, config=RequesterConfig(ack_timeout_ms=100, lease_margin_ms=100, shortlist_k=0))
    req = w.add_requester("req")
    nodes = [w.add_contractor(p.name, msgspec.structs.replace(p, bid_hold_ms=60_000)) for p, _ in PROFILES[:4]]
    w.deliver_all()
    spec = TaskSpec(
        constraints=constraints(w.now, deadline_ms=30_000, max_price=50_000),
        est_input_tokens=200,
        max_output_tokens=100,
    )
    tid = w.announce(req.agent_id, spec)
    w.deliver_all()
    bidders = [n for n in nodes if n.machine.job_state(tid).value == "bidding"]
    assert len(bidders) >= 3
    while w.tasks[tid].terminal_ns is None:
        assert w.advance_to_next()
        w.deliver_all()  # the Result, then the Cancel to the losers, at the same instant
    w.check()
    assert w.tasks[tid].outcome == "completed"
    assert (w.now - BASE_NS) // MS < 1_000  # long before any bid lapses
    for n in nodes:
        assert n.machine.used_slots == 0, n.profile.name
        assert n.machine.job_state(tid).value in ("released", "done", "none"), n.profile.name


@given(
    latency_ms=st.integers(1, 30_000),
    deadline_ms=st.integers(200, 60_000),
    factor=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
)
@settings(max_examples=200, deadline=None)
def test_a_lease_never_exceeds_the_promise_times_the_factor_whatever_the_deadline(
    latency_ms: int, deadline_ms: int, factor: float
) -> None:
    config = RequesterConfig(ack_timeout_ms=100, lease_margin_ms=100, lease_factor=factor)
    h = Harness(deadline_ms=deadline_ms, config=config)
    h.start()
    h.at(1).bid(A, est_latency_ms=min(latency_ms, deadline_ms - 60))
    out = h.at(50).close_window()
    awards = sent(out, Award)
    if not awards:  # the promise no longer fits before the deadline: nothing awarded
        return
    (award,) = awards
    promise = min(latency_ms, deadline_ms - 60)
    bound = max(math.ceil(promise * factor), 100 + 100) * MS
    assert award.lease_until_ns - award.ts <= bound
    assert award.lease_until_ns <= h.spec.constraints.deadline_ns


def test_a_task_that_cannot_travel_in_a_frame_fails_before_anything_is_sent() -> None:
    for content in ("x" * (MAX_TEXT + 1), "y" * 200_000):
        messages = [ChatMessage(role=Role.USER, content=content)] * (1 if len(content) > MAX_TEXT else 6)
        spec = TaskSpec(constraints=constraints(NOW, deadline_ms=2_000, max_price=10_000), messages=messages)
        m = RequesterMachine(
            REQ, spec, rng=random.Random(1), credentials=lambda a: None, verify_bid=lambda b, d: True
        )
        out = m.handle(Start(), now=NOW)
        assert [type(a) for a in out] == [Fail] and out[0].reason is ReasonCode.PAYLOAD_TOO_LARGE  # type: ignore[union-attr]
        assert frame_problem(m.task) is not None and not sent(out, Task)


def test_a_revoked_awardee_loses_its_attempt_at_once_and_the_task_goes_on() -> None:
    h = Harness()
    h.start()
    h.at(1).bid(A, price_micros=500)
    h.at(2).bid(B, price_micros=900)
    first = award_in(h.at(50).close_window())
    assert first.winner == A
    out = h.at(60).handle(Distrusted(A))  # its key was revoked while it worked
    second = award_in(out)
    assert (second.winner, second.attempt) == (B, 2)
    ended = [a for a in out if isinstance(a, AttemptEnded)]
    assert ended == [AttemptEnded(A, h.tid, 1, False, ReasonCode.VERIFICATION_FAILED, "m")]
    assert not any(isinstance(a, Send) and a.to == A for a in out)  # not a word to a revoked key
    assert h.handle(Distrusted(B)) and h.handle(Distrusted(C)) == []  # an agent with nothing here: nothing
