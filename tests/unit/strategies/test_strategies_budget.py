"""A run's budget (accord/strategies/base.py): each call may spend only what is left, side-by-side calls reserve
their shares, and for any nesting of strategies and any prices the run never pays more than its budget.

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

from accord.protocol.messages import ReasonCode
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
    confidence: int = 9
    pauses: int = 1
    """Scheduling points before the answer: side-by-side calls end in varying orders."""


@dataclass
class Market:
    """Answers task i with ``replies[i % len(replies)]``; records every ceiling and what it paid."""

    replies: Sequence[Reply] = (Reply(),)
    budget: int | None = None
    """When set: at every submit, what is paid plus the ceilings of the calls in flight must fit in it."""
    caps: list[int] = field(default_factory=list)
    paid: int = 0
    in_flight: list[int] = field(default_factory=list)

    async def submit(self, spec: TaskSpec, *, avoid: object = None) -> TaskOutcome:
        cap = spec.constraints.max_price_micros
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
            raise TaskFailed(f"{n:032x}", ReasonCode.NO_BIDS)
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
