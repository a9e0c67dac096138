"""Choosing a model per query at a price weight lambda, and the gate that falls back to the per-task best model.

At price weight ``lambda`` (per US dollar, the market's ``Policy.lambda_price``) a query goes to the model with the
highest ``value - lambda * cost_USD`` (:func:`choose`; ties go to the cheaper model). Values are either the
learned per-query predictions or the per-task table of what each model achieves (the *fallback*: with it, the
choice is the best single model of the query's task at that lambda, a point of that task's single-model hull).

The :class:`Gate` says, per task key and lambda, which of the two to use. It is fitted on the training log only,
from out-of-fold predictions (:func:`fit_gate`): at each lambda of a grid, and for each task key with enough
queries (and every kind, and overall), the two policies' realised utility ``sum(quality - lambda * cost)`` over
those queries is compared, and the learned values are kept where they do at least as well. So the learned
ranking is used only where, on queries it had not seen, it beat picking the best single model of the task; at
every other lambda the router is that single-model choice. Utility rather than accuracy: a policy that is
better at one lambda lies above the other's line of slope lambda through its point, which is what being above
the cost-quality hull means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.groups import query_keys

__all__ = ["MICROS_PER_USD", "Gate", "breakpoints", "choose", "fit_gate", "utility"]

MICROS_PER_USD = 1_000_000.0
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
class Gate:
    """``learned[k, i]``: whether task key ``keys[k]`` uses the learned values at ``lambdas[i]``. A lambda uses the
    nearest grid point (on a log scale); a query uses its finest key in ``keys`` (category, kind, then ``*``)."""

    lambdas: FloatArray
    keys: list[str]
    learned: np.ndarray

    def __post_init__(self) -> None:
        if self.learned.shape != (len(self.keys), self.lambdas.size) or _ALL not in self.keys:
            raise RouterError("bad_file", "a gate needs one row per key, one column per lambda, and a '*' row")

    @classmethod
    def always_learned(cls) -> Gate:
        return cls(lambdas=np.array([0.0]), keys=[_ALL], learned=np.ones((1, 1), dtype=bool))

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

    def use_learned(self, rows: np.ndarray, lam: float) -> np.ndarray:
        return np.asarray(self.learned[rows, self.column(lam)], dtype=bool)


def fit_gate(
    queries: Sequence[Query],
    quality: FloatArray,
    cost_micros: FloatArray,
    learned: FloatArray,
    fallback: FloatArray,
    cost_estimate: FloatArray,
    *,
    min_rows: int = 200,
    points: int = 48,
) -> Gate:
    """The gate of the module docstring, from out-of-fold ``learned`` and ``fallback`` values of the training
    rows, their realised ``quality`` and ``cost_micros`` and the ``cost_estimate`` the choice is made with.
    Rows with a missing cell are left out (a choice there cannot be scored)."""
    complete = np.flatnonzero(~np.isnan(quality).any(axis=1) & ~np.isnan(cost_micros).any(axis=1))
    if complete.size == 0:
        return Gate.always_learned()
    rows = [queries[int(i)] for i in complete]
    q, c = quality[complete], cost_micros[complete]
    v_l, v_f, c_hat = learned[complete], fallback[complete], cost_estimate[complete]
    lambdas = lambda_grid([breakpoints(v_l, c_hat), breakpoints(v_f, c_hat)], points)
    members: dict[str, list[int]] = {_ALL: list(range(len(rows)))}
    for i, query in enumerate(rows):
        for key in query_keys(query):
            members.setdefault(key, []).append(i)
    keys = [_ALL, *sorted(k for k, m in members.items() if k != _ALL and len(m) >= min_rows)]
    learned_wins = np.zeros((len(keys), lambdas.size), dtype=bool)
    index = [np.asarray(members[k], dtype=np.int64) for k in keys]
    for j, lam in enumerate(lambdas.tolist()):
        gain = utility(q, c, choose(v_l, c_hat, lam), lam) - utility(q, c, choose(v_f, c_hat, lam), lam)
        for k, member in enumerate(index):
            learned_wins[k, j] = float(gain[member].sum()) >= 0.0
    return Gate(lambdas=lambdas, keys=keys, learned=learned_wins)
