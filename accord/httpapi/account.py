"""Accord's account of an answer (who answered, which model, at what price, the attestation), as JSON: the
``accord`` object of the HTTP API and ``accord ask --json``."""

from __future__ import annotations

import hashlib
import json

from accord.runtime.requester import TaskOutcome
from accord.strategies import CallRecord, StrategyResult

__all__ = ["answer_json", "call_json", "main_outcome", "strategy_json"]


def call_json(outcome: TaskOutcome) -> dict[str, object]:
    """One accepted task: agent (id, certified name, tier, region), model, price, latency, the attestation's id
    (the task id), where the HTTP API serves it and its SHA-256."""
    cert = outcome.attestation.certificate
    return {
        "agent": outcome.agent_id,
        "agent_name": cert.name,
        "tier": cert.tier.value,
        "region": cert.region,
        "model": outcome.model,
        "price_micros": outcome.price_micros,
        "latency_ms": round(outcome.latency_ms, 3),
        "task_id": outcome.task_id,
        "attempt": outcome.attempt,
        "attestation_id": outcome.task_id,
        "attestation_url": f"/v1/attestations/{outcome.task_id}",
        "attestation_sha256": hashlib.sha256(outcome.result.attestation).hexdigest(),
    }


def main_outcome(result: StrategyResult) -> TaskOutcome | None:
    """The task whose output is the run's answer (the first call that answered it, else the last one that
    answered anything)."""
    answered = [c for c in result.calls if c.ok and c.outcome is not None]
    main = next((c for c in answered if c.answer == result.answer), answered[-1] if answered else None)
    return main.outcome if main is not None else None


def _record_json(call: CallRecord) -> dict[str, object]:
    extra = call_json(call.outcome) if call.outcome is not None else {}
    return {"role": call.role, "failure": call.failure, **extra}


def strategy_json(result: StrategyResult) -> dict[str, object]:
    return {
        "strategy": result.strategy,
        "spent_micros": result.spent_micros,
        "budget_micros": result.budget_micros,
        "stopped": result.stopped,
        "calls": [_record_json(c) for c in result.calls],
    }


def answer_json(answer: str, outcome: TaskOutcome, result: StrategyResult | None = None) -> dict[str, object]:
    """The answer with the account of the task that produced it and its attestation (the DSSE envelope)."""
    out: dict[str, object] = {"answer": answer, **call_json(outcome)}
    out["attestation"] = json.loads(outcome.result.attestation)
    if result is not None:
        out.update(strategy_json(result))
    return out
