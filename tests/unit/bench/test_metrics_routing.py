"""Router metrics (PGR, APGR, CPT, hull, AIQ) against hand-computed values and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.bench.data.synthetic import synthetic_outcomes
from accord.bench.evaluation.evaluate import baseline_reports, evaluate_scores
from accord.bench.evaluation.metrics import (
    aiq,
    apgr,
    cpt,
    nondecreasing_hull,
    oracle_curve,
    pgr,
    random_curve,
    routing_curve,
)
from accord.routing.base import RouterError
from accord.routing.table import PairTable

# Four queries: weak right on 2 and 3, strong right on 0, 1, 2. Weak 0.5, strong 0.75.
Q_WEAK = np.array([0.0, 0.0, 1.0, 1.0])
Q_STRONG = np.array([1.0, 1.0, 1.0, 0.0])
SCORES = np.array([0.9, 0.1, 0.5, 0.3])  # order: 0 (+1), 2 (0), 3 (-1), 1 (+1)


def test_routing_curve_by_hand() -> None:
    curve = routing_curve(SCORES, Q_WEAK, Q_STRONG)
    assert curve.share.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.quality.tolist() == [0.5, 0.75, 0.75, 0.5, 0.75]
    assert pgr(curve.quality, 0.5, 0.75).tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_apgr_by_hand() -> None:
    curve = routing_curve(SCORES, Q_WEAK, Q_STRONG)
    # trapezoids of PGR 0,1,1,0,1 at steps of 0.25: 0.125 + 0.25 + 0.125 + 0.125
    assert apgr(curve, 0.5, 0.75) == pytest.approx(0.625)


def test_cpt_interpolates_within_the_first_crossing() -> None:
    curve = routing_curve(SCORES, Q_WEAK, Q_STRONG)
    assert cpt(curve, 0.5, 0.5, 0.75) == pytest.approx(0.125)
    assert cpt(curve, 0.8, 0.5, 0.75) == pytest.approx(0.2)
    assert cpt(curve, 1.0, 0.5, 0.75) == pytest.approx(0.25)
    assert math.isnan(cpt(curve, 1.01, 0.5, 0.75))


def test_ties_are_one_point_so_a_constant_router_is_the_random_line() -> None:
    curve = routing_curve(np.zeros(4), Q_WEAK, Q_STRONG)
    assert curve.share.tolist() == [0.0, 1.0]
    assert apgr(curve, 0.5, 0.75) == pytest.approx(0.5)
    assert cpt(curve, 0.5, 0.5, 0.75) == pytest.approx(0.5)


def test_costs_follow_the_routed_queries() -> None:
    c_weak, c_strong = np.array([1.0, 1.0, 1.0, 1.0]), np.array([10.0, 20.0, 30.0, 40.0])
    curve = routing_curve(SCORES, Q_WEAK, Q_STRONG, c_weak, c_strong)
    # routed in order 0, 2, 3, 1: extra costs 9, 29, 39, 19 spread over 4 queries
    assert curve.cost.tolist() == pytest.approx([1.0, 3.25, 10.5, 20.25, 25.0])


def test_random_apgr_is_one_half_on_a_large_log() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    q_weak = (rng.random(n) < 0.6).astype(float)
    q_strong = (rng.random(n) < 0.8).astype(float)
    weak, strong = q_weak.mean(), q_strong.mean()
    values = [apgr(routing_curve(rng.random(n), q_weak, q_strong), weak, strong) for _ in range(5)]
    assert all(abs(v - 0.5) < 0.03 for v in values), values
    assert abs(float(np.mean(values)) - 0.5) < 0.015
    assert apgr(random_curve(q_weak, q_strong), weak, strong) == pytest.approx(0.5)


def test_oracle_by_hand_and_above_the_strong_model() -> None:
    curve = oracle_curve(Q_WEAK, Q_STRONG)
    # two queries gain +1, one loses: the oracle routes the two gainers and stops
    assert curve.quality.tolist() == [0.5, 0.75, 1.0, 1.0, 1.0]
    assert cpt(curve, 0.5, 0.5, 0.75) == pytest.approx(0.125)
    assert apgr(curve, 0.5, 0.75) == pytest.approx((0.5 + 1.5 + 2 + 2) * 0.25)


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.floats(0, 1, allow_nan=False)),
        min_size=2,
        max_size=40,
    )
)
def test_oracle_dominates_every_router(rows: list[tuple[bool, bool, float]]) -> None:
    q_weak = np.array([float(w) for w, _, _ in rows])
    q_strong = np.array([float(s) for _, s, _ in rows])
    scores = np.array([x for _, _, x in rows])
    n = len(rows)
    router, oracle = routing_curve(scores, q_weak, q_strong), oracle_curve(q_weak, q_strong)
    best = np.interp(router.share, oracle.share, oracle.quality)
    assert np.all(router.quality <= best + 1e-12)
    assert oracle.share.tolist() == [k / n for k in range(n + 1)]
    assert np.all(np.diff(oracle.quality) >= 0)
    if q_strong.mean() > q_weak.mean():
        weak, strong = q_weak.mean(), q_strong.mean()
        assert apgr(oracle, weak, strong) >= apgr(router, weak, strong) - 1e-12
        assert cpt(oracle, 0.5, weak, strong) <= cpt(router, 0.5, weak, strong) + 1e-12


def test_routellm_grid_matches_the_exact_grid_on_ten_distinct_scores() -> None:
    rng = np.random.default_rng(3)
    q_weak = (rng.random(10) < 0.5).astype(float)
    q_strong = np.ones(10)
    scores = np.arange(10.0)
    coarse = routing_curve(scores, q_weak, q_strong, grid="routellm")
    exact = routing_curve(scores, q_weak, q_strong)
    assert coarse.share.tolist() == pytest.approx([k / 10 for k in range(11)])
    assert coarse.quality.tolist() == pytest.approx(exact.quality.tolist())


def test_routellm_grid_has_eleven_points_from_all_weak_to_all_strong() -> None:
    rng = np.random.default_rng(5)
    q_weak, q_strong = (rng.random(500) < 0.5).astype(float), (rng.random(500) < 0.8).astype(float)
    curve = routing_curve(rng.random(500), q_weak, q_strong, grid="routellm")
    assert len(curve.share) == 11
    assert curve.share[0] == 0.0 and curve.share[-1] == 1.0
    assert curve.quality[0] == pytest.approx(q_weak.mean()) and curve.quality[-1] == pytest.approx(q_strong.mean())


def test_hull_by_hand() -> None:
    cost = np.array([0.0, 1.0, 2.0, 3.0, 1.5, 1.0])
    quality = np.array([0.0, 2.0, 2.5, 1.0, 1.0, 1.5])
    xs, ys = nondecreasing_hull(cost, quality)
    # (1.5, 1) lies under the hull, (1, 1.5) is beaten at the same cost, (3, 1) is past the peak
    assert xs.tolist() == [0.0, 1.0, 2.0]
    assert ys.tolist() == [0.0, 2.0, 2.5]


def test_hull_drops_points_on_a_line_and_keeps_concave_corners() -> None:
    xs, ys = nondecreasing_hull(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0, 2.2]))
    assert xs.tolist() == [0.0, 2.0, 3.0]
    assert ys.tolist() == [0.0, 2.0, 2.2]


def test_aiq_by_hand() -> None:
    from accord.bench.evaluation.metrics import Curve

    curve = Curve(
        share=np.array([0.0, 0.2, 0.4, 0.6, 0.8]),
        quality=np.array([0.0, 2.0, 2.5, 1.0, 1.0]),
        cost=np.array([0.0, 1.0, 2.0, 3.0, 1.5]),
    )
    # hull (0,0) (1,2) (2,2.5), flat to 3: areas 1 + 2.25 + 2.5 over a width of 3
    assert aiq(curve, 0.0, 3.0) == pytest.approx(5.75 / 3)
    # a wider range extends the flat part: (5.75 + 2.5) / 4
    assert aiq(curve, 0.0, 4.0) == pytest.approx(8.25 / 4)


def test_aiq_without_costs_uses_the_share_axis() -> None:
    q_weak, q_strong = np.array([0.0, 1.0]), np.array([1.0, 1.0])
    assert aiq(random_curve(q_weak, q_strong), 0.0, 0.0) == pytest.approx(0.75)


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(RouterError):
        routing_curve(np.array([0.1, float("nan")]), np.zeros(2), np.ones(2))
    with pytest.raises(RouterError):
        routing_curve(np.zeros(3), np.zeros(2), np.ones(2))
    with pytest.raises(RouterError):
        pgr(np.zeros(2), 0.5, 0.5)


def test_reports_of_baselines_and_a_cascade() -> None:
    table = PairTable.from_outcomes(synthetic_outcomes(300, seed=1))
    names = [r.name for r in baseline_reports(table)]
    assert names == [table.weak, table.strong, "random", "random (seeded)", "oracle"]
    oracle = baseline_reports(table)[-1]
    assert oracle.apgr > 0.8
    gap = table.q_strong - table.q_weak
    routed = evaluate_scores(table, gap, "knows", cascade=False)
    cascaded = evaluate_scores(table, gap, "knows", cascade=True)
    assert routed.apgr == pytest.approx(cascaded.apgr)
    assert cascaded.curve is not None and routed.curve is not None
    # a cascade pays the weak model on every escalated query too
    assert cascaded.curve.cost[-1] == pytest.approx(routed.curve.cost[-1] + table.c_weak.mean())
