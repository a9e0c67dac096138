"""The learned predictor over N models: it learns a generated world's structure (held-out seeds), is calibrated,
never falls below the single models' hull on its own training folds' gate, ranks offers in the market exactly as
its plan does, learns online, and saves and loads as data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accord.bench.data.synthetic_models import synthetic_world
from accord.bench.evaluation.models import evaluate_chooser
from accord.protocol.market import Offer
from accord.protocol.messages import ChatMessage, Constraints, Policy, Role, Task, Tier
from accord.routing.base import Query, RouterError
from accord.routing.calibration import platt, reliability
from accord.routing.files import load_predictor, load_router, read_router_file, save_predictor
from accord.routing.gate import OPTIONS, Gate, Option, choose, fit_gate
from accord.routing.groups import GroupTable
from accord.routing.matrix import OutcomeMatrix, parse_models
from accord.routing.multitask import fit_multitask
from accord.routing.predictor import LearnedPredictor, query_of_task
from accord.routing.records import Outcome
from accord.routing.sparse import SparseRows

WORLD = synthetic_world(6, seed=3)


@pytest.fixture(scope="module")
def predictor() -> LearnedPredictor:
    return LearnedPredictor.from_outcomes(WORLD.outcomes(500, seed=1))


@pytest.fixture(scope="module")
def test_matrix() -> OutcomeMatrix:
    return OutcomeMatrix.from_outcomes(WORLD.outcomes(500, seed=2), WORLD.model_names)


def test_held_out_curve_reaches_the_hull_and_beats_it(
    predictor: LearnedPredictor, test_matrix: OutcomeMatrix
) -> None:
    report = evaluate_chooser(test_matrix, predictor.plan(test_matrix.queries), router="predictor")
    assert report.curve[0].picks == {min(report.models, key=lambda m: m.cost_per_query_micros).model: 500}
    assert report.curve[-1].lambda_ == 0.0
    assert report.min_gap_to_hull >= -0.01, report.min_gap_to_hull
    assert report.max_gain_over_hull > 0.03, report.max_gain_over_hull
    assert report.accuracy_at_best_single_cost >= report.best_single.accuracy
    assert report.oracle.accuracy >= max(m.accuracy for m in report.models)


def test_predictions_are_calibrated_and_better_than_the_task_table(
    predictor: LearnedPredictor, test_matrix: OutcomeMatrix
) -> None:
    p = predictor.predict_quality(test_matrix.queries)
    y = test_matrix.quality
    ece, _ = reliability(p.ravel(), y.ravel())
    assert ece < 0.05, ece
    report = predictor.report
    assert report is not None and report.log_loss is not None and report.log_loss_fallback is not None
    assert report.log_loss < report.log_loss_fallback  # the text adds something beyond the task
    assert report.folds == 3 and report.rows == 500 and report.complete_rows == 500
    assert sum(report.gate.values()) == pytest.approx(1.0)


def test_market_predict_is_the_plans_value(predictor: LearnedPredictor, test_matrix: OutcomeMatrix) -> None:
    queries = [Query(text=q.text, kind=q.kind) for q in test_matrix.queries[:20]]
    plan = predictor.plan(queries)
    for lam in (0.0, 50.0, 5_000.0):
        values = plan.values(lam)
        for i, query in enumerate(queries):
            task = _task(f"t{i}-{lam}", query, lam)
            assert query_of_task(task) == query
            for j, model in enumerate(predictor.models):
                assert predictor.predict(_offer(model, 0.5), task) == values[i, j]


def test_an_unseen_model_starts_from_its_claim_and_learns_online(predictor: LearnedPredictor) -> None:
    learner = LearnedPredictor.from_state(predictor.state())
    query = Query(text="Solve step by step: the velocity of the orbit. Give the final number.", kind="math")
    task = _task("t-unseen", query, 10.0)
    first = learner.predict(_offer("newcomer", 0.9), task)
    assert 0.5 < first < 0.99  # the claim, moved by how hard the query looks to every model
    for i in range(60):
        learner.observe(Outcome(query_id=f"n{i}", prompt=query.text, model="newcomer", kind="math", correct=False))
    later = learner.predict(_offer("newcomer", 0.9), _task("t-unseen-2", query, 10.0))
    assert later < first - 0.3
    known = learner.models[0]
    before = learner.predict(_offer(known, 0.5), _task("t-k1", query, 0.0))
    for i in range(60):
        learner.update(Outcome(query_id=f"k{i}", prompt=query.text, model=known, kind="math", correct=True))
    assert learner.predict(_offer(known, 0.5), _task("t-k2", query, 0.0)) > before
    learner.refit(WORLD.outcomes(100, seed=5))
    assert set(learner.online) == {"newcomer"}  # a refit folds the known models' outcomes in


def test_save_and_load_give_the_same_plan(tmp_path: Path, predictor: LearnedPredictor) -> None:
    queries = [
        Query(text=f"Question: contract court {i}? Choose one of A, B, C or D.", kind="mcq") for i in range(9)
    ]
    for suffix in (".msgpack", ".json"):
        path = tmp_path / f"p{suffix}"
        save_predictor(predictor, path, trained_on=queries)
        loaded, file = load_predictor(path)
        assert file.models == predictor.models and file.trained_rows == 9 and file.kind == "predictor"
        for lam in (0.0, 300.0):
            assert np.array_equal(loaded.plan(queries).choose(lam), predictor.plan(queries).choose(lam))
        assert np.allclose(loaded.predict_quality(queries), predictor.predict_quality(queries), atol=1e-5)
        assert loaded.report == predictor.report
        with pytest.raises(RouterError) as info:
            load_router(path)
        assert info.value.reason == "bad_file"
        assert read_router_file(path).weak == ""


def test_unfitted_and_bad_input() -> None:
    with pytest.raises(RouterError) as info:
        LearnedPredictor().plan([Query(text="q")])
    assert info.value.reason == "not_fitted"
    with pytest.raises(RouterError):
        parse_models("a,zzz", ["a", "b"])
    with pytest.raises(RouterError):
        parse_models("a", ["a", "b"])
    assert parse_models("all", ["b", "a", "b"]) == ["a", "b"]
    assert parse_models(" b , a ", ["a", "b"]) == ["b", "a"]


# --- the parts ----------------------------------------------------------------------------------------------
def test_matrix_keeps_missing_cells_and_complete_rows() -> None:
    records = [
        Outcome(query_id="q1", prompt="p1", model="a", correct=True, cost_micros=2),
        Outcome(query_id="q1", prompt="p1", model="b", correct=False, cost_micros=9),
        Outcome(query_id="q2", prompt="p2", model="a", score=6.0, score_max=10.0, cost_micros=2),
        Outcome(query_id="q2", prompt="p2", model="a", score=8.0, score_max=10.0, cost_micros=3),
        Outcome(query_id="q3", prompt="p3", model="b", correct=True),
    ]
    m = OutcomeMatrix.from_outcomes(records)
    assert m.models == ["a", "b"] and m.query_ids == ["q1", "q2", "q3"]
    assert m.quality[1, 0] == pytest.approx(0.7) and m.cost[1, 0] == 5.0  # turns averaged, costs summed
    assert np.isnan(m.quality[1, 1]) and np.isnan(m.quality[2, 0]) and m.cost[2, 1] == 0.0
    assert m.complete().query_ids == ["q1"]
    assert list(m.accuracy()) == pytest.approx([0.85, 0.5])
    with pytest.raises(RouterError):
        OutcomeMatrix.from_outcomes(records, ["a", "c"])


def test_multitask_shares_the_difficulty_and_keeps_model_differences() -> None:
    rng = np.random.default_rng(0)
    n = 600
    hard = rng.random(n) < 0.5
    special = rng.random(n) < 0.5
    rows = [{0: 1.0 if h else 0.0, 1: 1.0 if s else 0.0} for h, s in zip(hard, special, strict=True)]
    x = SparseRows.from_rows(rows, 16)
    # every model fails hard queries more; model 1 alone is good at "special" ones
    p = np.stack([0.8 - 0.5 * hard, 0.8 - 0.5 * hard + 0.15 * special, 0.7 - 0.5 * hard], axis=1)
    y = (rng.random((n, 3)) < p).astype(float)
    y[rng.random((n, 3)) < 0.2] = np.nan  # some cells unobserved
    fit = fit_multitask(x, y, l2_shared=0.1, l2_model=1.0)
    test = SparseRows.from_rows([{}, {0: 1.0}, {1: 1.0}], 16)
    shared, logits = fit.parts(test)
    assert shared[1] < shared[0] - 1.0  # hard: every model worse, through the shared part
    assert logits[2, 1] - logits[0, 1] > 0.3 and abs(logits[2, 0] - logits[0, 0]) < 0.3
    again = fit_multitask(x, y, l2_shared=0.1, l2_model=1.0)
    assert np.array_equal(again.weights, fit.weights)  # convex, no random start


def test_platt_recovers_a_temperature() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 1.5, 20_000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(0.5 + 2.0 * z)))).astype(float)
    a, b = platt(z, y, prior=0.0)
    assert a == pytest.approx(0.5, abs=0.1) and b == pytest.approx(2.0, abs=0.15)
    assert platt(np.zeros(0), np.zeros(0)) == (0.0, 1.0)


def test_group_table_shrinks_categories_to_their_kind_and_kinds_to_the_model() -> None:
    queries = [Query(text="x", kind="k", category="c")] * 2 + [Query(text="x", kind="k")] * 2
    values = np.array([[1.0], [1.0], [0.0], [0.0]])
    table = GroupTable.fit(queries, values, prior=2.0)
    overall = 0.5
    kind = (2.0 + 2.0 * overall) / (4 + 2.0)
    assert table.row(Query(text="y", kind="k"))[0] == pytest.approx(kind)
    assert table.row(Query(text="y", kind="k", category="c"))[0] == pytest.approx((2.0 + 2.0 * kind) / 4)
    assert table.row(Query(text="y", kind="k", category="new"))[0] == pytest.approx(kind)
    assert table.row(Query(text="y", kind="other"))[0] == pytest.approx(overall)


def test_choose_trades_quality_for_price_and_breaks_ties_to_the_cheaper() -> None:
    values = np.array([[0.5, 0.9], [0.7, 0.7]])
    cost = np.array([[100.0, 1_000.0], [100.0, 1_000.0]])
    assert list(choose(values, cost, 0.0)) == [1, 0]
    assert list(choose(values, cost, 400.0)) == [1, 0]  # 0.9 - 0.4 > 0.5 - 0.04
    assert list(choose(values, cost, 500.0)) == [0, 0]


def test_gate_keeps_learned_values_only_where_they_beat_both_tables() -> None:
    rng = np.random.default_rng(2)
    n = 3_000
    kinds = np.array(["good", "noisy", "split"])[np.arange(n) % 3]
    queries = [Query(text="q", kind=str(k)) for k in kinds]
    truth = rng.random((n, 2)) * 0.8 + 0.1
    truth[kinds == "split", 0] = 0.9  # on "split" the cheap model is right far more often
    quality = (rng.random((n, 2)) < truth).astype(float)
    cost = np.tile([100.0, 1_000.0], (n, 1))
    learned = np.where((kinds == "noisy")[:, None], rng.random((n, 2)), truth)  # noise on one kind only
    per_kind = np.stack([quality[kinds == k].mean(axis=0) for k in kinds])
    overall = np.tile(quality.mean(axis=0), (n, 1))
    options = [Option(values=v, cost=cost) for v in (learned, per_kind, overall)]
    gate = fit_gate(queries, quality, cost, options, min_rows=200)
    assert set(gate.keys) == {"*", "k:good", "k:noisy", "k:split"}
    rows = gate.rows([Query(text="a", kind=k) for k in ("good", "noisy", "new")])
    assert rows.tolist() == [gate.keys.index("k:good"), gate.keys.index("k:noisy"), gate.keys.index("*")]
    # where picking the dearer model pays off for a gap in P of 0.1 to 0.4, the informative values win and
    # the noise loses (at the largest lambdas every option chooses the cheaper model: a tie, the simplest wins)
    middle = [lam for lam in gate.lambdas.tolist() if 100 < lam < 450]
    assert len(middle) >= 5
    assert all(OPTIONS[gate.options(rows[:1], lam)[0]] == "learned" for lam in middle)
    assert not any(OPTIONS[gate.options(rows[1:2], lam)[0]] == "learned" for lam in middle)
    assert OPTIONS[gate.options(rows[:1], float(gate.lambdas[-1]))[0]] == "global"
    assert set(gate.shares()) == set(OPTIONS) and sum(gate.shares().values()) == pytest.approx(1.0)
    assert Gate.always("task").options(np.array([0]), 123.0).tolist() == [OPTIONS.index("task")]
    with pytest.raises(RouterError):
        fit_gate(queries, quality, cost, options[:2])


def _task(task_id: str, query: Query, lam: float) -> Task:
    return Task(
        id=f"m-{task_id}",
        sender="U" + "A" * 55,
        ts=0,
        task_id=task_id,
        kind=query.kind,
        messages=[ChatMessage(role=Role.USER, content=query.text)],
        prompt_digest="0" * 64,
        constraints=Constraints(deadline_ns=10**18, max_price_micros=10**6),
        policy=Policy(lambda_price=lam, mu_latency=0.0),
    )


def _offer(model: str, claim: float) -> Offer:
    return Offer(
        agent_id="U" + "B" * 55,
        bid_id="b1",
        digest="0" * 64,
        model=model,
        price_micros=10,
        latency_ms=10,
        quality=claim,
        valid_until_ns=10**18,
        tier=Tier.CLOUD,
        region="local",
    )


def test_a_sparse_log_still_gets_a_gate_and_reaches_the_hull(test_matrix: OutcomeMatrix) -> None:
    rng = np.random.default_rng(4)
    records = WORLD.outcomes(600, seed=7)
    answered = {
        q: set(rng.choice(WORLD.model_names, size=3, replace=False))
        for q in sorted({r.query_id for r in records})  # sorted: set order follows PYTHONHASHSEED
    }
    sparse = [r for r in records if r.model in answered[r.query_id]]  # each query answered by 3 of 6 models
    predictor = LearnedPredictor.from_outcomes(sparse, WORLD.model_names)
    assert predictor.report is not None and predictor.report.complete_rows == 0
    assert predictor.gate.lambdas.size > 1  # fitted on the models each query has
    report = evaluate_chooser(test_matrix, predictor.plan(test_matrix.queries), router="sparse")
    assert report.min_gap_to_hull >= -0.01, report.min_gap_to_hull
