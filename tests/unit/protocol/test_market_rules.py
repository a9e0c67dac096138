"""Market rules: eligibility, score, ranking and tie-breaks, payments per mechanism, quality predictors."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.protocol.market import (
    ClaimPredictor,
    Credentials,
    Ineligibility,
    Offer,
    Record,
    Reputation,
    ReputationPredictor,
    eligibility,
    payment,
    rank,
    rank_key,
    score,
    select,
    sheet_quote,
    vickrey_price,
)
from accord.protocol.messages import Constraints, Mechanism, ModelOffer, Policy, Privacy, Task, Tier
from tests.support.market_world import BASE_NS, MS, agent_id

NOW = BASE_NS
DIGEST = "cd" * 32
AGENTS = [agent_id(f"bidder-{i}") for i in range(64)]


def task(
    *,
    max_price: int = 1_000_000,
    deadline_ms: int = 10_000,
    mechanism: Mechanism = Mechanism.FIRST_PRICE,
    residency: str | None = None,
    tiers: tuple[Tier, ...] = (),
    min_quality: float = 0.0,
    lam: float = 1.0,
    mu: float = 0.01,
    privacy: Privacy = Privacy.PUBLIC,
) -> Task:
    return Task(
        id="0" * 32,
        sender=agent_id("requester"),
        ts=NOW,
        task_id="1" * 32,
        prompt_digest=DIGEST,
        constraints=Constraints(
            deadline_ns=NOW + deadline_ms * MS,
            max_price_micros=max_price,
            min_quality=min_quality,
            residency=residency,
            privacy=privacy,
            preferred_tiers=list(tiers),
        ),
        policy=Policy(lambda_price=lam, mu_latency=mu),
        mechanism=mechanism,
    )


def offer(i: int, *, price: int = 1_000, latency: int = 100, quality: float = 0.8, **kw: object) -> Offer:
    fields: dict[str, object] = {
        "agent_id": AGENTS[i],
        "bid_id": f"{i:032x}",
        "digest": DIGEST,
        "model": "m",
        "price_micros": price,
        "latency_ms": latency,
        "quality": quality,
        "valid_until_ns": NOW + 5_000 * MS,
        "tier": Tier.CLOUD,
        "region": "eu",
        "residency": ("eu",),
    }
    fields.update(kw)
    return Offer(**fields)  # type: ignore[arg-type]


CERT = Credentials(
    tier=Tier.CLOUD,
    region="eu",
    residency=frozenset({"eu"}),
    privacy=frozenset({Privacy.PUBLIC, Privacy.INTERNAL}),
)
"""What the bidders' certificates say, unless a test says otherwise (offers claim the same by default)."""


def trust_all(agent: str) -> Credentials:
    return CERT


def certified(**fields: object) -> Credentials:
    return msgspec.structs.replace(CERT, **fields)


CLAIMS = ClaimPredictor()


# --- eligibility -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected", "o", "t", "cert"),
    [
        (None, offer(0), task(), CERT),
        (Ineligibility.EXPIRED, offer(0, valid_until_ns=NOW), task(), CERT),
        (Ineligibility.UNTRUSTED, offer(0), task(), None),
        (Ineligibility.CLAIM, offer(0, tier=Tier.DEVICE), task(tiers=(Tier.DEVICE,)), CERT),
        (Ineligibility.CLAIM, offer(0, region="us"), task(), CERT),
        (Ineligibility.CLAIM, offer(0, residency=("eu", "us")), task(residency="us"), CERT),
        (Ineligibility.RESIDENCY, offer(0, residency=()), task(residency="us"), CERT),
        (Ineligibility.PRIVACY, offer(0), task(privacy=Privacy.CONFIDENTIAL), CERT),
        (None, offer(0), task(privacy=Privacy.INTERNAL), CERT),
        (
            Ineligibility.TIER,
            offer(0, tier=Tier.DEVICE),
            task(tiers=(Tier.CLOUD, Tier.EDGE)),
            certified(tier=Tier.DEVICE),
        ),
        (Ineligibility.BUDGET, offer(0, price=1_001), task(max_price=1_000), CERT),
        (Ineligibility.DEADLINE, offer(0, latency=10_001), task(deadline_ms=10_000), CERT),
        (Ineligibility.QUALITY, offer(0, quality=0.49), task(min_quality=0.5), CERT),
        (None, offer(0, price=1_000, latency=10_000, quality=0.5), task(max_price=1_000, min_quality=0.5), CERT),
    ],
)
def test_eligibility_rules(expected: Ineligibility | None, o: Offer, t: Task, cert: Credentials | None) -> None:
    got = eligibility(o, t, now=NOW, credentials=lambda a: cert, predicted_quality=o.quality)
    assert got is expected


def test_the_certificate_decides_not_the_claim() -> None:
    """A cloud-certified agent that claims to be a device never wins a device-only (confidential) task: its
    claim is refused; told the truth, its certificate rules it out of the tier."""
    device_only = task(tiers=(Tier.DEVICE,), privacy=Privacy.INTERNAL)
    liar = offer(1, tier=Tier.DEVICE, price=1)
    honest_device = offer(2, tier=Tier.DEVICE, price=500)
    certs = {AGENTS[1]: CERT, AGENTS[2]: certified(tier=Tier.DEVICE)}
    ranking = rank([liar, honest_device], device_only, now=NOW, credentials=certs.get, predictor=CLAIMS)
    assert [s.offer.agent_id for s in ranking.eligible] == [AGENTS[2]]
    assert ranking.ineligible == [(liar, Ineligibility.CLAIM)]
    truthful = offer(1, tier=Tier.CLOUD, price=1)
    assert eligibility(truthful, device_only, now=NOW, credentials=certs.get, predicted_quality=0.8) is (
        Ineligibility.TIER
    )


def test_score_formula() -> None:
    policy = Policy(lambda_price=2.0, mu_latency=0.5)
    assert score(0.9, 250_000, 400, policy) == pytest.approx(0.9 - 2.0 * 0.25 - 0.5 * 0.4)


def test_sheet_quote_rounds_up_and_scales_with_load() -> None:
    m = ModelOffer(
        name="m",
        context_window=8_000,
        tokens_per_s=300.0,
        price_in_per_1k_micros=3,
        price_out_per_1k_micros=7,
        ttft_ms=20,
    )
    price, latency = sheet_quote(m, input_tokens=1_001, output_tokens=150, overhead_ms=5)
    assert price == 4 + 2  # ceil(1001*3/1000) + ceil(150*7/1000)
    assert latency == 5 + 20 + 500
    _, loaded = sheet_quote(m, input_tokens=0, output_tokens=150, load=3)
    assert loaded == 20 + 1_500
    big = msgspec.structs.replace(m, price_in_per_1k_micros=2_000_000, price_out_per_1k_micros=1_000_000)
    assert sheet_quote(big, input_tokens=3_000, output_tokens=1_000)[0] == 6_000_000 + 1_000_000


# --- ranking, ties, allocation -----------------------------------------------------------------------------------
offers_st = st.lists(
    st.builds(
        lambda i, p, lat, q, residency, tier: offer(
            i, price=p, latency=lat, quality=q, residency=residency, tier=tier
        ),
        st.integers(0, 63),
        st.integers(0, 3_000),
        st.integers(1, 3_000),
        st.sampled_from([0.3, 0.5, 0.7, 0.9]),
        st.sampled_from([("eu",), (), ("eu", "us")]),  # the last claims more than the certificate grants
        st.sampled_from([Tier.CLOUD, Tier.CLOUD, Tier.DEVICE]),  # a device claim contradicts a cloud certificate
    ),
    min_size=1,
    max_size=20,
    unique_by=lambda o: o.agent_id,
)


@given(offers_st, st.randoms(use_true_random=False))
def test_ties_break_the_same_way_whatever_the_arrival_order(offers: list[Offer], rnd: random.Random) -> None:
    t = task(residency="eu", max_price=2_000, mechanism=Mechanism.SECOND_PRICE)
    first = rank(offers, t, now=NOW, credentials=trust_all, predictor=CLAIMS)
    shuffled = offers[:]
    rnd.shuffle(shuffled)
    again = rank(shuffled, t, now=NOW, credentials=trust_all, predictor=CLAIMS)
    assert [s.offer.bid_id for s in first.eligible] == [s.offer.bid_id for s in again.eligible]
    if first.eligible:
        assert payment(first.eligible, t) == payment(again.eligible, t)


def test_tie_breaks_in_order_price_latency_agent() -> None:
    """With lambda = mu = 0 the score is the quality alone, so these offers tie exactly on score."""
    t = task(lam=0.0, mu=0.0)
    offers = [
        offer(5, price=200, latency=100),
        offer(4, price=100, latency=300),
        offer(3, price=100, latency=200),
        offer(2, price=100, latency=200),
        offer(1, price=100, latency=200, quality=0.7),  # lower score: last whatever its price
    ]
    ranking = rank(offers, t, now=NOW, credentials=trust_all, predictor=CLAIMS)
    assert len({s.score for s in ranking.eligible[:4]}) == 1
    by_id = sorted([AGENTS[2], AGENTS[3]])
    assert [s.offer.agent_id for s in ranking.eligible] == [*by_id, AGENTS[4], AGENTS[5], AGENTS[1]]


@given(offers_st)
def test_truthful_allocation_maximises_the_score_among_eligible(offers: list[Offer]) -> None:
    t = task(residency="eu", max_price=2_000, deadline_ms=2_500)
    sel = select(offers, t, now=NOW, credentials=trust_all, predictor=CLAIMS)
    eligible = [
        o for o in offers if eligibility(o, t, now=NOW, credentials=trust_all, predicted_quality=o.quality) is None
    ]
    if not eligible:
        assert sel is None
        return
    assert sel is not None
    best = max(score(o.quality, o.price_micros, o.latency_ms, t.policy) for o in eligible)
    assert sel.winner.score == best
    assert sel.winner.offer in eligible
    assert all(o in eligible for o in (s.offer for s in sel.ranking.eligible))


@given(offers_st)
def test_nothing_ineligible_ever_wins(offers: list[Offer]) -> None:
    t = task(residency="eu", max_price=1_500, deadline_ms=2_000, tiers=(Tier.CLOUD,))
    ranking = rank(offers, t, now=NOW, credentials=lambda a: None if a == AGENTS[0] else CERT, predictor=CLAIMS)
    for s in ranking.eligible:
        o = s.offer
        assert o.agent_id != AGENTS[0]  # untrusted
        assert o.tier is CERT.tier and o.region == CERT.region and set(o.residency) <= CERT.residency  # no lie
        assert o.price_micros <= 1_500 and o.latency_ms <= 2_000
    assert len(ranking.eligible) + len(ranking.ineligible) == len(offers)
    assert ranking.eligible == sorted(ranking.eligible, key=rank_key)


# --- payments ----------------------------------------------------------------------------------------------------
def _ranked(offers: list[Offer], t: Task) -> list:  # type: ignore[type-arg]
    return rank(offers, t, now=NOW, credentials=trust_all, predictor=CLAIMS).eligible


@given(st.lists(st.integers(0, 1_000_000), min_size=2, max_size=12, unique=True))
def test_second_price_charges_the_second_best_price(prices: list[int]) -> None:
    """Same quality and latency: the cheapest wins and is paid exactly the second-lowest price."""
    t = task(max_price=1_000_000, mechanism=Mechanism.SECOND_PRICE)
    eligible = _ranked([offer(i, price=p) for i, p in enumerate(prices)], t)
    ordered = sorted(prices)
    assert eligible[0].offer.price_micros == ordered[0]
    assert payment(eligible, t) == ordered[1]


@given(
    st.integers(1, 1_000_000),
    st.floats(0.5, 2_000.0),
    st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(1, 5_000)), min_size=2, max_size=4),
)
def test_second_price_stays_within_the_budget_and_above_the_bid(
    budget: int, lam: float, bids: list[tuple[float, float, int]]
) -> None:
    """Any price weight, any qualities and latencies, prices anywhere up to the budget (the runner-up's near it
    included): the winner is paid at least its bid and at most the budget."""
    t = task(max_price=budget, mechanism=Mechanism.SECOND_PRICE, lam=lam)
    offers = [offer(i, price=int(f * budget), quality=q, latency=lat) for i, (f, q, lat) in enumerate(bids)]
    eligible = _ranked(offers, t)
    price = payment(eligible, t)
    assert eligible[0].offer.price_micros <= price <= budget


def test_second_price_in_score_terms() -> None:
    t = task(max_price=500_000, mechanism=Mechanism.SECOND_PRICE, lam=1.0, mu=0.0)
    better = offer(1, price=100_000, quality=0.9)
    cheaper = offer(2, price=50_000, quality=0.8)
    eligible = _ranked([better, cheaper], t)
    assert eligible[0].offer is better
    # paid the highest price at which 0.9 - p would still tie 0.8 - 0.05: p = 0.15 USD
    price = payment(eligible, t)
    assert price == pytest.approx(150_000, abs=1)
    assert score(0.9, price, 0, t.policy) == pytest.approx(eligible[1].score, abs=2e-6)


def test_second_price_caps_and_reserve() -> None:
    t = task(max_price=120_000, mechanism=Mechanism.SECOND_PRICE, mu=0.0)
    eligible = _ranked([offer(1, price=100_000, quality=0.9), offer(2, price=50_000, quality=0.8)], t)
    assert payment(eligible, t) == 120_000  # capped at the budget
    alone = _ranked([offer(1, price=10_000)], t)
    assert vickrey_price(alone[0], None, t) == 120_000  # no runner-up: the reserve (max price)
    free = task(max_price=120_000, mechanism=Mechanism.SECOND_PRICE, lam=0.0)
    pair = _ranked([offer(1, price=1), offer(2, price=2)], free)
    assert payment(pair, free) == 120_000  # price does not move the score: the reserve


def test_second_price_weighs_price_and_latency_by_the_policy() -> None:
    """The winner's non-price advantage (quality, and latency at mu per second) is turned into micro-USD at
    1e6 / lambda: with lambda 4 and mu 0.5, 0.2 of quality less 0.1 of latency (200 ms) is worth 25,000."""
    t = task(max_price=1_000_000, mechanism=Mechanism.SECOND_PRICE, lam=4.0, mu=0.5)
    winner = offer(1, price=10_000, quality=0.9, latency=300)
    runner_up = offer(2, price=20_000, quality=0.7, latency=100)
    eligible = _ranked([winner, runner_up], t)
    assert [e.offer for e in eligible] == [winner, runner_up]
    assert payment(eligible, t) == 20_000 + 25_000


def test_the_mechanism_given_overrides_the_tasks() -> None:
    """A direct award of a second-price task pays the offer's own price (the requester passes DIRECT)."""
    t = task(max_price=1_000, mechanism=Mechanism.SECOND_PRICE)
    eligible = _ranked([offer(1, price=300, quality=0.9), offer(2, price=100, quality=0.5)], t)
    assert payment(eligible, t) == 1_000  # second price in score terms: capped at the budget
    assert payment(eligible, t, Mechanism.DIRECT) == 300
    assert payment(eligible, t, Mechanism.POSTED_PRICE) == 1_000


def test_select_names_the_winner_the_runner_up_and_the_price() -> None:
    t = task(max_price=1_000, mechanism=Mechanism.SECOND_PRICE, mu=0.0)
    offers = [offer(1, price=100), offer(2, price=200), offer(3, price=300)]
    sel = select(offers, t, now=NOW, credentials=trust_all, predictor=CLAIMS)
    assert sel is not None
    assert (sel.winner.offer, sel.runner_up and sel.runner_up.offer, sel.price_micros) == (
        offers[0],
        offers[1],
        200,
    )
    sel = select(offers, t, now=NOW, credentials=trust_all, predictor=CLAIMS, exclude=[AGENTS[1]])
    assert sel is not None and (sel.winner.offer, sel.price_micros) == (offers[1], 300)
    sel = select(offers, t, now=NOW, credentials=trust_all, predictor=CLAIMS, mechanism=Mechanism.FIRST_PRICE)
    assert sel is not None and sel.price_micros == 100
    pair = select(offers[:2], t, now=NOW, credentials=trust_all, predictor=CLAIMS)
    assert pair is not None and pair.runner_up is not None and pair.runner_up.offer == offers[1]
    assert select(offers[:1], t, now=NOW, credentials=trust_all, predictor=CLAIMS).runner_up is None  # type: ignore[union-attr]


def test_posted_price_ranks_every_offer_at_the_posted_price() -> None:
    """With price weighing heavily, the cheap offer would win on its own price; at the posted price (the same
    for all) quality decides."""
    offers = [offer(1, price=900, quality=0.9), offer(2, price=100, quality=0.85)]
    first = task(max_price=1_000, lam=1_000.0, mu=0.0)
    assert _ranked(offers, first)[0].offer == offers[1]
    posted = task(max_price=1_000, lam=1_000.0, mu=0.0, mechanism=Mechanism.POSTED_PRICE)
    assert _ranked(offers, posted)[0].offer == offers[0]


def test_first_and_posted_price() -> None:
    offers = [offer(1, price=300, quality=0.9), offer(2, price=100, quality=0.5)]
    first = task(max_price=1_000)
    assert payment(_ranked(offers, first), first) == 300
    posted = task(max_price=1_000, mechanism=Mechanism.POSTED_PRICE)
    eligible = _ranked(offers, posted)
    assert eligible[0].offer.agent_id == AGENTS[1]  # ranked by quality and latency at the posted price
    assert payment(eligible, posted) == 1_000
    direct = task(max_price=1_000, mechanism=Mechanism.DIRECT)
    assert payment(_ranked(offers, direct), direct) == 300


@given(
    st.lists(st.integers(0, 100_000), min_size=1, max_size=8),
    st.integers(0, 100_000),
    st.integers(0, 100_000),
    st.sampled_from([0.5, 0.7, 0.9]),
)
def test_vickrey_is_truthful(others: list[int], cost: int, lie: int, quality: float) -> None:
    """Bidding one's cost is a dominant strategy: no misreport earns more (utility = payment - cost)."""
    t = task(max_price=100_000, mechanism=Mechanism.SECOND_PRICE, mu=0.0)
    rivals = [offer(i + 1, price=p, quality=0.7) for i, p in enumerate(others)]

    def utility(report: int) -> int:
        me = offer(0, price=report, quality=quality)
        eligible = _ranked([me, *rivals], t)
        if eligible[0].offer is not me:
            return 0
        return payment(eligible, t) - cost

    assert utility(cost) >= utility(lie) - 1  # 1 micro of floor rounding


@given(offers_st, st.sampled_from(list(Mechanism)))
def test_payment_never_exceeds_budget(offers: list[Offer], mechanism: Mechanism) -> None:
    t = task(max_price=1_500, mechanism=mechanism, residency="eu")
    sel = select(offers, t, now=NOW, credentials=trust_all, predictor=CLAIMS)
    if sel is not None:
        assert 0 <= sel.price_micros <= 1_500
        if mechanism is not Mechanism.POSTED_PRICE:
            assert sel.price_micros >= sel.winner.offer.price_micros


# --- predictors --------------------------------------------------------------------------------------------------
def test_reputation_tempers_the_claim() -> None:
    rep = Reputation()
    pred = ReputationPredictor(rep, prior_strength=4.0)
    t = task()
    liar = offer(1, quality=1.0)
    assert pred.predict(liar, t) == 1.0  # unknown: taken at its word
    for _ in range(4):
        rep.record_failure(AGENTS[1])
    assert pred.predict(liar, t) == pytest.approx(0.5)  # (4*1 + 0) / (4 + 4)
    honest = offer(2, quality=0.6)
    for _ in range(6):
        rep.record_delivery(AGENTS[2], 1.0)
    assert pred.predict(honest, t) == pytest.approx((4 * 0.6 + 6) / 10)
    assert rep.get(AGENTS[2]) == Record(scored=6, quality_sum=6.0) and len(rep) == 2
    with pytest.raises(ValueError):
        rep.record_delivery(AGENTS[1], 1.5)
    with pytest.raises(ValueError):
        ReputationPredictor(prior_strength=0)
    assert ReputationPredictor(rep, prior_strength=0.5).predict(liar, t) == pytest.approx(0.5 / 4.5)
    once = Reputation()
    once.record_failure(AGENTS[1])
    # the default weighs a claim as two observations: a claim of 1.0 after one failure is 0.67 (spec 6.2)
    assert ReputationPredictor(once).predict(liar, t) == pytest.approx(2 / 3)


def test_an_unscored_delivery_keeps_the_claim_and_a_vote_replaces_it() -> None:
    rep = Reputation()
    pred = ReputationPredictor(rep)  # prior strength 2
    bidder = offer(3, quality=0.9)
    rep.record_delivery(AGENTS[3])
    assert pred.predict(bidder, task()) == pytest.approx(0.9)  # delivered, no signal: no news about quality
    rep.score_delivery(AGENTS[3], 0.0)  # the vote went against it
    assert rep.get(AGENTS[3]) == Record(scored=1, quality_sum=0.0)
    assert pred.predict(bidder, task()) == pytest.approx(2 * 0.9 / 3)


def test_one_failure_to_deliver_is_enough_to_lose_to_an_honest_agent_at_equal_price() -> None:
    rep = Reputation()
    t = task(mu=0.0)
    lowballer, honest = offer(1, quality=1.0, price=500), offer(2, quality=0.7, price=500)
    pred = ReputationPredictor(rep)
    assert select([lowballer, honest], t, now=NOW, credentials=trust_all, predictor=pred).winner.offer is lowballer  # type: ignore[union-attr]
    rep.record_failure(AGENTS[1])
    assert select([lowballer, honest], t, now=NOW, credentials=trust_all, predictor=pred).winner.offer is honest  # type: ignore[union-attr]
