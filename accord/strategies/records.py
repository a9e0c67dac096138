"""Strategy calls as outcome records, the data routers learn from (:mod:`accord.routing.records`).

Every answered call of a run becomes one :class:`~accord.routing.records.Outcome`: the question as the router sees
it (the user message, the Ask's form and category), who answered (agent id, attested model), the price paid and
the latency. The quality signal is not known when the answer arrives: pass ``correct`` / ``score`` when the
caller has feedback (a grader, a user's thumbs-up), or log the record without one and join feedback later by
``query_id`` (the task id).
"""

from __future__ import annotations

import time

from accord.routing.records import Outcome
from accord.strategies.base import Ask, CallRecord

__all__ = ["outcome_of"]


def outcome_of(
    ask: Ask, call: CallRecord, *, correct: bool | None = None, score: float | None = None, score_max: float = 1.0
) -> Outcome | None:
    """The outcome record of an answered call (None for a call that did not answer)."""
    if call.answer is None or call.outcome is None:
        return None
    usage = call.outcome.result.usage
    return Outcome(
        query_id=call.outcome.task_id,
        prompt=ask.prompt,
        model=call.outcome.model,
        agent=call.outcome.agent_id,
        kind=ask.form,
        category=ask.category,
        correct=correct,
        score=score,
        score_max=score_max,
        response=call.answer,
        cost_micros=call.price_micros,
        latency_ms=round(call.latency_ms),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        source=f"mesh:{call.role}",
        ts_ns=time.time_ns(),
    )
