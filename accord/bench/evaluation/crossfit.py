"""Cross-fitting that keeps its fold routers, and the suite run the routing benchmarks share.

:func:`~accord.bench.evaluation.evaluate.crossfit_scores` returns each row's held-out score and drops the routers;
live routing needs them: a query arriving at request time is scored by the router of its fold (fitted on the
other folds, so it never saw the query), and a cascade scores the answer the first tier just gave. A
:class:`CrossFit` keeps the ``k`` routers and the fold of every row next to the scores (same
:func:`~accord.bench.evaluation.evaluate.fold_ids`, same order as ``crossfit_scores``); reports are computed per
fold and averaged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from accord.bench.evaluation.evaluate import Report, baseline_reports, evaluate_scores, fold_ids
from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.common import PairRouter
from accord.routing.files import make_router
from accord.routing.table import PairTable

__all__ = [
    "CrossFit",
    "NoInfoRouter",
    "SuiteRun",
    "crossfit_kind",
    "crossfit_models",
    "no_info_report",
    "run_suite",
    "suite_from_fits",
]


class NoInfoRouter(PairRouter):
    """A router that knows nothing about a query: it scores every query with its training rows' mean gain of
    the strong model, so its score differs only between folds. Cross-fitted and scored per fold it must get
    APGR 0.5 up to noise: the check that the cross-fitted metric is not biased."""

    kind = "no-info"

    def fit_table(self, table: PairTable) -> None:
        self._begin_fit(table)
        self._means = (float(table.q_weak.mean()) / table.scale, float(table.q_strong.mean()) / table.scale)
        self.fitted = True

    def _predict_batch(self, queries: Sequence[Query]) -> tuple[FloatArray, FloatArray]:
        return np.full(len(queries), self._means[0]), np.full(len(queries), self._means[1])


@dataclass(frozen=True)
class CrossFit:
    """One router kind cross-fitted on a table: the fold of each row, the router of each fold, held-out scores."""

    kind: str
    folds: np.ndarray
    routers: list[PairRouter]
    scores: FloatArray
    seconds: float
    """Wall time of fitting and scoring all folds."""

    @property
    def cascade(self) -> bool:
        return self.routers[0].kind == "cascade"

    def router_for(self, row: int) -> PairRouter:
        """The router that never saw row ``row`` (fitted on the other folds)."""
        return self.routers[int(self.folds[row])]

    def score(self, row: int, query: Query) -> float:
        """Score ``query`` (row ``row``'s query, possibly with a fresh answer) with its fold's router."""
        return self.router_for(row).score(query)


def crossfit_models(
    factory: Callable[[], PairRouter], table: PairTable, *, k: int = 5, seed: int = 0, kind: str | None = None
) -> CrossFit:
    """Fit one router per fold on the other folds; score each fold with its router."""
    started = time.perf_counter()
    folds = fold_ids(table, k, seed)
    scores = np.full(len(table), math.nan)
    routers: list[PairRouter] = []
    for fold in range(k):
        train = np.flatnonzero(folds != fold)
        test = np.flatnonzero(folds == fold)
        router = factory()
        router.fit_table(table.take(train))
        scores[test] = router.score_batch(table.take(test).queries)
        routers.append(router)
    return CrossFit(
        kind=kind or routers[0].kind,
        folds=folds,
        routers=routers,
        scores=scores,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class SuiteRun:
    """Everything one set's evaluation produced: baselines, a cross-fitted report per router kind, the fits."""

    table: PairTable
    baselines: list[Report]
    reports: list[Report]
    fits: dict[str, CrossFit] = field(default_factory=dict)
    folds: int = 5
    seed: int = 0

    @property
    def everything(self) -> list[Report]:
        return [*self.baselines, *self.reports]

    @property
    def seconds(self) -> dict[str, float]:
        return {kind: fit.seconds for kind, fit in self.fits.items()}

    def report(self, name: str) -> Report | None:
        return next((r for r in self.everything if r.name == name), None)


def crossfit_kind(
    table: PairTable,
    kind: str,
    *,
    k: int = 5,
    seed: int = 0,
    factory: Callable[[], PairRouter] | None = None,
) -> CrossFit | None:
    """Cross-fit one router kind (a module-level function, so it can run in a worker process); None for a
    cascade on a table without the weak model's answers."""
    if factory is None:
        make_router(kind)  # fail early on an unknown kind
        factory = _maker(kind)
    if factory().kind == "cascade" and not all(q.answer is not None for q in table.queries):
        return None
    fit = crossfit_models(factory, table, k=k, seed=seed, kind=kind)
    if not np.all(np.isfinite(fit.scores)):
        raise RouterError("bad_input", f"{kind}: cross-fitting left rows unscored")
    return fit


def no_info_report(table: PairTable, *, k: int = 5, seed: int = 0) -> Report:
    """:class:`NoInfoRouter` cross-fitted as every router is (same folds), as a baseline row."""
    fit = crossfit_models(NoInfoRouter, table, k=k, seed=seed)
    return evaluate_scores(
        table, fit.scores, "no-info", note="cross-fitted; knows nothing (APGR 0.5 expected)", folds=fit.folds
    )


def suite_from_fits(table: PairTable, fits: Sequence[CrossFit], *, k: int = 5, seed: int = 0) -> SuiteRun:
    """The suite of already cross-fitted routers (in the order given) plus the baselines (single models,
    random, oracle, and :class:`NoInfoRouter` cross-fitted)."""
    reports = [
        evaluate_scores(
            table,
            fit.scores,
            fit.kind,
            cascade=fit.cascade,
            note=f"cross-fitted, {k} folds (in-distribution)",
            folds=fit.folds,
        )
        for fit in fits
    ]
    return SuiteRun(
        table=table,
        baselines=[*baseline_reports(table, seed=seed), no_info_report(table, k=k, seed=seed)],
        reports=reports,
        fits={fit.kind: fit for fit in fits},
        folds=k,
        seed=seed,
    )


def run_suite(
    table: PairTable,
    kinds: Sequence[str],
    *,
    k: int = 5,
    seed: int = 0,
    factories: dict[str, Callable[[], PairRouter]] | None = None,
) -> SuiteRun:
    """Baselines (weak, strong, random, oracle) and a cross-fitted report per kind, keeping the fold routers.

    ``factories`` may override how a kind is built, and cascades are skipped on tables without the weak model's
    answers.
    """
    fits = [crossfit_kind(table, kind, k=k, seed=seed, factory=(factories or {}).get(kind)) for kind in kinds]
    return suite_from_fits(table, [f for f in fits if f is not None], k=k, seed=seed)


def _maker(kind: str) -> Callable[[], PairRouter]:
    return lambda: make_router(kind)
