"""A minimal CSR matrix in numpy (rows = queries, columns = hashed features) and L2-regularised logistic
regression on it, fitted with L-BFGS. Enough for routers without scipy or scikit-learn."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from accord.routing.base import FloatArray, RouterError

__all__ = ["IntArray", "SparseRows", "fit_logistic", "lbfgs", "sigmoid"]

IntArray = npt.NDArray[np.int64]


def sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


@dataclass(frozen=True)
class SparseRows:
    """Compressed sparse rows: row ``i`` holds ``data[indptr[i]:indptr[i+1]]`` at columns ``indices[...]``."""

    indptr: IntArray
    indices: IntArray
    data: FloatArray
    dim: int

    @classmethod
    def from_rows(cls, rows: Sequence[dict[int, float]], dim: int) -> SparseRows:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = np.fromiter((k for r in rows for k in r), dtype=np.int64, count=int(indptr[-1]))
        data = np.fromiter((v for r in rows for v in r.values()), dtype=np.float64, count=int(indptr[-1]))
        if indices.size and (indices.min() < 0 or indices.max() >= dim):
            raise RouterError("bad_input", "feature index out of range")
        return cls(indptr=indptr, indices=indices, data=data, dim=dim)

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def row_ids(self) -> IntArray:
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))

    def matvec(self, w: FloatArray) -> FloatArray:
        """``X @ w``."""
        out = np.bincount(self.row_ids(), weights=self.data * w[self.indices], minlength=self.n_rows)
        return out.astype(np.float64, copy=False)

    def rmatvec(self, r: FloatArray) -> FloatArray:
        """``X.T @ r``."""
        out = np.bincount(self.indices, weights=self.data * r[self.row_ids()], minlength=self.dim)
        return out.astype(np.float64, copy=False)

    def matmat(self, w: FloatArray) -> FloatArray:
        """``X @ W`` for a dense ``(dim, k)`` matrix."""
        out = np.zeros((self.n_rows, w.shape[1]))
        starts = self.indptr[:-1]
        nonempty = np.diff(self.indptr) > 0
        if self.indices.size:
            out[nonempty] = np.add.reduceat(self.data[:, None] * w[self.indices], starts[nonempty], axis=0)
        return out

    def rmatmat(self, r: FloatArray, order: IntArray | None = None) -> FloatArray:
        """``X.T @ R`` for a dense ``(n_rows, k)`` matrix; ``order`` = :meth:`column_order` (cache it)."""
        order = self.column_order() if order is None else order
        out = np.zeros((self.dim, r.shape[1]))
        if not self.indices.size:
            return out
        columns = self.indices[order]
        starts = np.concatenate([[0], np.flatnonzero(columns[1:] != columns[:-1]) + 1])
        contrib = self.data[order, None] * r[self.row_ids()[order]]
        out[columns[starts]] = np.add.reduceat(contrib, starts, axis=0)
        return out

    def compact(self) -> tuple[SparseRows, IntArray]:
        """The same rows over only the columns that occur, and those columns' original indices."""
        used, columns = np.unique(self.indices, return_inverse=True)
        return (
            SparseRows(indptr=self.indptr, indices=columns.astype(np.int64), data=self.data, dim=int(used.size)),
            used.astype(np.int64),
        )

    def select(self, columns: IntArray) -> SparseRows:
        """The same rows over only ``columns`` (original indices), numbered ``0..len(columns)-1`` in that order;
        entries in other columns are dropped."""
        lookup = np.full(self.dim, -1, dtype=np.int64)
        lookup[columns] = np.arange(columns.size, dtype=np.int64)
        index = lookup[self.indices]
        keep = index >= 0
        counts = np.bincount(self.row_ids()[keep], minlength=self.n_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return SparseRows(indptr=indptr, indices=index[keep], data=self.data[keep], dim=int(columns.size))

    def column_order(self) -> IntArray:
        return np.argsort(self.indices, kind="stable").astype(np.int64)

    def take(self, rows: Sequence[int] | IntArray) -> SparseRows:
        index = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[index], self.indptr[index + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        gather = np.repeat(starts - indptr[:-1], lengths) + np.arange(int(indptr[-1]), dtype=np.int64)
        return SparseRows(indptr=indptr, indices=self.indices[gather], data=self.data[gather], dim=self.dim)

    def hstack(self, other: SparseRows) -> SparseRows:
        """Columns of ``self`` then ``other`` (shifted by ``self.dim``); same rows."""
        if other.n_rows != self.n_rows:
            raise RouterError("bad_input", "hstack needs the same rows")
        rows = np.concatenate([self.row_ids(), other.row_ids()])
        order = np.argsort(rows, kind="stable")  # within a row: self's entries, then other's
        return SparseRows(
            indptr=self.indptr + other.indptr,
            indices=np.concatenate([self.indices, other.indices + self.dim])[order],
            data=np.concatenate([self.data, other.data])[order],
            dim=self.dim + other.dim,
        )


Objective = Callable[[FloatArray], tuple[float, FloatArray]]


def _dot(a: FloatArray, b: FloatArray) -> float:
    # Not ``a @ b``: OpenBLAS's threaded dot is ~100x slower than this on a loaded 2-core machine.
    return float(np.multiply(a, b).sum())


def lbfgs(
    fun: Objective, x0: FloatArray, *, max_iter: int = 200, memory: int = 10, tol: float = 1e-5
) -> FloatArray:
    """Minimise a smooth function with L-BFGS (two-loop recursion, backtracking Armijo line search).

    Stops after ``max_iter`` iterations, when the gradient's max-norm falls below ``tol * max(1, |f|)`` scale,
    or when an iteration improves ``f`` by less than ``1e-10`` relatively.
    """
    x = x0.copy()
    f, g = fun(x)
    s_list: list[FloatArray] = []
    y_list: list[FloatArray] = []
    for _ in range(max_iter):
        if float(np.max(np.abs(g))) <= tol * max(1.0, abs(f) / max(1, x.size) ** 0.5):
            break
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_list), reversed(y_list), strict=True):
            rho = 1.0 / _dot(y, s)
            alpha = rho * _dot(s, q)
            q -= alpha * y
            alphas.append((rho, alpha))
        if s_list:
            q *= _dot(s_list[-1], y_list[-1]) / _dot(y_list[-1], y_list[-1])
        else:
            q /= max(1.0, _dot(g, g) ** 0.5)
        for (s, y), (rho, alpha) in zip(zip(s_list, y_list, strict=True), reversed(alphas), strict=True):
            beta = rho * _dot(y, q)
            q += (alpha - beta) * s
        direction = -q
        slope = _dot(g, direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_list.clear()
            y_list.clear()
            direction = -g / max(1.0, _dot(g, g) ** 0.5)
            slope = _dot(g, direction)
        step = 1.0
        for _ in range(30):
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break
        s_vec, y_vec = x_new - x, g_new - g
        if _dot(s_vec, y_vec) > 1e-12:
            s_list.append(s_vec)
            y_list.append(y_vec)
            if len(s_list) > memory:
                s_list.pop(0)
                y_list.pop(0)
        improved = f - f_new
        x, f, g = x_new, f_new, g_new
        if improved <= 1e-10 * max(1.0, abs(f)):
            break
    return x


def fit_logistic(
    x: SparseRows,
    y: FloatArray,
    *,
    l2: float = 1.0,
    weights: FloatArray | None = None,
    offset: FloatArray | None = None,
    max_iter: int = 200,
) -> tuple[FloatArray, float]:
    """Weights and intercept minimising ``sum w_i * logloss(y_i, sigmoid(X w + b + offset)) + l2/2 |w|^2``.

    ``y`` may hold soft labels in [0, 1] (e.g. a judge score / 10). The intercept is not penalised.
    """
    n = x.n_rows
    target = np.asarray(y, dtype=np.float64)
    sw = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    off = np.zeros(n) if offset is None else np.asarray(offset, dtype=np.float64)
    rows = x.row_ids()
    values = x.data
    # optimise only over the columns that occur (a column never seen keeps weight 0 under the L2 penalty)
    used, columns = np.unique(x.indices, return_inverse=True)
    m = used.size

    def fun(theta: FloatArray) -> tuple[float, FloatArray]:
        w, b = theta[:-1], theta[-1]
        z = np.bincount(rows, weights=values * w[columns], minlength=n) + b + off
        loss = float(np.sum(sw * (np.logaddexp(0.0, z) - target * z))) + 0.5 * l2 * _dot(w, w)
        r = sw * (sigmoid(z) - target)
        grad_w = np.bincount(columns, weights=values * r[rows], minlength=m) + l2 * w
        return loss, np.append(grad_w, r.sum())

    theta = lbfgs(fun, np.zeros(m + 1), max_iter=max_iter)
    full = np.zeros(x.dim)
    full[used] = theta[:-1]
    return full, float(theta[-1])
