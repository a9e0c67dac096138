"""Evaluating routers on a :class:`PairTable`: the RouteLLM / RouterBench numbers of one router or baseline, and
cross-fitting for routers trained and evaluated on the same log.

Cross-fitting: queries are split into ``k`` folds by their (whitespace-normalised) prompt, so a question that
appears twice never sits on both sides; the folds come from a seeded permutation, so a run is repeatable. Each
fold is scored by a router fitted on the other ``k - 1``, and the metrics are computed per fold and averaged
(:func:`evaluate_scores` with ``folds``). Numbers obtained this way are *in-distribution*: the router saw
queries from the same set (same subjects, same phrasing), which is easier than routing a new set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from accord.bench.evaluation.metrics import Curve, aiq, apgr, cpt, oracle_curve, random_curve, routing_curve
from accord.routing.base import FloatArray, RouterError
from accord.routing.common import PairRouter
from accord.routing.matrix import group_folds
from accord.routing.table import PairTable

__all__ = ["Report", "baseline_reports", "crossfit_scores", "evaluate_scores", "fold_ids"]


@dataclass(frozen=True)
class Report:
    """One row of an evaluation table. ``apgr_routellm`` uses RouteLLM's 10-bin grid; NaN where undefined."""

    name: str
    quality: float
    """A single model's mean quality; for a router, the best mean quality along its curve."""
    apgr: float
    apgr_routellm: float
    cpt50: float
    cpt80: float
    aiq: float
    curve: Curve | None
    note: str = ""


def _cost_range(table: PairTable) -> tuple[float, float]:
    return float(table.c_weak.mean()), float(table.c_strong.mean())


def evaluate_scores(
    table: PairTable,
    scores: FloatArray,
    name: str,
    *,
    cascade: bool = False,
    note: str = "",
    folds: np.ndarray | None = None,
) -> Report:
    """The report of a router whose scores for the table's rows are ``scores``.

    ``cascade``: the weak model answers every query first, so an escalated query costs both models (the
    strong-call share and quality are the same; cost and AIQ's cost range include the weak call).

    ``folds`` (cross-fitted scores: the fold of each row, whose router scored it): every metric is computed per
    fold, on that fold's rows and with its own weak and strong means, and averaged over the folds weighted by
    their size; the curve is the folds' curves averaged over the share of strong calls. Scores of routers
    fitted on different folds are not on one scale, so they are never ranked against each other: pooled, a
    router with no information would score below 0.5 (each fold's constant differs, and it is highest where
    the training folds' gain was highest, i.e. where the held-out fold's is lowest).
    """
    if folds is None:
        return _evaluate(table, scores, name, cascade=cascade, note=note)
    folds = np.asarray(folds)
    if folds.shape != (len(table),):
        raise RouterError("bad_input", f"expected {len(table)} fold ids, got shape {folds.shape}")
    parts = [np.flatnonzero(folds == f) for f in np.unique(folds)]
    reports = [_evaluate(table.take(rows), scores[rows], name, cascade=cascade, note=note) for rows in parts]
    weights = np.asarray([rows.size for rows in parts], dtype=np.float64)
    curves = [r.curve for r in reports if r.curve is not None]
    curve = _mean_curve(curves, weights)

    def mean(values: list[float]) -> float:
        return float(np.average(np.asarray(values), weights=weights))

    return Report(
        name=name,
        quality=float(curve.quality.max()),
        apgr=mean([r.apgr for r in reports]),
        apgr_routellm=mean([r.apgr_routellm for r in reports]),
        cpt50=mean([r.cpt50 for r in reports]),
        cpt80=mean([r.cpt80 for r in reports]),
        aiq=mean([r.aiq for r in reports]),
        curve=curve,
        note=note,
    )


def _mean_curve(curves: list[Curve], weights: FloatArray) -> Curve:
    """Curves averaged (weighted) at every share any of them has a point at, each read linearly between its
    points."""
    share = np.unique(np.concatenate([c.share for c in curves]))
    quality = sum(w * np.interp(share, c.share, c.quality) for c, w in zip(curves, weights, strict=True))
    cost = sum(w * np.interp(share, c.share, c.cost) for c, w in zip(curves, weights, strict=True))
    total = float(weights.sum())
    return Curve(share=share, quality=np.asarray(quality) / total, cost=np.asarray(cost) / total)


def _evaluate(table: PairTable, scores: FloatArray, name: str, *, cascade: bool, note: str) -> Report:
    weak, strong = float(table.q_weak.mean()), float(table.q_strong.mean())
    c_strong = table.c_weak + table.c_strong if cascade else table.c_strong
    args = (table.q_weak, table.q_strong, table.c_weak, c_strong)
    curve = routing_curve(scores, *args)
    coarse = routing_curve(scores, *args, grid="routellm")
    c_min, c_max = float(table.c_weak.mean()), float(c_strong.mean())
    return Report(
        name=name,
        quality=float(curve.quality.max()),
        apgr=apgr(curve, weak, strong),
        apgr_routellm=apgr(coarse, weak, strong),
        cpt50=cpt(curve, 0.5, weak, strong),
        cpt80=cpt(curve, 0.8, weak, strong),
        aiq=aiq(curve, c_min, c_max),
        curve=curve,
        note=note,
    )


def _curve_report(table: PairTable, curve: Curve, name: str, note: str) -> Report:
    weak, strong = float(table.q_weak.mean()), float(table.q_strong.mean())
    return Report(
        name=name,
        quality=float(curve.quality.max()),
        apgr=apgr(curve, weak, strong),
        apgr_routellm=float("nan"),
        cpt50=cpt(curve, 0.5, weak, strong),
        cpt80=cpt(curve, 0.8, weak, strong),
        aiq=aiq(curve, *_cost_range(table)),
        curve=curve,
        note=note,
    )


def baseline_reports(table: PairTable, *, seed: int = 0) -> list[Report]:
    """weak, strong (single models), random (expected line, and one seeded draw), oracle."""
    nan = float("nan")
    args = (table.q_weak, table.q_strong, table.c_weak, table.c_strong)
    draw = np.random.default_rng(seed).random(len(table))
    return [
        Report(table.weak, float(table.q_weak.mean()), nan, nan, nan, nan, nan, None, "weak model alone"),
        Report(table.strong, float(table.q_strong.mean()), nan, nan, nan, nan, nan, None, "strong model alone"),
        _curve_report(table, random_curve(*args), "random", "expected (straight line)"),
        evaluate_scores(table, draw, "random (seeded)", note=f"uniform scores, seed {seed}"),
        _curve_report(table, oracle_curve(*args), "oracle", "knows both outcomes"),
    ]


class Grouped(Protocol):
    def groups(self) -> list[str]: ...


def fold_ids(table: Grouped, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) per row; rows with the same prompt share a fold."""
    if k < 2:
        raise RouterError("bad_input", "cross-fitting needs k >= 2 folds")
    groups = table.groups()
    distinct = len(set(groups))
    if distinct < k:
        raise RouterError("bad_input", f"{distinct} distinct prompts cannot fill {k} folds")
    return group_folds(groups, k, seed)


def crossfit_scores(
    make_router: Callable[[], PairRouter], table: PairTable, *, k: int = 5, seed: int = 0
) -> FloatArray:
    """Held-out scores for every row: fold ``i`` is scored by a router fitted on the other folds."""
    folds = fold_ids(table, k, seed)
    scores = np.full(len(table), math.nan)
    for fold in range(k):
        train = np.flatnonzero(folds != fold)
        test = np.flatnonzero(folds == fold)
        router = make_router()
        router.fit_table(table.take(train))
        held_out = table.take(test)
        scores[test] = router.score_batch(held_out.queries)
    return scores
