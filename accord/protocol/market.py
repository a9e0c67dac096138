"""Allocation rules of the market (spec section 6): pure functions over offers, no state, no clock.

An :class:`Offer` is what the requester compares: a Bid (bid round) or a price-sheet quote from the registry
(direct award). Selection is always, in this order:

1. **Eligibility** (:func:`eligibility`): an offer that fails any rule is out, whatever its score.
2. **Score** (:func:`score`): ``predicted quality - lambda * price(USD) - mu * latency(s)`` with the task's
   :class:`~accord.protocol.messages.Policy`; predicted quality comes from a pluggable
   :class:`QualityPredictor` (default: the claim tempered by a Beta-prior :class:`Reputation`).
3. **Order** (:func:`rank_key`): higher score first, then lower price, lower latency, agent id, bid id, so the
   same offers give the same ranking whatever order they arrived in.
4. **Payment** (:func:`payment`): by mechanism; see :func:`vickrey_price` for what "second price" means with a
   multi-attribute score.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Final, Protocol

from msgspec import Struct

from accord.protocol.messages import Bid, Constraints, Mechanism, ModelOffer, Policy, Task, Tier

__all__ = [
    "ClaimPredictor",
    "Ineligibility",
    "Offer",
    "QualityPredictor",
    "Ranking",
    "Reputation",
    "ReputationPredictor",
    "Scored",
    "Selection",
    "TrustPolicy",
    "eligibility",
    "payment",
    "rank",
    "rank_key",
    "score",
    "select",
    "sheet_quote",
    "vickrey_price",
]

MICROS_PER_USD: Final = 1_000_000
NS_PER_MS: Final = 1_000_000

TrustPolicy = Callable[[str, Constraints], bool]
"""``trusted(agent_id, constraints)``: True iff the agent's key is known and not revoked, and its certificate
allows the task's residency class and privacy class. Supplied by the shell (the trust store)."""


class Offer(Struct, frozen=True, kw_only=True, gc=False):
    """One candidate for an award: a bid, or (``direct``) a quote computed from an advertised price sheet."""

    agent_id: str
    bid_id: str
    """The Bid's id, or for a direct offer the id of the Advertise the price sheet came from."""
    digest: str
    """SHA-256 of the bid's (or the Advertise's) payload bytes; the Award binds it."""
    model: str
    price_micros: int
    latency_ms: int
    quality: float
    """The agent's own claim (0..1)."""
    valid_until_ns: int
    tier: Tier
    region: str
    residency: tuple[str, ...] = ()
    direct: bool = False

    @classmethod
    def from_bid(cls, bid: Bid, digest: str) -> Offer:
        return cls(
            agent_id=bid.sender,
            bid_id=bid.id,
            digest=digest,
            model=bid.model,
            price_micros=bid.price_micros,
            latency_ms=bid.est_latency_ms,
            quality=bid.quality,
            valid_until_ns=bid.valid_until_ns,
            tier=bid.tier,
            region=bid.region,
            residency=tuple(bid.residency),
        )


class Ineligibility(enum.StrEnum):
    """The first eligibility rule an offer fails (spec 6.1, checked in this order)."""

    EXPIRED = "expired"
    UNTRUSTED = "untrusted"
    RESIDENCY = "residency"
    TIER = "tier"
    BUDGET = "budget"
    DEADLINE = "deadline"
    QUALITY = "quality"


class QualityPredictor(Protocol):
    """Predicts the quality (0..1) of an offer's answer to a task. Routers plug in here."""

    def predict(self, offer: Offer, task: Task) -> float: ...


class ClaimPredictor:
    """Takes every bidder at its word (the claim). For tests and closed meshes of trusted agents."""

    def predict(self, offer: Offer, task: Task) -> float:
        return offer.quality


class Reputation:
    """Per-agent outcome record: the sum and count of outcome scores in [0, 1] (1 = accepted result).

    Fed by the shell from the requester's ``AttemptEnded`` actions (or from a judge's quality signal).
    """

    __slots__ = ("_stats",)

    def __init__(self) -> None:
        self._stats: dict[str, tuple[float, int]] = {}

    def record(self, agent_id: str, outcome: float) -> None:
        if not 0.0 <= outcome <= 1.0:
            raise ValueError(f"outcome must be in [0, 1], got {outcome}")
        total, count = self._stats.get(agent_id, (0.0, 0))
        self._stats[agent_id] = (total + outcome, count + 1)

    def stats(self, agent_id: str) -> tuple[float, int]:
        """(sum of outcomes, number of outcomes) for one agent; (0.0, 0) if unknown."""
        return self._stats.get(agent_id, (0.0, 0))

    def __len__(self) -> int:
        return len(self._stats)


class ReputationPredictor:
    """The default predictor: the bidder's claim tempered by its record.

    The claim ``q`` is a Beta prior of strength ``k`` (``Beta(k*q, k*(1-q))``); each recorded outcome is one
    observation; the prediction is the posterior mean ``(k*q + sum) / (k + n)``. An unknown agent is predicted
    at its claim; an agent that keeps failing drifts to 0 whatever it claims.
    """

    __slots__ = ("prior_strength", "reputation")

    def __init__(self, reputation: Reputation | None = None, *, prior_strength: float = 10.0) -> None:
        if prior_strength <= 0:
            raise ValueError("prior_strength must be positive")
        self.reputation = reputation if reputation is not None else Reputation()
        self.prior_strength = prior_strength

    def predict(self, offer: Offer, task: Task) -> float:
        total, count = self.reputation.stats(offer.agent_id)
        k = self.prior_strength
        return (k * offer.quality + total) / (k + count)


def sheet_quote(
    model: ModelOffer, *, input_tokens: int, output_tokens: int, overhead_ms: int = 0, load: int = 1
) -> tuple[int, int]:
    """(price_micros, latency_ms) of one task on one advertised model, from its price sheet.

    price = ceil(input_tokens * price_in_per_1k / 1000) + ceil(output_tokens * price_out_per_1k / 1000);
    latency = overhead + ttft + ceil(output_tokens * load / tokens_per_s) seconds, in ms (``load`` > 1 when
    concurrent jobs share the backend's throughput).
    """
    price = -(-input_tokens * model.price_in_per_1k_micros // 1000) - (
        -output_tokens * model.price_out_per_1k_micros // 1000
    )
    gen_ms = math.ceil(output_tokens * max(load, 1) * 1000 / model.tokens_per_s)
    return price, overhead_ms + model.ttft_ms + gen_ms


def score(predicted_quality: float, price_micros: int, latency_ms: int, policy: Policy) -> float:
    """Expected utility: ``q - lambda_price * price_USD - mu_latency * latency_s``."""
    return (
        predicted_quality
        - policy.lambda_price * (price_micros / MICROS_PER_USD)
        - policy.mu_latency * (latency_ms / 1000)
    )


def eligibility(
    offer: Offer, task: Task, *, now: int, trusted: TrustPolicy, predicted_quality: float
) -> Ineligibility | None:
    """The first rule ``offer`` breaks for ``task`` at time ``now`` (ns), or None if it is eligible.

    Rules in order: still valid; trusted key certified for the residency and privacy classes; serves the
    residency class; tier among the preferred ones; price within budget; ``now + latency`` not after the
    deadline; predicted quality at least ``min_quality``.
    """
    c = task.constraints
    if offer.valid_until_ns <= now:
        return Ineligibility.EXPIRED
    if not trusted(offer.agent_id, c):
        return Ineligibility.UNTRUSTED
    if c.residency is not None and c.residency not in offer.residency:
        return Ineligibility.RESIDENCY
    if c.preferred_tiers and offer.tier not in c.preferred_tiers:
        return Ineligibility.TIER
    if offer.price_micros > c.max_price_micros:
        return Ineligibility.BUDGET
    if now + offer.latency_ms * NS_PER_MS > c.deadline_ns:
        return Ineligibility.DEADLINE
    if predicted_quality < c.min_quality:
        return Ineligibility.QUALITY
    return None


class Scored(Struct, frozen=True, gc=False):
    """An eligible offer with its predicted quality and score."""

    offer: Offer
    predicted: float
    score: float


def rank_key(s: Scored) -> tuple[float, int, int, str, str]:
    """The total order of eligible offers: score desc, then price, latency, agent id, bid id ascending."""
    o = s.offer
    return (-s.score, o.price_micros, o.latency_ms, o.agent_id, o.bid_id)


class Ranking(Struct, frozen=True):
    eligible: list[Scored]
    """Best first, by :func:`rank_key`."""
    ineligible: list[tuple[Offer, Ineligibility]]


def rank(
    offers: Iterable[Offer],
    task: Task,
    *,
    now: int,
    trusted: TrustPolicy,
    predictor: QualityPredictor,
    exclude: Collection[str] = (),
    limit: int | None = None,
) -> Ranking:
    """Split ``offers`` into eligible (scored, best first) and ineligible (with the rule broken).

    Offers from agents in ``exclude`` (those that already had an attempt) are skipped silently. Under a posted
    price every offer is scored at the posted price (``max_price_micros``), so price does not rank them.
    ``limit``: keep only the best ``limit`` eligible offers (a partial sort).
    """
    policy = task.policy
    posted = task.mechanism is Mechanism.POSTED_PRICE
    max_price = task.constraints.max_price_micros
    eligible: list[Scored] = []
    ineligible: list[tuple[Offer, Ineligibility]] = []
    for offer in offers:
        if offer.agent_id in exclude:
            continue
        predicted = predictor.predict(offer, task)
        why = eligibility(offer, task, now=now, trusted=trusted, predicted_quality=predicted)
        if why is not None:
            ineligible.append((offer, why))
            continue
        price = max_price if posted else offer.price_micros
        eligible.append(Scored(offer, predicted, score(predicted, price, offer.latency_ms, policy)))
    if limit is not None and limit < len(eligible):
        eligible = heapq.nsmallest(limit, eligible, key=rank_key)
    else:
        eligible.sort(key=rank_key)
    return Ranking(eligible, ineligible)


def vickrey_price(winner: Scored, runner_up: Scored | None, task: Task) -> int:
    """The second price in score terms: the highest price at which the winner's score would still tie the
    runner-up's, capped at ``max_price_micros``.

    With ``Δ = (q_w - mu * t_w) - (q_r - mu * t_r)`` (the winner's non-price advantage, quality and latency
    from the ranking) the payment is ``p_r + floor(Δ * 1e6 / lambda)`` micros, clamped to
    ``[p_w, max_price]``. When quality and latency are equal this is exactly the runner-up's price. Without a
    runner-up (or with ``lambda_price == 0``, where price does not move the score) the reserve applies: the
    winner is paid ``max_price_micros``. Truthful bidding (price = cost) is a dominant strategy.
    """
    max_price = task.constraints.max_price_micros
    lam = task.policy.lambda_price
    w = winner.offer
    if runner_up is None or lam == 0:
        return max_price
    mu = task.policy.mu_latency
    r = runner_up.offer
    delta = (winner.predicted - mu * (w.latency_ms / 1000)) - (runner_up.predicted - mu * (r.latency_ms / 1000))
    raw = delta * MICROS_PER_USD / lam
    if raw >= max_price:  # also guards float overflow in floor()
        return max_price
    price = r.price_micros + math.floor(raw)
    return min(max(price, w.price_micros), max_price)


def payment(eligible: Sequence[Scored], task: Task, mechanism: Mechanism | None = None) -> int:
    """What the winner ``eligible[0]`` is paid under ``mechanism`` (default: the task's).

    First price and direct award: its own price. Second price: :func:`vickrey_price` against ``eligible[1]``.
    Posted price: ``max_price_micros``. Never more than ``max_price_micros``.
    """
    mech = task.mechanism if mechanism is None else mechanism
    winner = eligible[0]
    max_price = task.constraints.max_price_micros
    if mech is Mechanism.SECOND_PRICE:
        return vickrey_price(winner, eligible[1] if len(eligible) > 1 else None, task)
    if mech is Mechanism.POSTED_PRICE:
        return max_price
    return min(winner.offer.price_micros, max_price)


class Selection(Struct, frozen=True):
    winner: Scored
    runner_up: Scored | None
    price_micros: int
    ranking: Ranking


def select(
    offers: Iterable[Offer],
    task: Task,
    *,
    now: int,
    trusted: TrustPolicy,
    predictor: QualityPredictor,
    exclude: Collection[str] = (),
    mechanism: Mechanism | None = None,
) -> Selection | None:
    """The winning eligible offer and its payment, or None if no offer is eligible."""
    ranking = rank(offers, task, now=now, trusted=trusted, predictor=predictor, exclude=exclude)
    if not ranking.eligible:
        return None
    runner_up = ranking.eligible[1] if len(ranking.eligible) > 1 else None
    price = payment(ranking.eligible, task, mechanism)
    return Selection(ranking.eligible[0], runner_up, price, ranking)
