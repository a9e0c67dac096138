"""Showing evaluation reports: a rich table, and a PNG of quality against the share of strong calls.

The plot needs matplotlib (the optional ``plot`` extra); it is imported only when a plot is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from accord.bench.evaluation.evaluate import Report
from accord.routing.base import RouterError

__all__ = ["format_quality", "plot_reports", "report_table"]


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


def plot_reports(
    reports: Sequence[Report], path: str | Path, *, title: str, weak: float, strong: float, scale: float
) -> Path:
    """Write a PNG: quality against the share of strong calls for every report with a curve, plus the weak and
    strong models as horizontal lines (random and oracle are drawn like routers when in ``reports``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RouterError("missing_extra", "plotting needs matplotlib: pip install 'accord[plot]'") from exc

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
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out)
    plt.close(figure)
    return out
