"""Mixture-of-agents (Wang et al., 2024): layers of proposers, each layer seeing the previous layer's answers,
then one aggregator task that synthesises the last layer's answers into the final one.

``layers=(3,)`` is the classic single proposer layer; ``(3, 3)`` adds a refining layer. Proposers of one layer
run side by side on different agents. When budget or time runs out before the aggregator answers, the run falls
back to a majority vote over the last layer that answered (and says it stopped early).
"""

from __future__ import annotations

from dataclasses import dataclass

from accord.protocol.messages import Tier
from accord.strategies.answers import majority
from accord.strategies.base import Answer, Ask, CallRecord, Session, answered, as_answer
from accord.strategies.prompts import aggregate_notes

__all__ = ["MixtureOfAgents"]


@dataclass(frozen=True)
class MixtureOfAgents:
    layers: tuple[int, ...] = (3,)
    proposer_tiers: tuple[Tier, ...] = ()
    aggregator_tiers: tuple[Tier, ...] = (Tier.CLOUD,)
    name: str = "moa"

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        last: list[CallRecord] = []
        for depth, width in enumerate(self.layers):
            stage = ask if not last else ask.with_notes(aggregate_notes([r.answer or "" for r in last]))
            role = "propose" if depth == 0 else f"refine{depth}"
            layer = answered(await session.call_many([stage] * width, role=role, tiers=self.proposer_tiers))
            if not layer:
                break
            last = layer
        if not last:
            return None
        final = await session.call(
            ask.with_notes(aggregate_notes([r.answer or "" for r in last])),
            role="aggregate",
            tiers=self.aggregator_tiers,
        )
        if final is not None:
            return as_answer(final)
        return majority(last, ask.form, ask.prompt)
