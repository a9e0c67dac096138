"""Evaluating a router over any number of models: its cost-accuracy curve over lambda against the single models.

A router over ``N`` models is a policy per price weight ``lambda`` (per US dollar, the market's
``Policy.lambda_price``): at each lambda it picks one model per query (:class:`Chooser`). On an
:class:`~accord.routing.matrix.OutcomeMatrix` of held-out queries (every model's outcome known), each lambda gives
one operating point: mean accuracy (0..1) and mean cost per query (micro-USD) of the picked models. The report
(:class:`ModelsReport`, also the JSON of ``accord router eval --json``) holds

- ``models``: every single model's accuracy and cost per query;
- ``curve``: the router's points from the largest lambda (every query to its cheapest model) down to 0;
- ``hull``: the single models' non-decreasing convex hull (mixing two models at random reaches any point on the
  segment between them), and ``curve_hull``, the same hull of the router's points;
- ``oracle``: the policy that knows every outcome (at each lambda the best realised ``quality - lambda * cost``);
- ``best_single``: the most accurate single model (ties: the cheaper); ``accuracy_at_best_single_cost``: the
  router's accuracy at that model's cost per query, read off ``curve_hull``; ``cost_at_best_single_accuracy``:
  the least cost per query at which ``curve_hull`` reaches that model's accuracy (None if it never does);
- ``min_gap_to_hull`` / ``max_gain_over_hull``: the least and the largest ``curve_hull - hull`` over the cost
  range from the cheapest model to the dearest (at or above 0 everywhere: the router reaches the hull at every
  cost), with the costs where they occur.

The hulls extend flat to the right of their last point (spending more need never lose accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np

from accord.bench.evaluation.evaluate import fold_ids
from accord.bench.evaluation.metrics import nondecreasing_hull
from accord.routing.base import FloatArray, RouterError
from accord.routing.gate import choose
from accord.routing.matrix import OutcomeMatrix

__all__ = [
    "Chooser",
    "FoldPlans",
    "crossfit_plans",
    "CurvePoint",
    "HullPoint",
    "ModelRow",
    "ModelsReport",
    "OracleReport",
    "evaluate_chooser",
    "hull_at",
    "single_models",
]


class Chooser(Protocol):
    """A router over N models as a policy per lambda (a predictor's :class:`~accord.routing.predictor.Plan`)."""

    def choose(self, lam: float) -> np.ndarray: ...

    def lambdas(self, points: int = 200) -> list[float]: ...


class ModelRow(msgspec.Struct, kw_only=True):
    model: str
    accuracy: float
    cost_per_query_micros: float


class CurvePoint(msgspec.Struct, kw_only=True):
    lambda_: float = msgspec.field(name="lambda")
    """Price weight per US dollar (the market's ``Policy.lambda_price``)."""
    accuracy: float
    cost_per_query_micros: float
    picks: dict[str, int] = {}
    """How many queries went to each model."""


class HullPoint(msgspec.Struct, kw_only=True):
    cost_per_query_micros: float
    accuracy: float
    model: str | None = None
    """The single model at this vertex (single-model hull only)."""


class OracleReport(msgspec.Struct, kw_only=True):
    accuracy: float
    """At lambda 0: the share of queries some model answers well."""
    cost_per_query_micros: float
    """At lambda 0 (the cheapest model that answers well, where one does)."""
    curve: list[CurvePoint]


class ModelsReport(msgspec.Struct, kw_only=True):
    router: str
    queries: int
    note: str
    models: list[ModelRow]
    curve: list[CurvePoint]
    curve_hull: list[HullPoint]
    hull: list[HullPoint]
    oracle: OracleReport
    best_single: ModelRow
    accuracy_at_best_single_cost: float
    cost_at_best_single_accuracy: float | None
    min_gap_to_hull: float
    min_gap_at_cost_micros: float
    max_gain_over_hull: float
    max_gain_at_cost_micros: float
    reference: list[CurvePoint] = []
    """A reference policy's curve where one is known (e.g. the Bayes router of a generated world)."""


def single_models(matrix: OutcomeMatrix) -> list[ModelRow]:
    accuracy, cost = matrix.accuracy(), matrix.cost_per_query()
    return [
        ModelRow(model=m, accuracy=float(accuracy[j]), cost_per_query_micros=float(cost[j]))
        for j, m in enumerate(matrix.models)
    ]


def hull_at(xs: FloatArray, ys: FloatArray, cost: float) -> float:
    """The hull's accuracy at ``cost`` (flat right of its last vertex; NaN left of its first)."""
    if cost < xs[0] - 1e-9 * max(1.0, abs(float(xs[0]))):
        return math.nan
    return float(np.interp(cost, xs, ys, right=float(ys[-1])))


def _cost_to_reach(xs: FloatArray, ys: FloatArray, target: float) -> float | None:
    """The least cost at which the hull reaches ``target`` (None if it never does)."""
    if ys[0] >= target:
        return float(xs[0])
    for i in range(1, xs.size):
        if ys[i] >= target:
            x0, x1, y0, y1 = float(xs[i - 1]), float(xs[i]), float(ys[i - 1]), float(ys[i])
            return x0 + (target - y0) / (y1 - y0) * (x1 - x0)
    return None


def _points(
    matrix: OutcomeMatrix, pick: Callable[[float], np.ndarray], lambdas: Sequence[float]
) -> list[CurvePoint]:
    rows = np.arange(len(matrix))
    points: list[CurvePoint] = []
    for lam in sorted(set(lambdas), reverse=True):
        picked = pick(lam)
        counts = np.bincount(picked, minlength=len(matrix.models))
        points.append(
            CurvePoint(
                lambda_=float(lam),
                accuracy=float(matrix.quality[rows, picked].mean()),
                cost_per_query_micros=float(matrix.cost[rows, picked].mean()),
                picks={m: int(counts[j]) for j, m in enumerate(matrix.models) if counts[j]},
            )
        )
    return points


def _hull(points: Sequence[CurvePoint]) -> tuple[FloatArray, FloatArray]:
    return nondecreasing_hull(
        np.asarray([p.cost_per_query_micros for p in points]), np.asarray([p.accuracy for p in points])
    )


def evaluate_chooser(
    matrix: OutcomeMatrix,
    chooser: Chooser,
    *,
    router: str,
    note: str = "",
    points: int = 200,
    reference: Chooser | None = None,
) -> ModelsReport:
    """The report of the module docstring for ``chooser`` on ``matrix``: complete rows, aligned with the rows
    ``chooser`` picks for."""
    table = matrix
    if len(table) == 0 or not table.observed.all():
        raise RouterError("bad_input", "evaluate on complete rows (OutcomeMatrix.complete), and choose on them")
    singles = single_models(table)
    costs = np.asarray([s.cost_per_query_micros for s in singles])
    accuracy = np.asarray([s.accuracy for s in singles])
    hull_x, hull_y = nondecreasing_hull(costs, accuracy)
    vertex_model = {(s.cost_per_query_micros, s.accuracy): s.model for s in singles}
    curve = _points(table, chooser.choose, chooser.lambdas(points))
    curve_x, curve_y = _hull(curve)
    oracle_curve = _points(
        table,
        lambda lam: choose(table.quality, table.cost, lam),
        [float(v) for v in np.quantile(np.asarray(chooser.lambdas(points)), np.linspace(0, 1, 41))] + [0.0],
    )
    best = max(singles, key=lambda s: (s.accuracy, -s.cost_per_query_micros))
    span = np.unique(np.concatenate([hull_x, curve_x, [costs.min(), costs.max()]]))
    span = span[(span >= costs.min()) & (span <= costs.max())]
    gaps = np.asarray([hull_at(curve_x, curve_y, c) - hull_at(hull_x, hull_y, c) for c in span])
    gaps = np.where(np.isnan(gaps), -math.inf, gaps)
    low, high = int(np.argmin(gaps)), int(np.argmax(gaps))
    return ModelsReport(
        router=router,
        queries=len(table),
        note=note,
        models=singles,
        curve=curve,
        curve_hull=[
            HullPoint(cost_per_query_micros=float(c), accuracy=float(a))
            for c, a in zip(curve_x, curve_y, strict=True)
        ],
        hull=[
            HullPoint(
                cost_per_query_micros=float(c), accuracy=float(a), model=vertex_model.get((float(c), float(a)))
            )
            for c, a in zip(hull_x, hull_y, strict=True)
        ],
        oracle=OracleReport(
            accuracy=oracle_curve[-1].accuracy,
            cost_per_query_micros=oracle_curve[-1].cost_per_query_micros,
            curve=oracle_curve,
        ),
        best_single=best,
        accuracy_at_best_single_cost=hull_at(curve_x, curve_y, best.cost_per_query_micros),
        cost_at_best_single_accuracy=_cost_to_reach(curve_x, curve_y, best.accuracy),
        min_gap_to_hull=float(gaps[low]),
        min_gap_at_cost_micros=float(span[low]),
        max_gain_over_hull=float(gaps[high]),
        max_gain_at_cost_micros=float(span[high]),
        reference=[] if reference is None else _points(table, reference.choose, reference.lambdas(points)),
    )


@dataclass(frozen=True)
class FoldPlans:
    """A :class:`Chooser` over every row of a matrix where each row is chosen by its fold's chooser (fitted on
    the other folds). At a given lambda each fold's policy is fixed without looking at any other fold, so the
    pooled point is the folds' points averaged by their size: the per-fold metric."""

    rows: list[np.ndarray]
    plans: list[Chooser]
    size: int

    def choose(self, lam: float) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.int64)
        for rows, plan in zip(self.rows, self.plans, strict=True):
            out[rows] = plan.choose(lam)
        return out

    def lambdas(self, points: int = 200) -> list[float]:
        every = np.unique(np.concatenate([np.asarray(p.lambdas(points)) for p in self.plans]))
        if every.size <= points:
            return [float(v) for v in every]
        picked = np.quantile(every, np.linspace(0.0, 1.0, points), method="nearest")
        return [float(v) for v in np.unique(np.concatenate([[0.0], picked]))]


def crossfit_plans(
    matrix: OutcomeMatrix,
    fit: Callable[[OutcomeMatrix], Callable[[OutcomeMatrix], Chooser]],
    *,
    k: int = 5,
    seed: int = 0,
) -> tuple[OutcomeMatrix, FoldPlans]:
    """Cross-fit a router over N models: ``fit(train)`` returns a function that makes the chooser of a test
    matrix. Folds split by prompt (:func:`~accord.bench.evaluation.evaluate.fold_ids`); training folds keep
    their incomplete rows. Returns the complete rows and the chooser for them (for :func:`evaluate_chooser`)."""
    folds = fold_ids(matrix, k, seed)
    complete = np.flatnonzero(matrix.observed.all(axis=1))
    if complete.size == 0:
        raise RouterError("bad_input", "no query has an outcome of every model")
    table = matrix.take(complete)
    rows: list[np.ndarray] = []
    plans: list[Chooser] = []
    for fold in range(k):
        make = fit(matrix.take(np.flatnonzero(folds != fold)))
        held_out = np.flatnonzero(folds[complete] == fold)
        rows.append(held_out)
        plans.append(make(table.take(held_out)))
    return table, FoldPlans(rows=rows, plans=plans, size=len(table))
