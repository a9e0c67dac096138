"""The one-award strategies: ``single`` (the market picks among the given tiers) and ``route`` (a learned router
picks the tier per question).

``route`` asks its router (:mod:`accord.routing`) for the predicted benefit of the strong model on this
question (a quality gap in 0..1) and sends it to the strong tiers when the gap is worth it, else to the weak
tiers. "Worth it" is ``score >= threshold``; with ``value_micros`` (what one unit of quality is worth to the
caller) it is ``score * value_micros >= price gap``, the price gap estimated from the cheapest advertised price
sheets of each side for this question's token counts. Either way a side none of whose advertised agents can
finish before the deadline (time to first token plus decoding ``max_output_tokens``) is not chosen. The market
then weighs price and latency among the chosen tiers' bids (the task's Policy). Without a router the choice is
the market's alone. With ``fallback`` a question whose chosen tier produced no answer (no
eligible bid within budget, a failed attempt) is tried once on the other tier while budget and time remain.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from accord.protocol.messages import Tier
from accord.protocol.pricing import estimate_prompt_tokens
from accord.routing.base import Query
from accord.strategies.base import Answer, Ask, Session, as_answer

__all__ = ["Route", "Scorer", "Single"]


class Scorer(Protocol):
    """What a strategy needs of a router (:class:`accord.routing.base.Router` has it)."""

    def score(self, query: Query) -> float:
        """Predicted benefit of the strong model for this query (higher: escalate)."""
        ...


@dataclass(frozen=True)
class Single:
    """One task, awarded by the market among ``tiers`` (empty: any tier), or to ``agent`` (its id) directly:
    an award from the price sheet it advertised, no bid round (spec 6.5)."""

    tiers: tuple[Tier, ...] = ()
    name: str = "single"
    agent: str | None = None

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        record = await session.call(ask, role="answer", tiers=self.tiers, agent=self.agent)
        return as_answer(record) if record is not None else None


@dataclass(frozen=True)
class Route:
    """One award on the weak or strong tiers, chosen per question by ``router`` (see the module docstring)."""

    router: Scorer | None = None
    threshold: float = 0.5
    weak: tuple[Tier, ...] = (Tier.DEVICE, Tier.EDGE)
    strong: tuple[Tier, ...] = (Tier.CLOUD,)
    fallback: bool = True
    value_micros: int | None = None
    """What one unit of quality (0..1 scale) is worth, in micro-USD; None: decide by ``threshold`` alone."""
    name: str = "route"

    def choose(self, ask: Ask, session: Session | None = None) -> tuple[Tier, ...]:
        if self.router is None:
            return ()
        gap = self.router.score(Query(text=ask.prompt, kind=ask.form, category=ask.category))
        sheets = _cheapest(session, ask, self.weak, self.strong) if session is not None else None
        if sheets is not None:
            (weak_price, weak_ok), (strong_price, strong_ok) = sheets
            if strong_ok != weak_ok:  # only one side can make the deadline
                return self.strong if strong_ok else self.weak
            if self.value_micros is not None and weak_price is not None and strong_price is not None:
                return self.strong if gap * self.value_micros >= strong_price - weak_price else self.weak
        return self.strong if gap >= self.threshold else self.weak

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        tiers = self.choose(ask, session)
        record = await session.call(ask, role="answer", tiers=tiers)
        if record is None and self.fallback and tiers and session.exhausted is None:
            other = self.weak if tiers == self.strong else self.strong
            record = await session.call(ask, role="fallback", tiers=other)
        return as_answer(record) if record is not None else None


def _cheapest(
    session: Session, ask: Ask, weak: tuple[Tier, ...], strong: tuple[Tier, ...]
) -> tuple[tuple[int | None, bool], tuple[int | None, bool]] | None:
    """Per side (weak, strong): the cheapest advertised price for this question and whether any advertised agent
    of that side can answer before the deadline; None when the registry knows no agent."""
    now = time.time_ns()
    left_ms = (session.deadline_ns - now) / 1e6
    tokens_in = estimate_prompt_tokens(ask.messages())
    sides: dict[Tier, tuple[int, bool]] = {}
    for entry in session.requester.registry.live(now=now):
        advert = entry.advert
        for model in advert.models:
            price = math.ceil(
                (tokens_in * model.price_in_per_1k_micros + ask.max_output_tokens * model.price_out_per_1k_micros)
                / 1000
            )
            fits = model.ttft_ms + 1000 * ask.max_output_tokens / model.tokens_per_s <= left_ms
            best = sides.get(advert.tier)
            sides[advert.tier] = (
                price if best is None else min(best[0], price),
                fits or (best is not None and best[1]),
            )
    if not sides:
        return None

    def side(tiers: tuple[Tier, ...]) -> tuple[int | None, bool]:
        known = [sides[t] for t in (tiers or tuple(Tier)) if t in sides]
        if not known:
            return None, False
        return min(p for p, _ in known), any(ok for _, ok in known)

    return side(weak), side(strong)
