"""Transition tables: every (state, event type) pair either has an entry or raises LocalProtocolError.

The walk drives a real machine into each state with real events, feeds it one sample event of every type, and
checks that a pair in the table is handled (and the machine's invariants hold afterwards) while a pair missing
from it raises LocalProtocolError without touching the state. It also checks that every entry was visited.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from accord.errors import LocalProtocolError
from accord.protocol import contractor as contractor_mod
from accord.protocol import requester as requester_mod
from accord.protocol.actions import Send, new_message_id
from accord.protocol.contractor import AgentState, ContractorMachine, JobState
from accord.protocol.events import (
    CancelTask,
    DeviceChanged,
    Distrusted,
    Event,
    EventType,
    ExecutionDone,
    ExecutionFailed,
    ExecutionProgress,
    Received,
    Recovered,
    Shutdown,
    Solicited,
    Start,
    TimerFired,
    TimerKind,
)
from accord.protocol.messages import (
    Advertise,
    Attestation,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    Decline,
    Failure,
    Mechanism,
    ModelOffer,
    Progress,
    Result,
    Task,
    Tier,
    Withdraw,
)
from accord.protocol.pricing import DeviceState
from accord.protocol.requester import RequesterMachine, RequesterState, TaskSpec
from tests.support.market_world import BASE_NS, CLOUD_EU, MS, PROFILES, agent_id, constraints

REQ = agent_id("requester")
AGENT = agent_id("contractor")
OTHER = agent_id("someone-else")
NOW = BASE_NS
DIGEST = "ab" * 32


def _id() -> str:
    return new_message_id(random.Random(7))


def _bid(task_id: str, sender: str = AGENT, **kw: object) -> Bid:
    fields = {
        "id": new_message_id(random.Random(sender + task_id)),
        "sender": sender,
        "ts": NOW,
        "task_id": task_id,
        "model": "m",
        "price_micros": 100,
        "est_latency_ms": 10,
        "quality": 0.8,
        "valid_until_ns": NOW + 900 * MS,
        "tier": Tier.CLOUD,
        "region": "eu",
    }
    fields.update(kw)
    return Bid(**fields)  # type: ignore[arg-type]


# --- requester ---------------------------------------------------------------------------------------------------
def _requester() -> RequesterMachine:
    spec = TaskSpec(constraints=constraints(NOW, deadline_ms=1_000, max_price=1_000), bid_window_ms=50)
    return RequesterMachine(
        REQ, spec, rng=random.Random(1), credentials=lambda a: CLOUD_EU, verify_bid=lambda b, d: True
    )


def _award_of(actions: list[object]) -> Award:
    return next(a.message for a in actions if isinstance(a, Send) and isinstance(a.message, Award))


def requester_in(state: RequesterState) -> RequesterMachine:
    m = _requester()
    if state is RequesterState.CREATED:
        return m
    m.handle(Start(), now=NOW)
    if state is RequesterState.ANNOUNCED:
        return m
    if state is RequesterState.CANCELLED:
        m.handle(CancelTask(), now=NOW + MS)
        return m
    if state is RequesterState.FAILED:
        m.handle(TimerFired(TimerKind.DEADLINE, m.task_id), now=NOW + 1_000 * MS)
        return m
    if state is RequesterState.BACKOFF:  # a round without any bid: a pause before the next one
        m.handle(TimerFired(TimerKind.BID_WINDOW, m.task_id), now=NOW + 50 * MS)
        return m
    m.handle(Received(_bid(m.task_id)), now=NOW + MS)
    if state is RequesterState.COLLECTING:
        return m
    award = _award_of(m.handle(TimerFired(TimerKind.BID_WINDOW, m.task_id), now=NOW + 50 * MS))
    if state is RequesterState.AWARDED:
        return m
    ack = AwardAck(id=_id(), sender=AGENT, ts=NOW, task_id=m.task_id, attempt=1, award_id=award.id)
    m.handle(Received(ack), now=NOW + 51 * MS)
    if state is RequesterState.ACKNOWLEDGED:
        return m
    result = Result(
        id=_id(), sender=AGENT, ts=NOW, task_id=m.task_id, attempt=1, award_id=award.id, model="m", output="x"
    )
    m.handle(Received(result), now=NOW + 60 * MS)
    assert state is RequesterState.COMPLETED
    return m


def requester_event(etype: EventType, m: RequesterMachine) -> Event:
    tid = m.task_id
    award = m.award
    attempt = award.attempt if award else 1
    award_id = award.id if award else _id()
    common = {"id": _id(), "sender": AGENT, "ts": NOW}
    samples: dict[EventType, Callable[[], Event]] = {
        EventType.START: Start,
        EventType.CANCEL_TASK: CancelTask,
        EventType.SHUTDOWN: Shutdown,
        EventType.SOLICITED: Solicited,
        EventType.RECOVERED: Recovered,
        EventType.BID_WINDOW_CLOSED: lambda: TimerFired(TimerKind.BID_WINDOW, tid),
        EventType.ACK_TIMEOUT: lambda: TimerFired(TimerKind.ACK, tid),
        EventType.LEASE_EXPIRED: lambda: TimerFired(TimerKind.LEASE, tid),
        EventType.DEADLINE_REACHED: lambda: TimerFired(TimerKind.DEADLINE, tid),
        EventType.BID_EXPIRED: lambda: TimerFired(TimerKind.BID_EXPIRY, tid),
        EventType.HEARTBEAT_DUE: lambda: TimerFired(TimerKind.HEARTBEAT),
        EventType.REANNOUNCE_DUE: lambda: TimerFired(TimerKind.REANNOUNCE, tid),
        EventType.SEND_ACK_DUE: lambda: TimerFired(TimerKind.SEND_ACK, tid),
        EventType.ADVERTISE: lambda: Received(_advert()),
        EventType.WITHDRAW: lambda: Received(Withdraw(**common)),
        EventType.TASK: lambda: Received(m.task),
        EventType.BID: lambda: Received(_bid(tid, OTHER)),
        EventType.DECLINE: lambda: Received(Decline(**common, task_id=tid, reason="busy")),
        EventType.AWARD: lambda: Received(
            Award(
                **common,
                task_id=tid,
                attempt=1,
                winner=AGENT,
                bid_id=_id(),
                bid_digest=DIGEST,
                price_micros=1,
                ack_by_ns=NOW,
                lease_until_ns=NOW,
            )
        ),
        EventType.AWARD_ACK: lambda: Received(AwardAck(**common, task_id=tid, attempt=attempt, award_id=award_id)),
        EventType.AWARD_REJECT: lambda: Received(
            AwardReject(**common, task_id=tid, attempt=attempt, award_id=award_id, reason="busy")
        ),
        EventType.PROGRESS: lambda: Received(Progress(**common, task_id=tid, attempt=attempt, seq=0)),
        EventType.RESULT: lambda: Received(
            Result(**common, task_id=tid, attempt=attempt, award_id=award_id, model="m", output="y")
        ),
        EventType.ATTESTATION: lambda: Received(
            Attestation(
                **common,
                task_id=tid,
                attempt=1,
                agent=AGENT,
                requester=REQ,
                prompt_digest=DIGEST,
                award_digest=DIGEST,
                output_digest=DIGEST,
                model="m",
                backend="b",
            )
        ),
        EventType.CANCEL: lambda: Received(Cancel(**common, task_id=tid)),
        EventType.FAILURE: lambda: Received(
            Failure(**common, task_id=tid, attempt=attempt, reason="backend_error")
        ),
        EventType.EXECUTION_PROGRESS: lambda: ExecutionProgress(tid, attempt),
        EventType.EXECUTION_DONE: lambda: ExecutionDone(tid, attempt, "z"),
        EventType.EXECUTION_FAILED: lambda: ExecutionFailed(tid, attempt),
        EventType.DEVICE_CHANGED: lambda: DeviceChanged(DeviceState(battery=0.5)),
        EventType.DISTRUSTED: lambda: Distrusted(OTHER),
    }
    return samples[etype]()


def _advert() -> Advertise:
    return Advertise(
        id=_id(),
        sender=AGENT,
        ts=NOW,
        name="a",
        tier=Tier.CLOUD,
        region="eu",
        models=[ModelOffer(name="m", context_window=1000, tokens_per_s=100.0)],
    )


def test_requester_fixtures_reach_their_states() -> None:
    for state in RequesterState:
        assert requester_in(state).state is state


@pytest.mark.parametrize("state", list(RequesterState), ids=lambda s: s.name)
def test_requester_table_walk(state: RequesterState) -> None:
    visited = set()
    for etype in EventType:
        m = requester_in(state)
        event = requester_event(etype, m)
        now = NOW + 1_000 * MS if state is RequesterState.FAILED else NOW + 52 * MS
        if (state, etype) in requester_mod.TRANSITIONS:
            visited.add((state, etype))
            actions = m.handle(event, now=now)
            assert isinstance(actions, list)
            m.check_invariants()
        else:
            before = m.snapshot()
            with pytest.raises(LocalProtocolError):
                m.handle(event, now=now)
            assert m.snapshot() == before, (state, etype)
    assert visited == {k for k in requester_mod.TRANSITIONS if k[0] is state}


def test_requester_table_is_complete_for_remote_messages() -> None:
    """A peer can send any task-scoped message at any time: no such pair may raise."""
    remote = {
        EventType.TASK,
        EventType.BID,
        EventType.DECLINE,
        EventType.AWARD,
        EventType.AWARD_ACK,
        EventType.AWARD_REJECT,
        EventType.PROGRESS,
        EventType.RESULT,
        EventType.CANCEL,
        EventType.FAILURE,
    }
    for state in RequesterState:
        for etype in remote:
            assert (state, etype) in requester_mod.TRANSITIONS, (state, etype)
        for kind in (
            EventType.BID_WINDOW_CLOSED,
            EventType.ACK_TIMEOUT,
            EventType.LEASE_EXPIRED,
            EventType.DEADLINE_REACHED,
            EventType.REANNOUNCE_DUE,
            EventType.RECOVERED,
        ):
            assert (state, kind) in requester_mod.TRANSITIONS, (state, kind)


# --- contractor --------------------------------------------------------------------------------------------------
PROFILE = PROFILES[0][0]


def _task(mechanism: Mechanism = Mechanism.FIRST_PRICE) -> Task:
    rng = random.Random(3)
    tid = new_message_id(rng)
    return Task(
        id=new_message_id(rng),
        sender=REQ,
        ts=NOW,
        task_id=tid,
        prompt_digest=DIGEST,
        constraints=constraints(NOW, deadline_ms=1_000, max_price=50_000),
        mechanism=mechanism,
        max_output_tokens=100,
    )


def contractor_with(state: AgentState | JobState) -> tuple[ContractorMachine, Task, Bid | None, Award | None]:
    m = ContractorMachine(AGENT, PROFILE, rng=random.Random(5))
    task = _task(Mechanism.DIRECT if state is JobState.OFFERED else Mechanism.FIRST_PRICE)
    if state is AgentState.INIT:
        return m, task, None, None
    m.handle(Start(), now=NOW)
    if state is AgentState.STOPPED:
        m.handle(Shutdown(), now=NOW)
        return m, task, None, None
    if state in (AgentState.ONLINE, JobState.NONE):
        return m, task, None, None
    out = m.handle(Received(task), now=NOW + MS)
    bid = next((a.message for a in out if isinstance(a, Send) and isinstance(a.message, Bid)), None)
    if state in (JobState.BIDDING, JobState.OFFERED):
        return m, task, bid, None
    if state is JobState.RELEASED:
        m.handle(Received(Cancel(id=_id(), sender=REQ, ts=NOW, task_id=task.task_id)), now=NOW + 2 * MS)
        return m, task, bid, None
    assert bid is not None
    award = _award_for(task, bid)
    m.handle(Received(award), now=NOW + 60 * MS)
    if state is JobState.RUNNING:
        return m, task, bid, award
    m.handle(ExecutionDone(task.task_id, 1, "out"), now=NOW + 100 * MS)
    assert state is JobState.DONE
    return m, task, bid, award


def _award_for(task: Task, bid: Bid) -> Award:
    from accord.protocol.codec import encode
    from accord.protocol.digests import payload_digest

    return Award(
        id=_id(),
        sender=REQ,
        ts=NOW + 55 * MS,
        task_id=task.task_id,
        attempt=1,
        winner=AGENT,
        bid_id=bid.id,
        bid_digest=payload_digest(encode(bid)),
        price_micros=bid.price_micros,
        ack_by_ns=NOW + 300 * MS,
        lease_until_ns=NOW + 900 * MS,
    )


def contractor_event(etype: EventType, task: Task, bid: Bid | None, award: Award | None) -> Event:
    tid = task.task_id
    common = {"id": _id(), "sender": REQ, "ts": NOW}
    from_agent = {"id": _id(), "sender": OTHER, "ts": NOW}
    if etype is EventType.AWARD:
        if bid is not None:
            return Received(award or _award_for(task, bid))
        return Received(
            Award(
                **common,
                task_id=tid,
                attempt=1,
                winner=AGENT,
                bid_id=_id(),
                bid_digest=DIGEST,
                price_micros=10**6,
                ack_by_ns=NOW + 300 * MS,
                lease_until_ns=NOW + 900 * MS,
            )
        )
    samples: dict[EventType, Callable[[], Event]] = {
        EventType.START: Start,
        EventType.CANCEL_TASK: CancelTask,
        EventType.SHUTDOWN: Shutdown,
        EventType.SOLICITED: Solicited,
        EventType.RECOVERED: Recovered,
        EventType.BID_WINDOW_CLOSED: lambda: TimerFired(TimerKind.BID_WINDOW, tid),
        EventType.ACK_TIMEOUT: lambda: TimerFired(TimerKind.ACK, tid),
        EventType.LEASE_EXPIRED: lambda: TimerFired(TimerKind.LEASE, tid),
        EventType.DEADLINE_REACHED: lambda: TimerFired(TimerKind.DEADLINE, tid),
        EventType.BID_EXPIRED: lambda: TimerFired(TimerKind.BID_EXPIRY, tid),
        EventType.HEARTBEAT_DUE: lambda: TimerFired(TimerKind.HEARTBEAT),
        EventType.REANNOUNCE_DUE: lambda: TimerFired(TimerKind.REANNOUNCE, tid),
        EventType.SEND_ACK_DUE: lambda: TimerFired(TimerKind.SEND_ACK, tid),
        EventType.ADVERTISE: lambda: Received(_advert()),
        EventType.WITHDRAW: lambda: Received(Withdraw(**from_agent)),
        EventType.TASK: lambda: Received(task),
        EventType.BID: lambda: Received(_bid(tid, OTHER)),
        EventType.DECLINE: lambda: Received(Decline(**from_agent, task_id=tid, reason="busy")),
        EventType.AWARD_ACK: lambda: Received(AwardAck(**from_agent, task_id=tid, attempt=1, award_id=_id())),
        EventType.AWARD_REJECT: lambda: Received(
            AwardReject(**from_agent, task_id=tid, attempt=1, award_id=_id(), reason="busy")
        ),
        EventType.PROGRESS: lambda: Received(Progress(**from_agent, task_id=tid, attempt=1, seq=0)),
        EventType.RESULT: lambda: Received(
            Result(**from_agent, task_id=tid, attempt=1, award_id=_id(), model="m", output="y")
        ),
        EventType.ATTESTATION: lambda: requester_event(EventType.ATTESTATION, _requester()),
        EventType.CANCEL: lambda: Received(Cancel(**common, task_id=tid)),
        EventType.FAILURE: lambda: Received(Failure(**from_agent, task_id=tid, attempt=1, reason="other")),
        EventType.EXECUTION_PROGRESS: lambda: ExecutionProgress(tid, 1, "d", 1),
        EventType.EXECUTION_DONE: lambda: ExecutionDone(tid, 1, "z"),
        EventType.EXECUTION_FAILED: lambda: ExecutionFailed(tid, 1),
        EventType.DEVICE_CHANGED: lambda: DeviceChanged(DeviceState(battery=0.5)),
        EventType.DISTRUSTED: lambda: Distrusted(OTHER),
    }
    return samples[etype]()


CONTRACTOR_STATES: list[AgentState | JobState] = [*AgentState, *JobState]


def test_contractor_fixtures_reach_their_states() -> None:
    for state in CONTRACTOR_STATES:
        m, task, _, _ = contractor_with(state)
        if isinstance(state, AgentState):
            assert m.state is state
        else:
            assert m.state is AgentState.ONLINE and m.job_state(task.task_id) is state


@pytest.mark.parametrize("state", CONTRACTOR_STATES, ids=lambda s: f"{type(s).__name__}.{s.name}")
def test_contractor_table_walk(state: AgentState | JobState) -> None:
    """Job states are walked with task-scoped events, the ONLINE agent with the others, INIT and STOPPED with
    everything (the machine keys its table the same way)."""
    visited = set()
    for etype in EventType:
        task_scoped = etype in contractor_mod._TASK_EVENTS
        if isinstance(state, JobState) and not task_scoped:
            continue
        if state is AgentState.ONLINE and task_scoped:
            continue
        m, task, bid, award = contractor_with(state)
        event = contractor_event(etype, task, bid, award)
        now = NOW + 61 * MS
        if (state, etype) in contractor_mod.TRANSITIONS:
            visited.add((state, etype))
            assert isinstance(m.handle(event, now=now), list)
            m.check_invariants()
        else:
            before = (m.state, m.used_slots, m.job_state(task.task_id), m.timers)
            with pytest.raises(LocalProtocolError):
                m.handle(event, now=now)
            assert (m.state, m.used_slots, m.job_state(task.task_id), m.timers) == before
    expected = {k for k in contractor_mod.TRANSITIONS if k[0] is state}
    assert visited == expected


def test_every_contractor_entry_belongs_to_a_walked_state() -> None:
    for state, etype in contractor_mod.TRANSITIONS:
        if isinstance(state, JobState):
            assert etype in contractor_mod._TASK_EVENTS
        elif state is AgentState.ONLINE:
            assert etype not in contractor_mod._TASK_EVENTS
