"""Running a strategy: one session (budget, deadline) per run, and the quality signals its vote leaves behind."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Final

from accord.protocol.messages import Policy
from accord.runtime.requester import Requester
from accord.strategies.answers import agrees
from accord.strategies.base import Ask, CallRecord, Session, Strategy, StrategyFailed, StrategyResult

__all__ = ["run_strategy", "score_by_agreement"]


async def run_strategy(
    requester: Requester,
    strategy: Strategy,
    ask: Ask,
    *,
    budget_micros: int,
    deadline_ms: int,
    bid_window_ms: int = 50,
    policy: Policy | None = None,
    on_call: Callable[[CallRecord], None] | None = None,
) -> StrategyResult:
    """Run ``strategy`` for ``ask`` within ``budget_micros`` (all calls together) and ``deadline_ms`` from now."""
    started = time.perf_counter()
    session = Session(
        requester,
        budget_micros=budget_micros,
        deadline_ns=time.time_ns() + deadline_ms * 1_000_000,
        bid_window_ms=bid_window_ms,
        policy=policy,
        on_call=on_call,
    )
    answer = await strategy.run(ask, session)
    if answer is not None:
        score_by_agreement(
            requester, session.calls, answer.text, ask.form, run_id=uuid.uuid4().hex, question=ask.prompt
        )
    if answer is None:
        failures = [c.failure for c in session.calls if c.failure]
        reason = session.exhausted or (failures[-1] if failures else "no_answer")
        raise StrategyFailed(strategy.name, reason or "no_answer", session.calls)
    return StrategyResult(
        strategy=strategy.name,
        answer=answer.text,
        calls=tuple(session.calls),
        spent_micros=session.spent_micros,
        budget_micros=budget_micros,
        latency_ms=(time.perf_counter() - started) * 1000,
        stopped=session.exhausted,
        confidence=answer.confidence,
    )


_VOTING_ROLES: Final = frozenset({"answer", "debate1"})
"""The calls whose answers are scored: independent answers to the question (an ensemble's, a debate's first
round). Later debate rounds saw the other seats' answers, so their agreement says less about the agent."""


def score_by_agreement(
    requester: Requester, calls: Sequence[CallRecord], final: str, form: str, *, run_id: str, question: str = ""
) -> int:
    """Give every answer of a vote its quality signal: 1.0 when it agrees with the run's final answer (as the vote
    compares answers: :func:`~accord.strategies.answers.agrees`, given the ``question``), 0.0 when it does not
    (source ``judge`` when a judge decided, else ``vote``). Only runs with two answers or more to compare say
    anything; returns how many were scored."""
    voters = [c for c in calls if c.ok and c.role in _VOTING_ROLES and c.task_id and c.agent_id]
    if len(voters) < 2:
        return 0
    source = "judge" if any(c.ok and c.role == "judge" for c in calls) else "vote"
    for call in voters:
        assert call.answer is not None and call.task_id is not None and call.agent_id is not None
        agreed = agrees(call.answer, final, form, question)
        requester.record_quality(call.task_id, call.agent_id, 1.0 if agreed else 0.0, source, run_id=run_id)
    return len(voters)
