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

import msgspec
from msgspec import Struct

from accord.protocol.messages import MAX_SKEW_NS, Bid, Mechanism, ModelOffer, Policy, Privacy, Task, Tier
from accord.protocol.pricing import sheet_price

__all__ = [
    "ClaimPredictor",
    "CredentialLookup",
    "Credentials",
    "Ineligibility",
    "Offer",
    "QualityPredictor",
    "Ranking",
    "Record",
    "Reputation",
    "ReputationPredictor",
    "Scored",
    "Selection",
    "contradicts",
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


class Credentials(Struct, frozen=True, gc=False):
    """What a valid certificate says about an agent (spec 10.2): the only source of its tier, region, residency
    and privacy classes for eligibility. Claims in Bids and Advertises are checked against it, never trusted."""

    tier: Tier
    region: str
    residency: frozenset[str] = frozenset()
    privacy: frozenset[Privacy] = frozenset({Privacy.PUBLIC})


CredentialLookup = Callable[[str], Credentials | None]
"""``credentials(agent_id)``: the agent's certified credentials now, or None when its key has no valid
certificate (unknown, expired, not yet valid, revoked). Supplied by the shell (the trust store)."""


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
            valid_until_ns=bid.valid_until_ns + MAX_SKEW_NS,  # the bidder's clock, in the requester's terms
            tier=bid.tier,
            region=bid.region,
            residency=tuple(bid.residency),
        )


class Ineligibility(enum.StrEnum):
    """The first eligibility rule an offer fails (spec 6.1, checked in this order)."""

    EXPIRED = "expired"
    UNTRUSTED = "untrusted"
    CLAIM = "claim"
    """The offer's tier, region or residency classes contradict the sender's certificate."""
    RESIDENCY = "residency"
    PRIVACY = "privacy"
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


class Record(Struct, frozen=True, gc=False):
    """An agent's track record (spec 6.2): attempts it did not deliver, results delivered without a quality
    signal, and the sum and number of the quality signals (0..1) of those that had one (a judge, a vote,
    ground truth)."""

    failed: int = 0
    unscored: int = 0
    scored: int = 0
    quality_sum: float = 0.0

    @property
    def attempts(self) -> int:
        return self.failed + self.unscored + self.scored


class Reputation:
    """Per-agent track records, fed by the shell from the requester's ``AttemptEnded`` actions and from the
    quality signals strategies and judges produce; a requester restores it from its outcome store at start."""

    __slots__ = ("_records",)

    def __init__(self, records: dict[str, Record] | None = None) -> None:
        self._records: dict[str, Record] = dict(records) if records is not None else {}

    def record_failure(self, agent_id: str) -> None:
        """An awarded attempt that ended without a result: counts as quality 0 at once."""
        r = self._records.get(agent_id, _EMPTY)
        self._records[agent_id] = msgspec.structs.replace(r, failed=r.failed + 1)

    def record_delivery(self, agent_id: str, quality: float | None = None) -> None:
        """An accepted result, with its quality signal in [0, 1] when one exists."""
        r = self._records.get(agent_id, _EMPTY)
        if quality is None:
            self._records[agent_id] = msgspec.structs.replace(r, unscored=r.unscored + 1)
            return
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        self._records[agent_id] = msgspec.structs.replace(
            r, scored=r.scored + 1, quality_sum=r.quality_sum + quality
        )

    def score_delivery(self, agent_id: str, quality: float) -> None:
        """A delivered result counted as unscored learns its quality later (a vote, a judge)."""
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        r = self._records.get(agent_id, _EMPTY)
        self._records[agent_id] = msgspec.structs.replace(
            r, unscored=max(0, r.unscored - 1), scored=r.scored + 1, quality_sum=r.quality_sum + quality
        )

    def get(self, agent_id: str) -> Record:
        return self._records.get(agent_id, _EMPTY)

    def __len__(self) -> int:
        return len(self._records)


_EMPTY: Final = Record()


class ReputationPredictor:
    """The default predictor: the bidder's claim ``c`` tempered by its record (spec 6.2).

    The claim weighs as ``k`` observations (``prior_strength``, default 2: a claim is cheap); a delivered result
    without a quality signal counts as one more observation at the claim; one with a signal counts at its
    quality; an attempt not delivered counts at 0::

        q = (c * (k + unscored) + quality_sum) / (k + unscored + scored + failed)

    An unknown agent is predicted at its claim; one that fails to deliver drops at once (a claim of 1.0 after one
    failure: 0.67), one that keeps delivering poor answers drifts to their quality whatever it claims.
    """

    __slots__ = ("prior_strength", "reputation")

    def __init__(self, reputation: Reputation | None = None, *, prior_strength: float = 2.0) -> None:
        if prior_strength <= 0:
            raise ValueError("prior_strength must be positive")
        self.reputation = reputation if reputation is not None else Reputation()
        self.prior_strength = prior_strength

    def predict(self, offer: Offer, task: Task) -> float:
        r = self.reputation.get(offer.agent_id)
        k = self.prior_strength + r.unscored
        return (k * offer.quality + r.quality_sum) / (k + r.scored + r.failed)


def sheet_quote(
    model: ModelOffer, *, input_tokens: int, output_tokens: int, overhead_ms: int = 0, load: int = 1
) -> tuple[int, int]:
    """(price_micros, latency_ms) of one task on one advertised model, from its price sheet (spec 6.7).

    price = :func:`~accord.protocol.pricing.sheet_price`; latency = overhead + ttft + ceil(output_tokens * load /
    tokens_per_s) seconds, in ms (``load`` > 1 when concurrent jobs share the backend's throughput).
    """
    price = sheet_price(input_tokens, output_tokens, model.price_in_per_1k_micros, model.price_out_per_1k_micros)
    gen_ms = math.ceil(output_tokens * max(load, 1) * 1000 / model.tokens_per_s)
    return price, overhead_ms + model.ttft_ms + gen_ms


def score(predicted_quality: float, price_micros: int, latency_ms: int, policy: Policy) -> float:
    """Expected utility: ``q - lambda_price * price_USD - mu_latency * latency_s``."""
    return (
        predicted_quality
        - policy.lambda_price * (price_micros / MICROS_PER_USD)
        - policy.mu_latency * (latency_ms / 1000)
    )


def contradicts(offer: Offer, credentials: Credentials) -> bool:
    """True iff the offer claims a tier or region other than its certificate's, or a residency class the
    certificate does not grant (claiming fewer classes is fine)."""
    return (
        offer.tier is not credentials.tier
        or offer.region != credentials.region
        or not credentials.residency.issuperset(offer.residency)
    )


def eligibility(
    offer: Offer, task: Task, *, now: int, credentials: CredentialLookup, predicted_quality: float
) -> Ineligibility | None:
    """The first rule ``offer`` breaks for ``task`` at time ``now`` (ns), or None if it is eligible.

    Rules in order (spec 6.1): still valid; a valid certificate; the offer's claims agree with it; the
    certificate grants the task's residency class and privacy class and a preferred tier; price within budget;
    ``now + latency`` not after the deadline; predicted quality at least ``min_quality``.
    """
    c = task.constraints
    if offer.valid_until_ns <= now:
        return Ineligibility.EXPIRED
    cred = credentials(offer.agent_id)
    if cred is None:
        return Ineligibility.UNTRUSTED
    if contradicts(offer, cred):
        return Ineligibility.CLAIM
    if c.residency is not None and c.residency not in cred.residency:
        return Ineligibility.RESIDENCY
    if c.privacy is not Privacy.PUBLIC and c.privacy not in cred.privacy:
        return Ineligibility.PRIVACY
    if c.preferred_tiers and cred.tier not in c.preferred_tiers:
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
    credentials: CredentialLookup,
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
        why = eligibility(offer, task, now=now, credentials=credentials, predicted_quality=predicted)
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
    credentials: CredentialLookup,
    predictor: QualityPredictor,
    exclude: Collection[str] = (),
    mechanism: Mechanism | None = None,
) -> Selection | None:
    """The winning eligible offer and its payment, or None if no offer is eligible."""
    ranking = rank(offers, task, now=now, credentials=credentials, predictor=predictor, exclude=exclude)
    if not ranking.eligible:
        return None
    runner_up = ranking.eligible[1] if len(ranking.eligible) > 1 else None
    price = payment(ranking.eligible, task, mechanism)
    return Selection(ranking.eligible[0], runner_up, price, ranking)
