"""Every router kind learns the structure of a generated log (cross-fitted), saves and loads as data, and
the bandit learns online from bandit feedback."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from accord.bench.data.synthetic import STRONG, WEAK, synthetic_outcomes
from accord.bench.data.synthetic_models import synthetic_world
from accord.bench.evaluation.evaluate import Report, crossfit_scores, evaluate_scores
from accord.bench.evaluation.suite import crossfit_suite
from accord.routing.bandit import BanditRouter, simulate_online, simulate_online_models
from accord.routing.base import Query, Router, RouterError
from accord.routing.features import TextFeaturizer
from accord.routing.files import ROUTER_KINDS, load_router, make_router, overlap, save_router
from accord.routing.logistic import LogisticRouter
from accord.routing.matrix import OutcomeMatrix
from accord.routing.mf import MFRouter
from accord.routing.subject import SubjectRouter
from accord.routing.table import PairTable
from accord.routing.verifier import CascadeRouter, answer_tokens, check_arithmetic


@pytest.fixture(scope="module")
def table() -> PairTable:
    return PairTable.from_outcomes(synthetic_outcomes(900, seed=0))


@pytest.fixture(scope="module")
def reports(table: PairTable) -> dict[str, Report]:
    found, _ = crossfit_suite(table, list(ROUTER_KINDS), k=3, seed=0)
    return {r.name: r for r in found}


def test_every_kind_beats_random_cross_fitted(reports: dict[str, Report]) -> None:
    # On this log the true expected gain (which no router sees) reaches APGR 0.65, the category alone 0.60.
    assert set(reports) == set(ROUTER_KINDS)
    assert reports["subject"].apgr > 0.56
    for kind in ("logistic", "mf", "bandit"):
        assert reports[kind].apgr > 0.58, (kind, reports[kind].apgr)
        assert reports[kind].apgr > reports["subject"].apgr, kind  # they also see the marker word
        assert reports[kind].cpt50 < 0.45, kind


def test_cascade_reads_the_answer(reports: dict[str, Report]) -> None:
    assert reports["cascade"].apgr > 0.66
    assert reports["cascade"].apgr > reports["logistic"].apgr + 0.03
    assert reports["cascade"].cpt80 < reports["logistic"].cpt80


def test_subject_router_by_hand(table: PairTable) -> None:
    router = SubjectRouter(prior=0.0)
    router.fit_table(table)
    for category in ("easy", "mid", "hard"):
        rows = [i for i, q in enumerate(table.queries) if q.category == category]
        expected = float(table.q_strong[rows].mean() - table.q_weak[rows].mean())
        assert router.score(Query(text="anything", category=category)) == pytest.approx(expected)
    overall = float(table.q_strong.mean() - table.q_weak.mean())
    assert router.score(Query(text="x", category="unseen")) == pytest.approx(overall)


def test_routers_implement_the_port_and_route_by_threshold(table: PairTable) -> None:
    for kind in ROUTER_KINDS:
        router = make_router(kind)
        assert isinstance(router, Router)
    router = SubjectRouter()
    router.fit_table(table)
    hard, easy = Query(text="q", category="hard"), Query(text="q", category="easy")
    threshold = (router.score(hard) + router.score(easy)) / 2
    assert router.route(hard, threshold) == STRONG
    assert router.route(easy, threshold) == WEAK
    assert set(router.predict(hard)) == {WEAK, STRONG}


def test_unfitted_and_misused_routers_raise() -> None:
    with pytest.raises(RouterError) as info:
        LogisticRouter().score(Query(text="q"))
    assert info.value.reason == "not_fitted"
    with pytest.raises(RouterError) as info:
        make_router("nope")
    assert info.value.reason == "unknown_kind"


@pytest.mark.parametrize("suffix", [".msgpack", ".json"])
@pytest.mark.parametrize("kind", list(ROUTER_KINDS))
def test_save_and_load_give_the_same_scores(tmp_path: Path, table: PairTable, kind: str, suffix: str) -> None:
    small = table.take(range(200))
    factories = {
        "logistic": lambda: LogisticRouter(features=TextFeaturizer(dim_bits=12), max_iter=30),
        "mf": lambda: MFRouter(features=TextFeaturizer(dim_bits=12), rank=4, max_iter=30),
        "cascade": lambda: CascadeRouter(features=TextFeaturizer(dim_bits=12), max_iter=30),
        "bandit": lambda: BanditRouter(features=TextFeaturizer(dim_bits=6)),
    }
    router = factories.get(kind, lambda: make_router(kind))()
    router.fit_table(small)
    path = tmp_path / f"router{suffix}"
    save_router(router, path, trained_on=small.queries)
    loaded, file = load_router(path)
    assert (file.kind, loaded.weak, loaded.strong) == (kind, WEAK, STRONG)
    queries = table.queries[150:300]
    assert np.allclose(loaded.score_batch(queries), router.score_batch(queries), atol=1e-5)
    assert overlap(file, queries) == pytest.approx(50 / 150)


def test_a_corrupt_router_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.msgpack"
    path.write_bytes(b"\x93garbage")
    with pytest.raises(RouterError) as info:
        load_router(path)
    assert info.value.reason == "bad_file"


def test_bandit_learns_online_from_bandit_feedback(table: PairTable) -> None:
    bandit = BanditRouter(WEAK, STRONG, features=TextFeaturizer(dim_bits=6), alpha=0.3)
    run = simulate_online(bandit, table, strong_price=0.1, seed=1)
    assert run.steps == len(table) and sum(bandit.pulls) == len(table)
    # it learns to buy the strong model where the weak one fails (hard, or with the marker word)
    hard = bandit.score(Query(text="integral road", category="hard"))
    easy = bandit.score(Query(text="apple river", category="easy"))
    assert hard > easy + 0.2
    assert 0.1 < run.strong_share < 0.9
    # and pays for it: the quality it reached beats always-weak
    assert run.quality > float(table.q_weak.mean()) + 0.1


def test_bandit_update_moves_its_estimate() -> None:
    bandit = BanditRouter(WEAK, STRONG, features=TextFeaturizer(dim_bits=6), policy="thompson")
    query = Query(text="apple", category="easy")
    before = bandit.predict(query)[STRONG]
    for _ in range(20):
        bandit.update(query, STRONG, 1.0)
    assert bandit.predict(query)[STRONG] > before + 0.5
    assert bandit.select(query, rng=random.Random(0)) in (WEAK, STRONG)
    with pytest.raises(RouterError):
        bandit.update(query, "someone-else", 1.0)


def test_crossfit_scores_every_row_out_of_fold(table: PairTable) -> None:
    scores = crossfit_scores(SubjectRouter, table, k=3, seed=0)
    assert np.all(np.isfinite(scores))
    assert evaluate_scores(table, scores, "subject").apgr > 0.5


def test_check_arithmetic() -> None:
    assert check_arithmetic("16 - 3 = 13 then 13 - 4 = 9 and <<9*2=18>>18") == (3, 0)
    assert check_arithmetic("so 2 + 2 = 5 and <<3*3=10>>") == (2, 2)
    assert check_arithmetic("80,000 + 50,000 = 130,000") == (1, 0)
    assert check_arithmetic("no numbers here") == (0, 0)


def test_answer_features() -> None:
    tokens = answer_tokens("Janet has 16 eggs", "She sells 16 - 7 = 9 eggs.\n#### 18")
    assert "a.final:True" in tokens and "a.final_int:True" in tokens and "a.any_wrong:False" in tokens
    tokens = answer_tokens("Janet has 16 eggs", "However, we assume 16 + 1 = 18, so about 16")
    assert "a.final:False" in tokens and "a.any_wrong:True" in tokens
    assert {"a.hedge:however", "a.hedge:assume", "a.hedge:about"} <= set(tokens)


def test_cascade_needs_the_weak_answer(table: PairTable) -> None:
    router = CascadeRouter(features=TextFeaturizer(dim_bits=12), max_iter=20)
    router.fit_table(table.take(range(100)))
    with pytest.raises(RouterError) as info:
        router.score(Query(text="what is 2 + 2?"))
    assert info.value.reason == "answer_required"
    assert isinstance(router.score(Query(text="what is 2 + 2?", answer="2 + 2 = 4\n#### 4")), float)


def test_bandit_over_n_arms_warms_from_a_matrix_learns_online_and_saves(tmp_path: Path) -> None:
    world = synthetic_world(4, seed=2)
    matrix = OutcomeMatrix.from_outcomes(world.outcomes(300, seed=1))
    bandit = BanditRouter(arms=matrix.models, alpha=0.3)
    bandit.fit_matrix(matrix)
    assert bandit.arms == tuple(matrix.models) and bandit.pulls == [300] * 4
    query = matrix.queries[0]
    assert set(bandit.predict(query)) == set(matrix.models)
    only = matrix.models[2]
    assert bandit.select(query, penalty={m: 0.0 if m == only else 10.0 for m in matrix.models}) == only
    stream = OutcomeMatrix.from_outcomes(world.outcomes(400, seed=2))
    cold = BanditRouter(arms=stream.models, alpha=0.3)
    run = simulate_online_models(cold, stream, prices=[0.0] * 4, seed=0)
    assert run.steps == 400 and run.quality > float(stream.accuracy().mean()) + 0.03
    path = tmp_path / "bandit.msgpack"
    save_router(bandit, path)
    loaded, file = load_router(path)
    assert isinstance(loaded, BanditRouter) and loaded.arms == bandit.arms
    assert (file.weak, file.strong) == (matrix.models[0], matrix.models[-1])
    assert loaded.predict(query) == pytest.approx(bandit.predict(query), abs=1e-4)
    with pytest.raises(RouterError):
        BanditRouter(arms=["only"])
