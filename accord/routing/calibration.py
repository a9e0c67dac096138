"""Calibration of predicted probabilities: Platt scaling per model, fitted on out-of-fold logits.

A model's raw logit ``z`` becomes ``sigmoid(a + b * z)``, with ``(a, b)`` minimising the logistic loss on logits
the model did not train on, plus ``prior / 2 * (a^2 + (b - 1)^2)`` so that a model with few outcomes stays near
the identity. Newton's method on two parameters; a few iterations suffice.
"""

from __future__ import annotations

import numpy as np

from accord.routing.base import FloatArray
from accord.routing.sparse import sigmoid

__all__ = ["platt", "reliability"]


def platt(z: FloatArray, y: FloatArray, *, prior: float = 1.0, iterations: int = 50) -> tuple[float, float]:
    """``(a, b)`` such that ``sigmoid(a + b * z)`` is calibrated on ``(z, y)`` (``y`` in 0..1)."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    theta = np.array([0.0, 1.0])
    if z.size == 0:
        return 0.0, 1.0
    anchor = np.array([0.0, 1.0])
    for _ in range(iterations):
        p = sigmoid(theta[0] + theta[1] * z)
        r, w = p - y, p * (1 - p)
        grad = np.array([r.sum(), (r * z).sum()]) + prior * (theta - anchor)
        hess = np.array([[w.sum(), (w * z).sum()], [(w * z).sum(), (w * z * z).sum()]]) + prior * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if float(np.max(np.abs(step))) < 1e-9:
            break
    return float(theta[0]), float(theta[1])


def reliability(p: FloatArray, y: FloatArray, *, bins: int = 10) -> tuple[float, list[tuple[float, float, int]]]:
    """Expected calibration error and the reliability diagram: (mean predicted, mean observed, count) per
    equal-width bin of the prediction."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    edges = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    rows: list[tuple[float, float, int]] = []
    error = 0.0
    for b in range(bins):
        sel = edges == b
        count = int(sel.sum())
        if count:
            predicted, observed = float(p[sel].mean()), float(y[sel].mean())
            rows.append((predicted, observed, count))
            error += count * abs(predicted - observed)
    return (error / p.size if p.size else 0.0), rows
