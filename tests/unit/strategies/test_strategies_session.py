"""A strategy run's session (accord/strategies/base.py): each call may spend only what is left, side-by-side calls
reserve their shares, and for any nesting of strategies and any prices the run never pays more than its budget;
what each task asks for, how failures are recorded and when the run stops.

The market is played by :class:`Market`, a stand-in for the requester that answers every task at a price it is
told (never above the task's ``max_price_micros``: the real requester's guarantee, tested in tests/unit/protocol
and tests/stateful). What is under test is the session's accounting between calls, which that guarantee alone
cannot give: the ceiling each call is given.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.protocol.messages import Policy, Privacy, ReasonCode, Tier
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import Requester, TaskFailed, TaskOutcome
from accord.strategies import (
    Ask,
    Cascade,
    Debate,
    Ensemble,
    JudgeVerifier,
    MixtureOfAgents,
    SelfConfidence,
    Session,
    Single,
    Split,
    Strategy,
    StrategyFailed,
    run_strategy,
)

FULL = -1
"""A price that means: the whole ceiling the task was given (the most a market may charge)."""


@dataclass(frozen=True)
class Reply:
    price: int = FULL
    fails: bool = False
    reason: ReasonCode = ReasonCode.NO_BIDS
    detail: str = ""
    confidence: int = 9
    pauses: int = 1
    """Scheduling points before the answer: side-by-side calls end in varying orders."""


@dataclass
class Market:
    """Answers task i with ``replies[i % len(replies)]``; records every ceiling and what it paid."""

    replies: Sequence[Reply] = (Reply(),)
    specs: list[TaskSpec] = field(default_factory=list)
    avoids: list[object] = field(default_factory=list)
    agents: list[str | None] = field(default_factory=list)
    """The one agent each call asked for (``submit(..., agent=...)``), or None for a market round."""
    budget: int | None = None
    """When set: at every submit, what is paid plus the ceilings of the calls in flight must fit in it."""
    caps: list[int] = field(default_factory=list)
    paid: int = 0
    in_flight: list[int] = field(default_factory=list)
    qualities: list[tuple[str, str, float, str]] = field(default_factory=list)
    """(task, agent, quality, source) of every quality signal a run gave its answers."""

    def record_quality(
        self, task_id: str, agent_id: str, quality: float, source: str, *, run_id: str = ""
    ) -> None:
        assert any(f"{n:032x}" == task_id for n in range(1, len(self.caps) + 1)), task_id
        self.qualities.append((task_id, agent_id, quality, source))

    async def submit(self, spec: TaskSpec, *, avoid: object = None, agent: str | None = None) -> TaskOutcome:
        cap = spec.constraints.max_price_micros
        self.specs.append(spec)
        self.avoids.append(avoid)
        self.agents.append(agent)
        reply = self.replies[len(self.caps) % len(self.replies)]
        self.caps.append(cap)
        self.in_flight.append(cap)
        if self.budget is not None:
            assert self.paid + sum(self.in_flight) <= self.budget, (self.paid, self.in_flight, self.budget)
        try:
            for _ in range(reply.pauses):
                await anyio.lowlevel.checkpoint()
        finally:
            self.in_flight.remove(cap)
        n = len(self.caps)
        if reply.fails:
            raise TaskFailed(f"{n:032x}", reply.reason, reply.detail)
        price = cap if reply.price == FULL else min(reply.price, cap)
        self.paid += price
        text = f"42. Score: {reply.confidence}. Best: 1. Confidence: {reply.confidence}/10"
        return TaskOutcome(
            task_id=f"{n:032x}",
            answer=text,
            agent_id=f"agent-{n}",
            model="m",
            price_micros=price,
            latency_ms=1.0,
            attempt=1,
            result=None,  # type: ignore[arg-type]  # sessions never read the result or its attestation
            attestation=None,  # type: ignore[arg-type]
        )


def _session(market: Market, budget: int) -> Session:
    return Session(cast(Requester, market), budget_micros=budget, deadline_ns=time.time_ns() + 60 * 10**9)


ASK = Ask("What is 6 * 7?", form="math")


# --- one call at a time ------------------------------------------------------------------------------------------
def test_each_call_may_spend_only_what_is_left() -> None:
    market = Market([Reply(price=700), Reply(price=FULL)])

    async def main() -> Session:
        s = _session(market, 1_000)
        assert (await s.call(ASK, role="a")) is not None
        assert (await s.call(ASK, role="b")) is not None
        assert await s.call(ASK, role="c") is None  # nothing left: refused without a task
        return s

    s = anyio.run(main)
    assert market.caps == [1_000, 300]  # the second ceiling is the budget less what the first paid
    assert s.spent_micros == market.paid == 1_000 and s.remaining_micros == 0
    assert [c.failure for c in s.calls] == [None, None, "budget"] and s.exhausted == "budget"


def test_a_failed_call_releases_its_reservation() -> None:
    market = Market([Reply(fails=True), Reply(price=FULL)])

    async def main() -> Session:
        s = _session(market, 500)
        assert await s.call(ASK, role="a") is None
        assert await s.call(ASK, role="b") is not None
        return s

    s = anyio.run(main)
    assert market.caps == [500, 500] and s.reserved_micros == 0 and s.spent_micros == 500


def test_an_explicit_ceiling_lower_than_what_is_left_wins() -> None:
    market = Market([Reply(price=FULL)])

    async def main() -> Session:
        s = _session(market, 1_000)
        await s.call(ASK, role="a", max_price_micros=250)
        await s.call(ASK, role="b", max_price_micros=5_000)
        return s

    s = anyio.run(main)
    assert market.caps == [250, 750] and s.spent_micros == 1_000


# --- side by side ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prices", [(FULL, FULL, FULL), (332, FULL, 333), (FULL, 1, FULL)])
def test_side_by_side_calls_reserve_their_shares_at_prices_near_the_budget(prices: tuple[int, ...]) -> None:
    """Three calls started together, each charged (about) its whole ceiling: the ceilings add up to the budget
    (333, then 667 // 2, then what is left), so the run pays at most the budget however they end."""
    market = Market([Reply(price=p, pauses=3 - i) for i, p in enumerate(prices)], budget=1_000)

    async def main() -> Session:
        s = _session(market, 1_000)
        records = await s.call_many([ASK] * 3, role="answer")
        assert all(r is not None for r in records)
        return s

    s = anyio.run(main)
    assert market.caps == [333, 333, 334]
    assert s.spent_micros == market.paid <= 1_000 and s.reserved_micros == 0
    assert market.paid == sum(min(p, c) if p != FULL else c for p, c in zip(prices, market.caps, strict=True))


def test_calls_started_together_without_shares_cannot_both_take_the_whole_budget() -> None:
    market = Market([Reply(price=FULL, pauses=2)], budget=100)
    done: list[object] = []

    async def one() -> None:
        done.append(await s.call(ASK, role="answer"))

    s = _session(market, 100)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)

    anyio.run(main)
    assert market.caps == [100] and market.paid == 100  # the second found nothing left: refused, no task
    assert sorted(r is None for r in done) == [False, True]


# --- any nesting, any prices -------------------------------------------------------------------------------------
_leaves: st.SearchStrategy[Strategy] = st.one_of(
    st.builds(Single),
    st.builds(Ensemble, k=st.integers(1, 4), combine=st.sampled_from(["vote", "judge"])),
    st.builds(MixtureOfAgents, layers=st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple)),
    st.builds(Debate, k=st.integers(2, 3), rounds=st.integers(1, 3), stop_on_consensus=st.booleans()),
    st.builds(Split, chunk_chars=st.sampled_from([20, 60]), local_only=st.booleans()),
)
_strategies: st.SearchStrategy[Strategy] = st.recursive(
    _leaves,
    lambda inner: st.builds(
        Cascade,
        first=inner,
        then=inner,
        verifier=st.sampled_from([SelfConfidence(), JudgeVerifier()]),
        with_draft=st.booleans(),
    ),
    max_leaves=4,
)
_replies = st.lists(
    st.builds(
        Reply,
        price=st.one_of(st.just(FULL), st.integers(0, 3_000)),
        fails=st.booleans(),
        confidence=st.integers(0, 10),
        pauses=st.integers(0, 3),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150)
@given(_strategies, _replies, st.integers(0, 2_000))
def test_spent_never_exceeds_the_budget(strategy: Strategy, replies: list[Reply], budget: int) -> None:
    """For any nesting of strategies, any prices (up to each ceiling) and failures, in any order of completion:
    at no point do the payments plus the ceilings of the calls in flight exceed the budget, and the run pays
    what its answered calls cost, never more than the budget."""
    market = Market(replies, budget=budget)
    ask = Ask("What is 6 * 7?", form="math", context="Line one of the notes.\n\nLine two of the notes.")

    async def main() -> int | None:
        try:
            result = await run_strategy(
                cast(Requester, market), strategy, ask, budget_micros=budget, deadline_ms=60_000
            )
        except StrategyFailed:
            return None
        assert result.spent_micros == sum(c.price_micros for c in result.calls if c.ok)
        return result.spent_micros

    spent = anyio.run(main)
    assert market.paid <= budget
    assert spent is None or spent == market.paid


# --- what each task asks for, failures, stopping -----------------------------------------------------------------
def test_each_task_carries_the_ask_and_the_session_settings() -> None:
    market = Market([Reply(price=100)])
    policy = Policy(lambda_price=3.0, mu_latency=0.5)
    ask = Ask("Sum the rows.", kind="table", max_output_tokens=77, residency="eu", privacy=Privacy.CONFIDENTIAL)
    deadline = time.time_ns() + 60 * 10**9

    async def main() -> None:
        s = Session(
            cast(Requester, market), budget_micros=900, deadline_ns=deadline, bid_window_ms=123, policy=policy
        )
        await s.call(ask, role="answer", tiers=(Tier.EDGE, Tier.DEVICE))
        await s.call(ask, role="answer", privacy=Privacy.PUBLIC, deadline_ns=deadline - 10**9, agent="U-one")

    anyio.run(main)
    first, second = market.specs
    assert market.agents == [None, "U-one"], "a call for one agent asks that agent directly, others the market"
    assert (first.kind, first.messages, first.max_output_tokens) == ("table", ask.messages(), 77)
    assert first.est_input_tokens > 0 and first.policy == policy and first.bid_window_ms == 123
    c = first.constraints
    assert (c.residency, c.privacy, c.preferred_tiers, c.deadline_ns) == (
        "eu",
        Privacy.CONFIDENTIAL,
        [Tier.EDGE, Tier.DEVICE],
        deadline,
    )
    assert (second.constraints.privacy, second.constraints.deadline_ns) == (Privacy.PUBLIC, deadline - 10**9)


@pytest.mark.parametrize(
    ("reply", "failure", "exhausted"),
    [
        (Reply(fails=True, reason=ReasonCode.NO_BIDS, detail="nobody answered"), "no_bids", None),
        (
            Reply(fails=True, reason=ReasonCode.NO_ELIGIBLE_BIDS, detail="ineligible budget: bid x"),
            "budget",
            "budget",
        ),
        (Reply(fails=True, reason=ReasonCode.DEADLINE_EXCEEDED), "deadline_exceeded", "deadline"),
        (Reply(fails=True, reason=ReasonCode.ACK_TIMEOUT), "ack_timeout", None),
    ],
)
def test_a_failed_call_is_recorded_and_budget_or_deadline_stops_the_run(
    reply: Reply, failure: str, exhausted: str | None
) -> None:
    market = Market([reply, Reply(price=10)])

    async def main() -> Session:
        s = _session(market, 1_000)
        assert await s.call(ASK, role="answer") is None
        await s.call(ASK, role="again")
        return s

    s = anyio.run(main)
    first = s.calls[0]
    assert (first.failure, first.task_id, first.detail) == (failure, f"{1:032x}", reply.detail)
    assert s.exhausted == exhausted
    if exhausted is None:  # the next call runs
        assert s.calls[1].ok and s.spent_micros == 10 and len(market.specs) == 2
    else:  # refused at once, for the same reason
        assert s.calls[1].failure == exhausted and len(market.specs) == 1


def test_no_call_starts_with_less_time_left_than_min_call_ms() -> None:
    market = Market()

    async def main() -> Session:
        s = Session(cast(Requester, market), budget_micros=100, deadline_ns=time.time_ns() + 50 * 10**6)
        assert await s.call(ASK, role="answer") is None
        return s

    s = anyio.run(main)
    assert market.specs == [] and s.exhausted == "deadline"
    assert [(c.role, c.failure, c.max_price_micros) for c in s.calls] == [("answer", "deadline", 0)]


def test_call_many_seats_avoid_the_agents_kept_by_the_other_seats() -> None:
    market = Market()

    async def main() -> None:
        s = _session(market, 900)
        with s.stage("round"):
            await s.call_many([ASK] * 3, role="seat", tiers=(Tier.CLOUD,), keep=["a", None, "c"])

    anyio.run(main)
    assert [set(a) for a in market.avoids] == [{"c"}, {"a", "c"}, {"a"}]  # type: ignore[call-overload]
    assert all(spec.constraints.preferred_tiers == [Tier.CLOUD] for spec in market.specs)


def test_run_strategy_reports_what_the_run_did() -> None:
    market = Market([Reply(price=40, confidence=3), Reply(price=60)])
    cascade = Cascade(first=Single(), then=Single(), verifier=SelfConfidence())
    seen: list[str] = []
    policy = Policy(lambda_price=2.0)

    async def main() -> object:
        return await run_strategy(
            cast(Requester, market),
            cascade,
            ASK,
            budget_micros=500,
            deadline_ms=60_000,
            bid_window_ms=70,
            policy=policy,
            on_call=lambda c: seen.append(c.role),
        )

    result = anyio.run(main)
    assert result.strategy == "cascade" and result.spent_micros == 100 and result.budget_micros == 500
    assert [c.role for c in result.calls] == seen == ["draft/answer", "escalate/answer"]
    assert result.stopped is None and result.answer.startswith("42") and result.latency_ms > 0
    assert result.confidence is None  # the escalation's answer carries no verdict of its own
    assert [(s.bid_window_ms, s.policy) for s in market.specs] == [(70, policy)] * 2
    first = result.calls[0]
    assert (first.task_id, first.agent_id, first.model, first.price_micros) == (f"{1:032x}", "agent-1", "m", 40)
    assert (
        first.outcome is not None
        and first.outcome.price_micros == 40
        and result.answered_by
        == [
            "agent-1",
            "agent-2",
        ]
    )


def test_a_confident_draft_is_the_answer_and_its_confidence_is_reported() -> None:
    market = Market([Reply(price=40, confidence=9)])
    cascade = Cascade(first=Single(), then=Single(), verifier=SelfConfidence())

    async def main() -> object:
        return await run_strategy(cast(Requester, market), cascade, ASK, budget_micros=500, deadline_ms=60_000)

    result = anyio.run(main)
    assert result.confidence == pytest.approx(0.9) and len(result.calls) == 1


def test_a_run_that_ran_out_of_budget_says_so() -> None:
    market = Market([Reply(price=FULL, confidence=2)])
    cascade = Cascade(first=Single(), then=Single(), verifier=SelfConfidence())

    async def main() -> object:
        return await run_strategy(cast(Requester, market), cascade, ASK, budget_micros=1, deadline_ms=60_000)

    result = anyio.run(main)  # one micro-USD: the draft may spend it, the escalation finds nothing left
    assert market.caps == [1] and result.spent_micros == 1 and result.stopped == "budget"
    assert [c.failure for c in result.calls] == [None, "budget"] and result.answer.startswith("42")


def test_notes_go_into_the_system_message() -> None:
    plain = Ask("Q?", system="Be brief.")
    assert [m.content for m in plain.messages()] == ["Be brief.", "Q?"]
    noted = plain.with_notes("A draft: 41.")
    assert noted.notes == "A draft: 41." and [m.content for m in noted.messages()] == [
        "Be brief.\n\nA draft: 41.",
        "Q?",
    ]


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ([Reply(fails=True, reason=ReasonCode.ACK_TIMEOUT)], "ack_timeout"),
        (
            [Reply(fails=True, reason=ReasonCode.NO_BIDS), Reply(fails=True, reason=ReasonCode.ACK_TIMEOUT)],
            "ack_timeout",
        ),
        ([Reply(fails=True, reason=ReasonCode.NO_ELIGIBLE_BIDS, detail="over budget")], "budget"),
    ],
)
def test_a_run_without_an_answer_fails_with_the_reason(replies: list[Reply], reason: str) -> None:
    market = Market(replies)
    route = Cascade(first=Single(), then=Single(), verifier=SelfConfidence())

    async def main() -> None:
        await run_strategy(cast(Requester, market), route, ASK, budget_micros=500, deadline_ms=60_000)

    with pytest.raises(StrategyFailed) as info:
        anyio.run(main)
    assert info.value.reason == reason and info.value.strategy == "cascade"
    assert f"({info.value.calls[0].role}:" in str(info.value)
