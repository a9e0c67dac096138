"""Router metrics as RouteLLM (Ong et al., 2024) and RouterBench (Hu et al., 2024) define them.

A router gives each query a score; sending every query whose score is at or above a threshold to the strong
model, and the rest to the weak one, gives one operating point: the share ``x`` of strong calls and the mean
quality. Sweeping the threshold traces the *routing curve*.

- ``PGR(x) = (quality(x) - weak) / (strong - weak)``, the performance gap recovered.
- ``APGR`` = the area under PGR(x) over x in [0, 1], by trapezoids. Random routing gives 0.5.
- ``CPT(p)`` = the smallest share of strong calls at which PGR reaches ``p`` (linear interpolation between the
  two curve points where PGR first crosses ``p``; NaN when it never does).
- The cost-quality *non-decreasing convex hull* of the operating points (cost per query on x): the upper
  concave envelope (mixing two operating points at random reaches any point on the segment between them), cut
  where quality peaks and extended flat from there (spending more need never lose quality).
- ``AIQ`` = the area under that hull over the cost range ``[c_min, c_max]`` divided by its width (RouterBench's
  "average improvement in quality", in quality units). The range is all-weak to all-strong, the same for every
  router of the pair, so AIQs compare. Where the log has no costs the strong-call share is the cost axis.

Discretisation (two grids, both trapezoids):

- ``grid="exact"`` (the default): one point at every distinct score, i.e. at every threshold that changes a
  decision. Between two points the curve is linear, which is exactly the expected quality when ties are broken
  at random; a constant score gives the straight weak-to-strong line (APGR 0.5).
- ``grid="routellm"``: RouteLLM's own evaluation (``routellm/evals/benchmarks.py`` and ``evaluate.py``):
  thresholds are the ``bins + 1`` quantile edges of the scores (``pd.qcut(scores, 10)``, linear quantiles),
  each routes ``score >= t`` to the strong model except the last edge, which routes ``score > t`` (none).
  Eleven points for the default ten bins; use it to compare with numbers RouteLLM publishes. RouteLLM reads
  CPT with ``np.interp`` over the accuracy column, which assumes a rising curve; :func:`cpt` takes the first
  crossing instead, which is the same number on a rising curve and well defined on any other.

The oracle (RouteLLM's ``get_optimal_accuracy``) spends at most ``k`` strong calls on the queries where the strong
model gains most, and none where it gains nothing: a non-decreasing curve that can end above the strong model.
The random router's expected curve is the straight line from all-weak to all-strong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from accord.routing.base import FloatArray, RouterError

__all__ = [
    "Curve",
    "Grid",
    "aiq",
    "apgr",
    "cpt",
    "nondecreasing_hull",
    "oracle_curve",
    "pgr",
    "random_curve",
    "routing_curve",
]

Grid = Literal["exact", "routellm"]


@dataclass(frozen=True)
class Curve:
    """Operating points, ascending in ``share``: strong-call share, mean quality and mean cost per query."""

    share: FloatArray
    quality: FloatArray
    cost: FloatArray


def _arrays(*arrays: FloatArray | None, n: int) -> list[FloatArray]:
    out = []
    for array in arrays:
        value = np.zeros(n) if array is None else np.asarray(array, dtype=np.float64)
        if value.shape != (n,):
            raise RouterError("bad_input", f"expected {n} values, got shape {value.shape}")
        if not np.all(np.isfinite(value)):
            raise RouterError("bad_input", "values must be finite")
        out.append(value)
    return out


def routing_curve(
    scores: FloatArray,
    q_weak: FloatArray,
    q_strong: FloatArray,
    c_weak: FloatArray | None = None,
    c_strong: FloatArray | None = None,
    *,
    grid: Grid = "exact",
    bins: int = 10,
) -> Curve:
    """The curve of a router's scores: route ``score >= threshold`` to the strong model, sweep the threshold."""
    n = len(q_weak)
    if n == 0:
        raise RouterError("bad_input", "empty table")
    s, qw, qs, cw, cs = _arrays(scores, q_weak, q_strong, c_weak, c_strong, n=n)
    if grid == "routellm":
        return _routellm_curve(s, qw, qs, cw, cs, bins)
    order = np.argsort(-s, kind="stable")
    ranked = s[order]
    gain = np.concatenate([[0.0], np.cumsum((qs - qw)[order])])
    extra = np.concatenate([[0.0], np.cumsum((cs - cw)[order])])
    cuts = np.concatenate([[0], np.flatnonzero(ranked[1:] != ranked[:-1]) + 1, [n]])
    return Curve(
        share=cuts / n,
        quality=qw.mean() + gain[cuts] / n,
        cost=cw.mean() + extra[cuts] / n,
    )


def _routellm_curve(
    s: FloatArray, qw: FloatArray, qs: FloatArray, cw: FloatArray, cs: FloatArray, bins: int
) -> Curve:
    if bins < 1:
        raise RouterError("bad_input", "bins must be >= 1")
    edges = np.quantile(s, np.linspace(0.0, 1.0, bins + 1))
    points = []
    for i, threshold in enumerate(edges):
        chosen = s >= threshold if i != len(edges) - 1 else s > threshold
        points.append(
            (chosen.mean(), np.where(chosen, qs, qw).mean(), np.where(chosen, cs, cw).mean()),
        )
    points.sort(key=lambda p: p[0])
    array = np.asarray(points, dtype=np.float64)
    return Curve(share=array[:, 0], quality=array[:, 1], cost=array[:, 2])


def oracle_curve(
    q_weak: FloatArray,
    q_strong: FloatArray,
    c_weak: FloatArray | None = None,
    c_strong: FloatArray | None = None,
) -> Curve:
    """The best quality reachable with at most ``k`` strong calls, for every ``k`` in 0..n."""
    n = len(q_weak)
    if n == 0:
        raise RouterError("bad_input", "empty table")
    qw, qs, cw, cs = _arrays(q_weak, q_strong, c_weak, c_strong, n=n)
    delta = qs - qw
    order = np.argsort(-delta, kind="stable")
    useful = np.maximum(delta[order], 0.0)
    spent = np.where(delta[order] > 0, (cs - cw)[order], 0.0)
    return Curve(
        share=np.arange(n + 1) / n,
        quality=qw.mean() + np.concatenate([[0.0], np.cumsum(useful)]) / n,
        cost=cw.mean() + np.concatenate([[0.0], np.cumsum(spent)]) / n,
    )


def random_curve(
    q_weak: FloatArray,
    q_strong: FloatArray,
    c_weak: FloatArray | None = None,
    c_strong: FloatArray | None = None,
) -> Curve:
    """The expected curve of random routing: the straight line from all-weak to all-strong."""
    n = len(q_weak)
    qw, qs, cw, cs = _arrays(q_weak, q_strong, c_weak, c_strong, n=n)
    return Curve(
        share=np.array([0.0, 1.0]),
        quality=np.array([qw.mean(), qs.mean()]),
        cost=np.array([cw.mean(), cs.mean()]),
    )


def pgr(quality: FloatArray, weak: float, strong: float) -> FloatArray:
    """Performance gap recovered at each point."""
    if strong == weak:
        raise RouterError("bad_input", "PGR is undefined when the weak and strong models score the same")
    return (np.asarray(quality, dtype=np.float64) - weak) / (strong - weak)


def apgr(curve: Curve, weak: float, strong: float) -> float:
    """Area under PGR over the curve's share range (normally [0, 1]), divided by that range."""
    width = float(curve.share[-1] - curve.share[0])
    if width <= 0:
        raise RouterError("bad_input", "the curve spans no share range")
    return float(np.trapezoid(pgr(curve.quality, weak, strong), curve.share)) / width


def cpt(curve: Curve, target: float, weak: float, strong: float) -> float:
    """Smallest strong-call share at which PGR reaches ``target`` (e.g. 0.5 for CPT(50%)); NaN if never."""
    p = pgr(curve.quality, weak, strong)
    hits = np.flatnonzero(p >= target)
    if hits.size == 0:
        return float("nan")
    i = int(hits[0])
    if i == 0:
        return float(curve.share[0])
    x0, x1, p0, p1 = curve.share[i - 1], curve.share[i], p[i - 1], p[i]
    return float(x0 + (target - p0) / (p1 - p0) * (x1 - x0))


def nondecreasing_hull(cost: FloatArray, quality: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The non-decreasing upper convex hull of operating points, as (cost, quality) vertices ascending in cost."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if c.size == 0 or c.shape != q.shape:
        raise RouterError("bad_input", "need as many costs as qualities, at least one")
    order = np.lexsort((-q, c))
    hull: list[tuple[float, float]] = []
    for x, y in zip(c[order].tolist(), q[order].tolist(), strict=True):
        if hull and hull[-1][0] == x:
            continue  # same cost, lower quality (sorted by quality descending within a cost)
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle vertex when it lies on or below the segment from its neighbour to the new point
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append((x, y))
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    kept = np.asarray(hull[: top + 1], dtype=np.float64)
    return kept[:, 0], kept[:, 1]


def aiq(curve: Curve, c_min: float, c_max: float) -> float:
    """Area under the non-decreasing hull of ``curve`` over ``[c_min, c_max]`` divided by ``c_max - c_min``.

    The hull is extended flat from its last vertex to ``c_max``; below its first vertex nothing is counted
    (RouterBench does the same). Uses the strong-call share as the cost axis when ``c_max <= c_min``
    (no costs logged): then ``[0, 1]``.
    """
    if c_max <= c_min:
        xs, ys = nondecreasing_hull(curve.share, curve.quality)
        c_min, c_max = 0.0, 1.0
    else:
        xs, ys = nondecreasing_hull(curve.cost, curve.quality)
    if xs[-1] < c_max:
        xs, ys = np.append(xs, c_max), np.append(ys, ys[-1])
    grid = np.unique(np.clip(np.concatenate([xs, [c_min, c_max]]), c_min, c_max))
    grid = grid[grid >= xs[0]]
    values = np.interp(grid, xs, ys)
    return float(np.trapezoid(values, grid)) / (c_max - c_min)
