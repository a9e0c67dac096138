"""Showing evaluation reports: rich tables, a PNG of quality against the share of strong calls (pair routers),
and a PNG of accuracy against cost (routers over N models).

The plot needs matplotlib (the optional ``plot`` extra); it is imported only when a plot is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from accord.bench.evaluation.evaluate import Report
from accord.bench.evaluation.models import ModelsReport, hull_at
from accord.routing.base import RouterError

__all__ = [
    "format_quality",
    "models_summary",
    "models_tables",
    "plot_models_report",
    "plot_reports",
    "report_table",
]


def format_quality(value: float, scale: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value * 100:.2f}%" if scale == 1.0 else f"{value:.3f}"


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 100:.1f}%"


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def report_table(
    reports: Sequence[Report], *, title: str, scale: float, seconds: dict[str, float] | None = None
) -> Table:
    """One row per report: quality (a model's own; a router's best along its curve), APGR (exact grid and
    RouteLLM's 10-bin grid), CPT(50%), CPT(80%), AIQ, and optionally the wall time."""
    table = Table(title=title, title_justify="left")
    table.add_column("router")
    table.add_column("quality (peak)", justify="right")
    table.add_column("APGR", justify="right")
    table.add_column("APGR 10-bin", justify="right")
    table.add_column("CPT(50%)", justify="right")
    table.add_column("CPT(80%)", justify="right")
    table.add_column("AIQ", justify="right")
    if seconds is not None:
        table.add_column("time", justify="right")
    table.add_column("note")
    for report in reports:
        row = [
            report.name,
            format_quality(report.quality, scale),
            _number(report.apgr),
            _number(report.apgr_routellm),
            _share(report.cpt50),
            _share(report.cpt80),
            format_quality(report.aiq, scale),
        ]
        if seconds is not None:
            spent = seconds.get(report.name)
            row.append("-" if spent is None else f"{spent:.1f}s")
        row.append(report.note)
        table.add_row(*row)
    return table


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RouterError("missing_extra", "plotting needs matplotlib: pip install 'accord[plot]'") from exc
    return plt


def plot_reports(
    reports: Sequence[Report], path: str | Path, *, title: str, weak: float, strong: float, scale: float
) -> Path:
    """Write a PNG: quality against the share of strong calls for every report with a curve, plus the weak and
    strong models as horizontal lines (random and oracle are drawn like routers when in ``reports``)."""
    plt = _pyplot()
    factor = 100.0 if scale == 1.0 else 1.0
    figure, axes = plt.subplots(figsize=(9, 6), dpi=110)
    for report in reports:
        if report.curve is None:
            continue
        style = {"random": ":", "oracle": "--"}.get(report.name, "-")
        axes.plot(
            report.curve.share * 100,
            report.curve.quality * factor,
            linestyle=style,
            linewidth=1.8 if style == "-" else 1.4,
            label=f"{report.name} (APGR {report.apgr:.3f})",
        )
    axes.axhline(weak * factor, color="grey", linestyle="-.", linewidth=1, label=f"weak {weak * factor:.2f}")
    axes.axhline(
        strong * factor, color="black", linestyle="-.", linewidth=1, label=f"strong {strong * factor:.2f}"
    )
    axes.set_xlabel("strong-model calls (%)")
    axes.set_ylabel("accuracy (%)" if scale == 1.0 else "score")
    axes.set_xlim(0, 100)
    return _save(plt, figure, axes, title, path)


def _save(plt: Any, figure: Any, axes: Any, title: str, path: str | Path) -> Path:
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out)
    plt.close(figure)
    return out


def models_tables(report: ModelsReport, *, points: int = 12) -> list[Table]:
    """The single models (with the hull's vertices marked) and the router's curve at about ``points`` lambdas,
    next to the single-model hull and the oracle at the same cost."""
    on_hull = {h.model for h in report.hull if h.model is not None}
    singles = Table(title=f"single models on {report.queries} queries", title_justify="left")
    for column in ("model", "accuracy", "cost/query (micro-USD)", "on the hull"):
        singles.add_column(column, justify="left" if column == "model" else "right")
    for row in sorted(report.models, key=lambda r: r.cost_per_query_micros):
        singles.add_row(
            row.model,
            f"{row.accuracy:.2%}",
            f"{row.cost_per_query_micros:,.1f}",
            "yes" if row.model in on_hull else "",
        )
    curve = Table(title=f"{report.router}: accuracy against cost as lambda falls", title_justify="left")
    for column in ("lambda (per USD)", "accuracy", "cost/query", "hull at that cost", "router - hull", "models"):
        curve.add_column(column, justify="right")
    hull_x = np.asarray([h.cost_per_query_micros for h in report.hull])
    hull_y = np.asarray([h.accuracy for h in report.hull])
    step = max(1, len(report.curve) // points)
    shown = report.curve[::step] + ([report.curve[-1]] if (len(report.curve) - 1) % step else [])
    for p in shown:
        at = hull_at(hull_x, hull_y, p.cost_per_query_micros)
        curve.add_row(
            f"{p.lambda_:,.4g}",
            f"{p.accuracy:.2%}",
            f"{p.cost_per_query_micros:,.1f}",
            "-" if math.isnan(at) else f"{at:.2%}",
            "-" if math.isnan(at) else f"{(p.accuracy - at) * 100:+.2f} pts",
            str(len(p.picks)),
        )
    return [singles, curve]


def models_summary(report: ModelsReport) -> list[str]:
    """The headline numbers of an N-model report, one line each."""
    best = report.best_single
    reach = report.cost_at_best_single_accuracy
    lines = [
        f"best single model: {best.model}, accuracy {best.accuracy:.2%} at {best.cost_per_query_micros:,.1f} "
        "micro-USD per query",
        f"router at that cost: accuracy {report.accuracy_at_best_single_cost:.2%} "
        f"({(report.accuracy_at_best_single_cost - best.accuracy) * 100:+.2f} points)",
        "router reaches that accuracy at "
        + (
            "no cost on its curve"
            if reach is None
            else f"{reach:,.1f} micro-USD per query ({reach / best.cost_per_query_micros:.1%} of its cost)"
        ),
        f"against the single-model hull: least gap {report.min_gap_to_hull * 100:+.2f} points (at "
        f"{report.min_gap_at_cost_micros:,.1f}), largest gain {report.max_gain_over_hull * 100:+.2f} points (at "
        f"{report.max_gain_at_cost_micros:,.1f})",
        f"oracle: accuracy {report.oracle.accuracy:.2%} at {report.oracle.cost_per_query_micros:,.1f} per query",
    ]
    return lines


def plot_models_report(report: ModelsReport, path: str | Path, *, title: str) -> Path:
    """Write a PNG: accuracy against cost per query (log scale) for the single models, their hull, the router's
    curve and hull, the oracle's curve, and a reference curve when the report has one."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 6), dpi=110)
    xs = [m.cost_per_query_micros for m in report.models]
    axes.scatter(xs, [m.accuracy * 100 for m in report.models], color="black", zorder=3, label="single models")
    for m in report.models:
        axes.annotate(m.model, (m.cost_per_query_micros, m.accuracy * 100), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")  # fmt: skip
    hull_x = np.asarray([h.cost_per_query_micros for h in report.hull])
    dense = np.geomspace(max(float(hull_x[0]), 1e-9), max(float(hull_x[-1]), 1e-9), 200)
    hull_y = np.interp(dense, hull_x, [h.accuracy * 100 for h in report.hull])
    axes.plot(dense, hull_y, "k--", linewidth=1.2, label="single-model hull")  # straight in cost, not log cost
    curve = sorted(report.curve, key=lambda p: p.cost_per_query_micros)
    axes.plot([p.cost_per_query_micros for p in curve], [p.accuracy * 100 for p in curve], "-", linewidth=1.6,
              label=f"{report.router} (lambda sweep)")  # fmt: skip
    oracle = sorted(report.oracle.curve, key=lambda p: p.cost_per_query_micros)
    axes.plot([p.cost_per_query_micros for p in oracle], [p.accuracy * 100 for p in oracle], ":", linewidth=1.2,
              label="oracle")  # fmt: skip
    if report.reference:
        ref = sorted(report.reference, key=lambda p: p.cost_per_query_micros)
        axes.plot([p.cost_per_query_micros for p in ref], [p.accuracy * 100 for p in ref], "-.", linewidth=1.2,
                  label="reference")  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("cost per query (micro-USD, log scale)")
    axes.set_ylabel("accuracy (%)")
    return _save(plt, figure, axes, title, path)
