"""Cross-fitted evaluation of several router kinds on one table (what ``accord router crossfit`` and the
offline routing benchmark print): :func:`crossfit_suite`, the reports of
:func:`~accord.bench.evaluation.crossfit.run_suite` without the fold routers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from accord.bench.evaluation.crossfit import run_suite
from accord.bench.evaluation.evaluate import Report
from accord.routing.common import PairRouter
from accord.routing.table import PairTable

__all__ = ["crossfit_suite"]


def crossfit_suite(
    table: PairTable,
    kinds: Sequence[str],
    *,
    k: int = 5,
    seed: int = 0,
    factories: dict[str, Callable[[], PairRouter]] | None = None,
) -> tuple[list[Report], dict[str, float]]:
    """A cross-fitted report per router kind (metrics per fold, averaged), and the wall time each took (fit +
    score over all folds).

    ``factories`` may override how a kind's router is built (its settings); a kind named there need not be a
    registered kind. Cascades are skipped (with no report) on tables without the weak model's answers.
    """
    run = run_suite(table, kinds, k=k, seed=seed, factories=factories)
    return run.reports, run.seconds
