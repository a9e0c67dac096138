"""Evaluation over N models (the lambda curve, the single-model hull, the oracle, the headline numbers), the
per-fold cross-fitted metrics (a router with no information scores APGR 0.5), the generated N-model worlds and
the importer of multi-model logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from accord.bench.data.importer import import_outcomes
from accord.bench.data.synthetic import synthetic_outcomes
from accord.bench.data.synthetic_models import synthetic_world
from accord.bench.evaluation.crossfit import NoInfoRouter, crossfit_models, no_info_report
from accord.bench.evaluation.evaluate import evaluate_scores, fold_ids
from accord.bench.evaluation.models import Chooser, crossfit_plans, evaluate_chooser, hull_at
from accord.bench.live import operating_point
from accord.routing.base import RouterError
from accord.routing.gate import choose
from accord.routing.matrix import OutcomeMatrix
from accord.routing.predictor import LearnedPredictor
from accord.routing.records import Outcome
from accord.routing.table import PairTable


class Fixed:
    """A chooser with given values per (query, model) and costs: argmax of value - lambda * cost."""

    def __init__(self, values: np.ndarray, cost: np.ndarray) -> None:
        self.values, self.cost = values, cost

    def choose(self, lam: float) -> np.ndarray:
        return choose(self.values, self.cost, lam)

    def lambdas(self, points: int = 200) -> list[float]:
        return [0.0, 100.0, 1_000.0, 1e9]


def small_matrix() -> OutcomeMatrix:
    # cheap: right on q0, q1; mid: right on q2; dear: right on q0, q2, q3
    table = {"cheap": ([1, 1, 0, 0], 10), "mid": ([0, 0, 1, 0], 100), "dear": ([1, 0, 1, 1], 1000)}
    records = [
        Outcome(query_id=f"q{i}", prompt=f"p{i}", model=m, correct=bool(ok), cost_micros=cost)
        for m, (right, cost) in table.items()
        for i, ok in enumerate(right)
    ]
    return OutcomeMatrix.from_outcomes(records, ["cheap", "mid", "dear"])


def test_report_by_hand() -> None:
    m = small_matrix()
    report = evaluate_chooser(m, Fixed(m.quality, m.cost), router="knows")  # knows every outcome
    singles = {r.model: (r.accuracy, r.cost_per_query_micros) for r in report.models}
    assert singles == {"cheap": (0.5, 10.0), "mid": (0.25, 100.0), "dear": (0.75, 1000.0)}
    assert [(h.model, h.cost_per_query_micros, h.accuracy) for h in report.hull] == [
        ("cheap", 10.0, 0.5),
        ("dear", 1000.0, 0.75),
    ]
    assert report.best_single.model == "dear"
    # at lambda 0 it takes the cheapest right model of every query: q0 cheap, q1 cheap, q2 mid, q3 dear
    last = report.curve[-1]
    assert (
        last.lambda_ == 0.0 and last.accuracy == 1.0 and last.cost_per_query_micros == (10 + 10 + 100 + 1000) / 4
    )
    assert last.picks == {"cheap": 2, "mid": 1, "dear": 1}
    assert report.curve[0].picks == {"cheap": 4}
    assert report.accuracy_at_best_single_cost == 1.0
    assert report.cost_at_best_single_accuracy is not None and report.cost_at_best_single_accuracy < 1000 / 2
    assert report.min_gap_to_hull == 0.0 and report.min_gap_at_cost_micros == 10.0  # both start at cheap
    assert report.max_gain_over_hull > 0.25
    assert report.oracle.accuracy == 1.0


def test_the_best_single_model_per_lambda_is_the_hull() -> None:
    m = small_matrix()
    mean = np.tile(m.accuracy(), (len(m), 1))
    report = evaluate_chooser(m, Fixed(mean, m.cost), router="no information")
    assert report.min_gap_to_hull == pytest.approx(0.0, abs=1e-12)
    assert report.max_gain_over_hull == pytest.approx(0.0, abs=1e-12)
    assert report.accuracy_at_best_single_cost == pytest.approx(0.75)
    assert report.cost_at_best_single_accuracy == pytest.approx(1000.0)
    assert hull_at(np.array([1.0, 2.0]), np.array([0.5, 0.7]), 0.5) != hull_at(np.array([1.0]), np.array([0.5]), 9)


def test_evaluation_refuses_incomplete_rows() -> None:
    records = [
        Outcome(query_id="q", prompt="p", model="a", correct=True),
        Outcome(query_id="r", prompt="r", model="b", correct=True),
    ]
    m = OutcomeMatrix.from_outcomes(records)
    with pytest.raises(RouterError):
        evaluate_chooser(m, Fixed(np.zeros((2, 2)), np.zeros((2, 2))), router="x")


def test_crossfit_over_n_models_chooses_every_row_out_of_fold() -> None:
    world = synthetic_world(4, seed=1)
    matrix = OutcomeMatrix.from_outcomes(world.outcomes(200, seed=1))
    seen: list[set[str]] = []

    def fit(train: OutcomeMatrix) -> Callable[[OutcomeMatrix], Chooser]:
        seen.append(set(train.query_ids))
        predictor = LearnedPredictor(folds=0)
        predictor.fit_matrix(train)
        return lambda test: predictor.plan(test.queries)

    table, plans = crossfit_plans(matrix, fit, k=3, seed=0)
    assert len(table) == 200 and len(plans.plans) == 3
    for rows, train in zip(plans.rows, seen, strict=True):
        assert not {table.query_ids[int(i)] for i in rows} & train
    report = evaluate_chooser(table, plans, router="cross-fitted")
    assert report.min_gap_to_hull > -0.05 and len(report.curve) > 5


# --- cross-fitted pair metrics: per fold, averaged ----------------------------------------------------------
def test_a_router_with_no_information_scores_one_half_per_fold() -> None:
    table = PairTable.from_outcomes(synthetic_outcomes(600, seed=4))
    fit = crossfit_models(NoInfoRouter, table, k=5, seed=0)
    assert len(set(fit.scores.tolist())) == 5  # one constant per fold: not one scale
    report = evaluate_scores(table, fit.scores, "no-info", folds=fit.folds)
    assert report.apgr == pytest.approx(0.5) and report.cpt50 == pytest.approx(0.5)
    assert report.cpt80 == pytest.approx(0.8)
    assert no_info_report(table, k=5, seed=0).apgr == pytest.approx(0.5)


def test_per_fold_metrics_are_the_size_weighted_mean_of_each_folds() -> None:
    table = PairTable.from_outcomes(synthetic_outcomes(300, seed=5))
    scores = np.random.default_rng(0).random(len(table))
    folds = fold_ids(table, 3, 0)
    report = evaluate_scores(table, scores, "r", folds=folds)
    parts = [np.flatnonzero(folds == f) for f in range(3)]
    each = [evaluate_scores(table.take(p), scores[p], "r") for p in parts]
    weights = [p.size for p in parts]
    assert report.apgr == pytest.approx(np.average([r.apgr for r in each], weights=weights))
    assert report.cpt50 == pytest.approx(np.average([r.cpt50 for r in each], weights=weights))
    assert report.curve is not None and report.curve.share[0] == 0.0 and report.curve.share[-1] == 1.0


def test_operating_point_per_fold_uses_each_folds_own_threshold() -> None:
    table = PairTable.from_outcomes(synthetic_outcomes(200, seed=6))
    folds = fold_ids(table, 2, 0)
    scores = np.where(folds == 0, 100.0, 0.0) + np.random.default_rng(1).random(len(table))
    point = operating_point(table, scores, router="r", target=0.5, folds=folds)
    assert point is not None and len(point.thresholds) == 2
    assert point.thresholds[0] > 99.0 and point.thresholds[1] < 1.0  # pooled, fold 1 would never be escalated
    for fold in (0, 1):
        rows = folds == fold
        assert 0 < np.count_nonzero(scores[rows] >= point.threshold_for(fold)) < rows.sum()


# --- data -----------------------------------------------------------------------------------------------------
def test_generated_world_seeds_separate_and_ground_truth_is_known() -> None:
    world = synthetic_world(10, seed=0)
    assert len(world.models) == 10
    out = [m.price_out_per_1k_micros for m in world.models]
    assert max(out) / min(out) >= 100 - 1e-9
    train, test = world.outcomes(300, seed=1), world.outcomes(300, seed=2)
    assert not {r.query_id for r in train} & {r.query_id for r in test}
    assert not {r.prompt for r in train} & {r.prompt for r in test}
    assert world.outcomes(300, seed=1) == train  # repeatable
    queries = world.sample(2_000, seed=3)
    p = world.probabilities(queries)
    assert p.shape == (2_000, 10) and p.min() > 0 and p.max() < 1
    # skills depend on the topic: the best model differs between topics
    best = {int(np.argmax(p[[i for i, q in enumerate(queries) if q.topic == t]].mean(axis=0))) for t in range(8)}
    assert len(best) >= 2
    assert {r.kind for r in train} == {"mcq", "math", "chat"} and all(r.category is None for r in train)
    assert all(r.category is not None for r in synthetic_world(3, seed=0, categories=True).outcomes(5, seed=1))
    assert all(r.cost_micros is not None and r.cost_micros > 0 for r in train)


def test_import_any_multi_model_log(tmp_path: Path) -> None:
    csv_path = tmp_path / "log.csv"
    csv_path.write_text(
        "question,llm,is_correct,price,task\n"
        "What is 2+2?,m-small,true,0.000012,math\n"
        "What is 2+2?,m-large,1,0.0031,math\n"
        "Capital of France?,m-small,no,0.00000001,trivia\n",
        encoding="utf-8",
    )
    result = import_outcomes(
        csv_path,
        columns={"prompt": "question", "model": "llm", "correct": "is_correct", "cost": "price", "kind": "task"},
    )
    first, second, third = result.records
    assert (first.model, first.correct, first.cost_micros, first.kind) == ("m-small", True, 12, "math")
    assert second.cost_micros == 3100 and first.query_id == second.query_id != third.query_id
    assert third.correct is False and third.cost_micros == 0 and result.rounded_to_zero == 1
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text(json.dumps({"prompt": "p", "model": "m", "score": 7, "cost_micros": 5}) + "\n")
    (record,) = import_outcomes(jsonl, score_max=10.0).records
    assert record.unit_quality == pytest.approx(0.7) and record.cost_micros == 5
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,model,correct\nq,m,\n", encoding="utf-8")
    with pytest.raises(RouterError) as info:
        import_outcomes(bad)
    assert "bad.csv:2" in str(info.value)
    with pytest.raises(RouterError):
        import_outcomes(csv_path, cost_unit="yen")
