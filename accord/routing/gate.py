"""Choosing a model per query at a price weight lambda, and the gate between the learned values and two
fallback policies.

At price weight ``lambda`` (per US dollar, the market's ``Policy.lambda_price``) a query goes to the model with the
highest ``value - lambda * cost_USD`` (:func:`choose`; ties go to the cheaper model). There are three ways to
value a (query, model), the :data:`OPTIONS`:

- ``learned``: the calibrated per-query prediction, with per-task cost estimates;
- ``task``: each model's quality on the query's task (kind, category) and its cost there: the choice is the best
  single model of that task at that lambda;
- ``global``: each model's overall quality and cost: the choice is the best single model at that lambda, a
  vertex of the single-model hull.

The :class:`Gate` says, per task key and lambda, which to use. It is fitted on the training log only, from
out-of-fold values (:func:`fit_gate`): at each lambda of a grid, and for each task key with enough queries (and
every kind, and overall), the options' realised utility ``sum(quality - lambda * cost)`` over those queries is
compared and the best kept; on a tie the simpler one (global, then task). So the learned ranking is used only
where, on queries it had not seen, it beat picking the best single model of the task and the best single model
overall. Utility rather than accuracy: a policy with the higher utility at one lambda lies above the other's line
of slope lambda through its point, which is what being above the cost-quality hull means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.groups import query_keys

__all__ = ["MICROS_PER_USD", "OPTIONS", "Gate", "Option", "breakpoints", "choose", "fit_gate", "utility"]

MICROS_PER_USD = 1_000_000.0
OPTIONS: Final = ("learned", "task", "global")
_ALL = "*"


def choose(values: FloatArray, cost_micros: FloatArray, lam: float) -> np.ndarray:
    """Per row, the column maximising ``values - lam * cost / 1e6`` (ties: the cheaper column)."""
    if values.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    utility_ = values - lam * cost_micros / MICROS_PER_USD - 1e-12 * cost_micros
    return np.asarray(np.argmax(utility_, axis=1), dtype=np.int64)


def utility(quality: FloatArray, cost_micros: FloatArray, picked: np.ndarray, lam: float) -> FloatArray:
    """Realised ``quality - lam * cost_USD`` of the picked column of every row."""
    rows = np.arange(quality.shape[0])
    return np.asarray(quality[rows, picked] - lam * cost_micros[rows, picked] / MICROS_PER_USD, dtype=np.float64)


def breakpoints(values: FloatArray, cost_micros: FloatArray, *, limit: int = 4000) -> FloatArray:
    """The lambdas (per USD) at which some row's choice between two columns flips: ``dv / dc`` for every pair
    where the dearer column has the higher value (over at most ``limit`` evenly spaced rows)."""
    n = values.shape[0]
    if n == 0:
        return np.zeros(0)
    rows = np.linspace(0, n - 1, min(n, limit)).astype(np.int64)
    v, c = values[rows], cost_micros[rows] / MICROS_PER_USD
    dv = v[:, :, None] - v[:, None, :]
    dc = c[:, :, None] - c[:, None, :]
    valid = (dc > 0) & (dv > 0)
    return np.asarray(dv[valid] / dc[valid], dtype=np.float64)


def lambda_grid(samples: Sequence[FloatArray], points: int) -> FloatArray:
    """0, then ``points`` quantiles of the pooled breakpoints, then twice the largest (everything cheapest)."""
    pooled = np.concatenate([s for s in samples if s.size] or [np.zeros(0)])
    pooled = pooled[np.isfinite(pooled) & (pooled > 0)]
    if not pooled.size:
        return np.array([0.0])
    inner = np.quantile(pooled, np.linspace(0.0, 1.0, points))
    return np.unique(np.concatenate([[0.0], inner, [2.0 * float(pooled.max())]]))


@dataclass(frozen=True)
class Option:
    """One way of valuing the (query, model) pairs of some queries: values and the cost estimates the choice is
    made with, both ``(queries, models)``."""

    values: FloatArray
    cost: FloatArray

    def take(self, rows: np.ndarray) -> Option:
        return Option(values=self.values[rows], cost=self.cost[rows])

    def choose(self, lam: float) -> np.ndarray:
        return choose(self.values, self.cost, lam)


@dataclass(frozen=True)
class Gate:
    """``choice[k, i]``: the index in :data:`OPTIONS` that task key ``keys[k]`` uses at ``lambdas[i]``. A lambda
    uses the nearest grid point (on a log scale); a query uses its finest key in ``keys`` (category, kind, then
    ``*``)."""

    lambdas: FloatArray
    keys: list[str]
    choice: np.ndarray

    def __post_init__(self) -> None:
        if self.choice.shape != (len(self.keys), self.lambdas.size) or _ALL not in self.keys:
            raise RouterError("bad_file", "a gate needs one row per key, one column per lambda, and a '*' row")
        if self.choice.size and not (int(self.choice.min()) >= 0 and int(self.choice.max()) < len(OPTIONS)):
            raise RouterError("bad_file", "a gate's choice must index OPTIONS")

    @classmethod
    def always(cls, option: str = "learned") -> Gate:
        return cls(
            lambdas=np.array([0.0]), keys=[_ALL], choice=np.full((1, 1), OPTIONS.index(option), dtype=np.int64)
        )

    def rows(self, queries: Sequence[Query]) -> np.ndarray:
        """The gate row of each query."""
        index = {k: i for i, k in enumerate(self.keys)}
        out = np.empty(len(queries), dtype=np.int64)
        for n, query in enumerate(queries):
            out[n] = next((index[k] for k in query_keys(query) if k in index), index[_ALL])
        return out

    def column(self, lam: float) -> int:
        grid = self.lambdas
        if grid.size == 1 or lam <= 0:
            return 0
        positive = np.log(grid[1:])
        cut = np.concatenate([[positive[0] - np.log(2.0)], (positive[:-1] + positive[1:]) / 2])
        return int(np.searchsorted(cut, np.log(lam), side="right"))

    def options(self, rows: np.ndarray, lam: float) -> np.ndarray:
        """The option (index in :data:`OPTIONS`) of each gate row at ``lam``."""
        return np.asarray(self.choice[rows, self.column(lam)], dtype=np.int64)

    def shares(self) -> dict[str, float]:
        """The share of (key, lambda) cells that use each option."""
        return {name: float((self.choice == i).mean()) for i, name in enumerate(OPTIONS)}


def fit_gate(
    queries: Sequence[Query],
    quality: FloatArray,
    cost_micros: FloatArray,
    options: Sequence[Option],
    *,
    min_rows: int = 200,
    points: int = 48,
) -> Gate:
    """The gate of the module docstring, from out-of-fold ``options`` (in :data:`OPTIONS` order) of the training
    rows and their realised ``quality`` and ``cost_micros``. A row where some models have no outcome is scored
    with the choice among those that have one (a log need not have every model on every query); rows with fewer
    than two are left out."""
    if len(options) != len(OPTIONS):
        raise RouterError("bad_input", f"one option per {OPTIONS}")
    observed = ~np.isnan(quality) & ~np.isnan(cost_micros)
    usable = np.flatnonzero(observed.sum(axis=1) >= 2)
    if usable.size == 0:
        return Gate.always()
    rows = [queries[int(i)] for i in usable]
    seen = observed[usable]
    q, c = np.where(seen, quality[usable], 0.0), np.where(seen, cost_micros[usable], 0.0)
    kept = [Option(values=np.where(seen, o.values[usable], -np.inf), cost=o.cost[usable]) for o in options]
    lambdas = lambda_grid([breakpoints(o.values, o.cost) for o in options[:2]], points)
    members: dict[str, list[int]] = {_ALL: list(range(len(rows)))}
    for i, query in enumerate(rows):
        for key in query_keys(query):
            members.setdefault(key, []).append(i)
    keys = [_ALL, *sorted(k for k, m in members.items() if k != _ALL and len(m) >= min_rows)]
    index = [np.asarray(members[k], dtype=np.int64) for k in keys]
    choice = np.zeros((len(keys), lambdas.size), dtype=np.int64)
    for j, lam in enumerate(lambdas.tolist()):
        gains = [utility(q, c, o.choose(lam), lam) for o in kept]
        for k, member in enumerate(index):
            totals = [float(g[member].sum()) for g in gains]
            best = len(totals) - 1  # the simplest wins a tie
            for o in range(len(totals) - 2, -1, -1):
                if totals[o] > totals[best]:
                    best = o
            choice[k, j] = best
    return Gate(lambdas=lambdas, keys=keys, choice=choice)
