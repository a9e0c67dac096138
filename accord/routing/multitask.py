"""Multi-task logistic regression: P(good answer | query, model) for any number of models at once.

Each model ``m`` has its own weights on the query's hashed features ``x``, plus a part every model shares:

    logit P(model m answers x well) = b_m + (w_shared + w_m) . x

fitted jointly on every observed (query, model) cell by L-BFGS, minimising the logistic loss plus
``l2_shared / 2 * |w_shared|^2 + l2_model / 2 * sum_m |w_m|^2`` (regularised multi-task learning, Evgeniou and
Pontil 2004). The shared part learns what makes a query hard for every model; the per-model parts only what sets
a model apart, and are penalised harder (``l2_model > l2_shared``), so a model with few outcomes borrows the
others' strength and a model with many can still differ. The problem is convex: the fit does not depend on a
random start. Missing cells (a model that did not answer a query) carry no loss. Labels may be soft (0..1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from accord.routing.base import FloatArray, RouterError
from accord.routing.sparse import IntArray, SparseRows, lbfgs, sigmoid

__all__ = ["MultiTaskFit", "fit_multitask"]


@dataclass(frozen=True)
class MultiTaskFit:
    """Fitted weights over the feature columns seen in training (``columns``, ascending): ``weights[:, 0]`` is
    the shared part, ``weights[:, 1 + m]`` model ``m``'s own; ``bias[m]`` its intercept."""

    dim: int
    columns: IntArray
    weights: FloatArray
    bias: FloatArray

    def __post_init__(self) -> None:
        if self.weights.shape != (self.columns.size, self.bias.size + 1):
            raise RouterError(
                "bad_file", f"weights of shape {self.weights.shape} do not fit {self.columns.size} columns"
            )

    @property
    def models(self) -> int:
        return int(self.bias.size)

    def parts(self, x: SparseRows) -> tuple[FloatArray, FloatArray]:
        """(shared part ``w_shared . x`` per row, logits ``(rows, models)``)."""
        if x.dim != self.dim:
            raise RouterError("bad_input", f"features of dimension {x.dim}, the fit has {self.dim}")
        if not self.columns.size:
            return np.zeros(x.n_rows), np.tile(self.bias, (x.n_rows, 1))
        xw = x_matmat(x.select(self.columns), self.weights)
        shared = xw[:, 0]
        return shared, shared[:, None] + xw[:, 1:] + self.bias

    def logits(self, x: SparseRows) -> FloatArray:
        return self.parts(x)[1]


def x_matmat(x: SparseRows, w: FloatArray) -> FloatArray:
    return x.matmat(w) if x.n_rows else np.zeros((0, w.shape[1]))


def _logit(p: FloatArray) -> FloatArray:
    clipped = np.clip(p, 1e-4, 1 - 1e-4)
    return np.asarray(np.log(clipped / (1 - clipped)), dtype=np.float64)


def fit_multitask(
    x: SparseRows,
    y: FloatArray,
    *,
    mask: np.ndarray | None = None,
    l2_shared: float = 1.0,
    l2_model: float = 4.0,
    max_iter: int = 200,
) -> MultiTaskFit:
    """Fit the model of the module docstring. ``y`` is ``(rows, models)`` in 0..1; ``mask`` marks the observed
    cells (default: the cells that are not NaN)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != x.n_rows:
        raise RouterError("bad_input", f"labels of shape {y.shape} for {x.n_rows} rows")
    observed = ~np.isnan(y) if mask is None else np.asarray(mask, dtype=bool) & ~np.isnan(y)
    if not observed.any():
        raise RouterError("bad_input", "no observed (query, model) cell to learn from")
    target = np.where(observed, y, 0.0)
    weight = observed.astype(np.float64)
    n_models = y.shape[1]
    compact, used = x.compact()
    dim = compact.dim
    order = compact.column_order()
    counts = weight.sum(axis=0)
    rates = np.divide(target.sum(axis=0), counts, out=np.full(n_models, 0.5), where=counts > 0)
    b0 = _logit(rates)
    penalty = np.concatenate([[l2_shared], np.full(n_models, l2_model)])
    size = dim * (n_models + 1)

    def fun(theta: FloatArray) -> tuple[float, FloatArray]:
        w = theta[:size].reshape(dim, n_models + 1)
        b = theta[size:]
        xw = x_matmat(compact, w)
        z = xw[:, :1] + xw[:, 1:] + b
        loss = float(np.sum(weight * (np.logaddexp(0.0, z) - target * z)))
        loss += 0.5 * float(np.sum(penalty * np.multiply(w, w).sum(axis=0)))
        r = weight * (sigmoid(z) - target)
        stacked = np.concatenate([r.sum(axis=1, keepdims=True), r], axis=1)
        grad_w = compact.rmatmat(stacked, order) + w * penalty
        return loss, np.concatenate([grad_w.ravel(), r.sum(axis=0)])

    theta = lbfgs(fun, np.concatenate([np.zeros(size), b0]), max_iter=max_iter)
    weights = theta[:size].reshape(dim, n_models + 1)
    bias = theta[size:]
    if not np.all(np.isfinite(theta)) or math.isnan(float(bias.sum())):
        raise RouterError("bad_input", "the multi-task fit diverged")
    return MultiTaskFit(dim=x.dim, columns=used, weights=weights.copy(), bias=bias.copy())
