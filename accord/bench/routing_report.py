"""The numbers ``accord bench routing`` reports (also its ``--json`` output) and the tables that show them."""

from __future__ import annotations

import math
from collections import Counter

import msgspec
from rich.table import Table

from accord.bench.evaluation.crossfit import SuiteRun
from accord.bench.evaluation.render import format_quality
from accord.bench.live import LiveRun

__all__ = [
    "LiveSummary",
    "RoutingBenchResult",
    "RowSummary",
    "SetResult",
    "live_summary",
    "live_table",
    "phase_table",
    "row_summaries",
]


class LiveSummary(msgspec.Struct, kw_only=True):
    """One live routing pass against the offline curve point it reproduces."""

    policy: str
    target: float
    thresholds: list[float]
    """Per fold."""
    cascade: bool
    queries: int
    expected_strong_calls: int
    strong_calls: int
    expected_quality: float
    quality: float
    expected_paid_micros: float
    paid_micros: int
    failures: dict[str, int]
    score_mismatches: int
    tasks: int
    seconds: float
    matches: bool


class RowSummary(msgspec.Struct, kw_only=True):
    """One row of a set's report table (None where a number is undefined)."""

    name: str
    quality: float
    apgr: float | None
    cpt50: float | None
    cpt80: float | None
    aiq: float | None


class SetResult(msgspec.Struct, kw_only=True):
    """Everything one set produced."""

    name: str
    queries: int
    weak: str
    strong: str
    scale: float
    tasks: int
    """Tasks the mesh ran for this set (both tiers and the live passes)."""
    failures: dict[str, int]
    """Queries of the both-tiers pass that yielded no record, by reason (there should be none)."""
    text_mismatches: int
    """Answers whose text differs from what the attested model recorded (there should be none)."""
    quality_mismatches: int
    """Rows whose mesh-built quality differs from the set's own record (there should be none)."""
    max_cost_diff_micros: float
    rows: list[RowSummary]
    goal: str | None
    plot: str | None
    live: list[LiveSummary]
    phases: dict[str, float]
    """Seconds per phase (``cross-fit`` is the sum over router kinds, possibly run in worker processes)."""


class RoutingBenchResult(msgspec.Struct, kw_only=True):
    sets: list[SetResult] = msgspec.field(default_factory=list)
    seconds: float = 0.0
    mesh_seconds: float = 0.0
    """Wall time of the mesh phases (both tiers, live) of all sets."""
    tasks: int = 0

    @property
    def failures(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for s in self.sets:
            out.update(s.failures)
            for run in s.live:
                out.update(run.failures)
        return out


def _nan_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def row_summaries(run: SuiteRun) -> list[RowSummary]:
    return [
        RowSummary(
            name=r.name,
            quality=r.quality,
            apgr=_nan_none(r.apgr),
            cpt50=_nan_none(r.cpt50),
            cpt80=_nan_none(r.cpt80),
            aiq=_nan_none(r.aiq),
        )
        for r in run.everything
    ]


def live_summary(run: LiveRun) -> LiveSummary:
    p = run.point
    return LiveSummary(
        policy=p.router,
        target=p.target,
        thresholds=list(p.thresholds),
        cascade=p.cascade,
        queries=run.queries,
        expected_strong_calls=p.strong_calls,
        strong_calls=run.strong_calls,
        expected_quality=p.quality,
        quality=run.quality,
        expected_paid_micros=p.cost_micros,
        paid_micros=run.paid_micros,
        failures=dict(run.failures),
        score_mismatches=run.score_mismatches,
        tasks=run.tasks,
        seconds=run.seconds,
        matches=run.matches(),
    )


def live_table(name: str, scale: float, runs: list[LiveSummary]) -> Table:
    out = Table(
        title=f"{name}: live routing through the mesh, each query scored by its fold's router at request time",
        title_justify="left",
    )
    for column in (
        "policy",
        "thresholds (per fold)",
        "strong calls (curve -> live)",
        "quality (curve -> live)",
        "paid $ (curve -> live)",
        "failures",
        "tasks",
        "time",
        "tasks/s",
        "matches",
    ):
        out.add_column(column, justify="right")
    for run in runs:
        share = run.expected_strong_calls / run.queries if run.queries else math.nan
        live_share = run.strong_calls / run.queries if run.queries else math.nan
        out.add_row(
            f"{run.policy} @ CPT({run.target:.0%})",
            " ".join(f"{t:.4f}" for t in run.thresholds),
            f"{run.expected_strong_calls} ({share:.1%}) -> {run.strong_calls} ({live_share:.1%})",
            f"{format_quality(run.expected_quality, scale)} -> {format_quality(run.quality, scale)}",
            f"{run.expected_paid_micros / 1e6:.4f} -> {run.paid_micros / 1e6:.4f}",
            str(sum(run.failures.values())),
            str(run.tasks),
            f"{run.seconds:.1f}s",
            f"{run.tasks / run.seconds:.0f}" if run.seconds > 0 else "-",
            "[green]yes[/green]" if run.matches else "[red]NO[/red]",
        )
    return out


def phase_table(result: RoutingBenchResult) -> Table:
    out = Table(title="wall time per phase", title_justify="left")
    names: list[str] = []
    for s in result.sets:
        names.extend(n for n in s.phases if n not in names)
    out.add_column("set")
    for n in names:
        out.add_column(n, justify="right")
    out.add_column("mesh tasks", justify="right")
    out.add_column("failures", justify="right")
    for s in result.sets:
        fails = sum(s.failures.values()) + sum(sum(r.failures.values()) for r in s.live)
        out.add_row(
            s.name,
            *[f"{s.phases[n]:.1f}s" if n in s.phases else "-" for n in names],
            str(s.tasks),
            str(fails),
        )
    return out
