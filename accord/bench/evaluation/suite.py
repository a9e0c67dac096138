"""Cross-fitted evaluation of several router kinds on one table (what ``accord router crossfit`` and the
offline routing benchmark print)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from accord.bench.evaluation.evaluate import Report, crossfit_scores, evaluate_scores
from accord.routing.common import PairRouter
from accord.routing.files import make_router
from accord.routing.table import PairTable

__all__ = ["crossfit_suite"]


def _default(kind: str) -> Callable[[], PairRouter]:
    make_router(kind)  # fail early on an unknown kind
    return lambda: make_router(kind)


def crossfit_suite(
    table: PairTable,
    kinds: Sequence[str],
    *,
    k: int = 5,
    seed: int = 0,
    factories: dict[str, Callable[[], PairRouter]] | None = None,
) -> tuple[list[Report], dict[str, float]]:
    """A cross-fitted report per router kind, and the wall time each took (fit + score over all folds).

    ``factories`` may override how a kind's router is built (its settings); a kind named there need not be a
    registered kind. Cascades are skipped (with no report) on tables without the weak model's answers.
    """
    reports: list[Report] = []
    seconds: dict[str, float] = {}
    has_answers = all(q.answer is not None for q in table.queries)
    for kind in kinds:
        factory = (factories or {}).get(kind) or _default(kind)
        if factory().kind == "cascade" and not has_answers:
            continue
        started = time.perf_counter()
        scores = crossfit_scores(factory, table, k=k, seed=seed)
        seconds[kind] = time.perf_counter() - started
        reports.append(
            evaluate_scores(
                table,
                scores,
                kind,
                cascade=factory().kind == "cascade",
                note=f"cross-fitted, {k} folds (in-distribution)",
            )
        )
    return reports, seconds
