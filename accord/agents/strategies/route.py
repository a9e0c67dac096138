"""The one-award strategies: ``single`` (the market picks among the given tiers) and ``route`` (a learned router
picks the tier per question).

``route`` asks its router (:mod:`accord.agents.routers`) for the predicted benefit of the strong model on this
question and sends it to the strong tiers when the score reaches the threshold, else to the weak tiers. The
market then weighs price and latency among that tier's bids (the task's Policy) within the deadline. Without a
router the choice is the market's alone. With ``fallback`` a question whose chosen tier produced no answer (no
eligible bid within budget, a failed attempt) is tried once on the other tier while budget and time remain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from accord.agents.routers.base import Query
from accord.agents.strategies.base import Answer, Ask, Session, as_answer
from accord.protocol.messages import Tier

__all__ = ["Route", "Scorer", "Single"]


class Scorer(Protocol):
    """What a strategy needs of a router (:class:`accord.agents.routers.base.Router` has it)."""

    def score(self, query: Query) -> float:
        """Predicted benefit of the strong model for this query (higher: escalate)."""
        ...


@dataclass(frozen=True)
class Single:
    """One task, awarded by the market among ``tiers`` (empty: any tier)."""

    tiers: tuple[Tier, ...] = ()
    name: str = "single"

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        record = await session.call(ask, role="answer", tiers=self.tiers)
        return as_answer(record) if record is not None else None


@dataclass(frozen=True)
class Route:
    """One award on the weak or strong tiers, chosen per question by ``router`` (see the module docstring)."""

    router: Scorer | None = None
    threshold: float = 0.5
    weak: tuple[Tier, ...] = (Tier.DEVICE, Tier.EDGE)
    strong: tuple[Tier, ...] = (Tier.CLOUD,)
    fallback: bool = True
    name: str = "route"

    def choose(self, ask: Ask) -> tuple[Tier, ...]:
        if self.router is None:
            return ()
        query = Query(text=ask.prompt, kind=ask.form, category=ask.category)
        return self.strong if self.router.score(query) >= self.threshold else self.weak

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        tiers = self.choose(ask)
        record = await session.call(ask, role="answer", tiers=tiers)
        if record is None and self.fallback and tiers and session.exhausted is None:
            other = self.weak if tiers == self.strong else self.strong
            record = await session.call(ask, role="fallback", tiers=other)
        return as_answer(record) if record is not None else None
