"""Showing one set's cross-fitted suite as the routing benchmarks do: the report table, how far each router gets
from random to oracle, the issue's goal line, and the PNG of the curves.

Shared by the offline benchmark (``python -m tests.bench.routing_offline``) and ``accord bench routing`` (the
same evaluation on outcomes that came back through a live mesh).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from rich.console import Console

from accord.bench.evaluation.crossfit import SuiteRun
from accord.bench.evaluation.evaluate import Report
from accord.bench.evaluation.render import plot_reports, report_table

__all__ = ["GOALS", "best_router", "goal_line", "show_suite"]

GOALS: Final[dict[str, tuple[str, str]]] = {
    "mmlu": ("best non-cascade router: APGR >= 0.70 and CPT(50%) <= 25%", "apgr_cpt50"),
    "gsm8k": ("cascade: PGR 80% with <= 40% strong calls", "cascade_cpt80"),
}
"""The issue's goals per set (cross-fitted, in-distribution): text and kind of check."""

_BASELINES: Final = frozenset({"random", "random (seeded)", "oracle", "no-info"})


def best_router(reports: Sequence[Report], *, cascade: bool = False) -> Report | None:
    """The router (not a baseline or single model) with the highest APGR; cascades only if ``cascade``."""
    routers = [
        r for r in reports if r.curve is not None and r.name not in _BASELINES and (cascade or r.name != "cascade")
    ]
    return max(routers, key=lambda r: r.apgr) if routers else None


def goal_line(name: str, reports: Sequence[Report]) -> str | None:
    """The goal of set ``name`` and whether the reports meet it (None for sets without a goal)."""
    if name not in GOALS:
        return None
    text, kind = GOALS[name]
    if kind == "apgr_cpt50":
        best = best_router(reports)
        if best is None:
            return f"goal ({text}): no router run"
        met = best.apgr >= 0.70 and best.cpt50 <= 0.25
        verdict = "MET" if met else "NOT MET"
        return f"goal ({text}): {best.name} APGR {best.apgr:.3f}, CPT(50%) {best.cpt50:.1%} -> {verdict}"
    cascades = [r for r in reports if r.name == "cascade"]
    if not cascades:
        return f"goal ({text}): no cascade run"
    cpt80 = cascades[0].cpt80
    met = not math.isnan(cpt80) and cpt80 <= 0.40
    return f"goal ({text}): cascade CPT(80%) {cpt80:.1%} -> {'MET' if met else 'NOT MET'}"


def show_suite(
    console: Console,
    name: str,
    run: SuiteRun,
    *,
    title: str,
    plot_dir: Path | None = None,
    plot_title: str | None = None,
) -> Path | None:
    """Print the suite of set ``name``; write ``plot_dir/routing_<name>.png`` when ``plot_dir`` is given and
    return its path."""
    table = run.table
    console.print(report_table(run.everything, title=title, scale=table.scale, seconds=run.seconds))
    random_report, oracle_report = run.report("random"), run.report("oracle")
    if random_report is not None and oracle_report is not None:
        low, high = random_report.apgr, oracle_report.apgr
        for report in run.reports:
            share = (report.apgr - low) / (high - low) if high != low else math.nan
            console.print(
                f"  vs oracle: {report.name:<9} APGR {report.apgr:.3f} = {share:.1%} of the way from random "
                f"({low:.3f}) to oracle ({high:.3f})"
            )
    goal = goal_line(name, run.reports)
    if goal:
        console.print("  " + goal)
    if plot_dir is None:
        return None
    plot_dir.mkdir(parents=True, exist_ok=True)
    path = plot_reports(
        [r for r in run.everything if r.name != "random (seeded)"],
        plot_dir / f"routing_{name}.png",
        title=plot_title or f"{name}: cross-fitted routers (in-distribution)",
        weak=float(table.q_weak.mean()),
        strong=float(table.q_strong.mean()),
        scale=table.scale,
    )
    console.print(f"  plot: {path}")
    return path
