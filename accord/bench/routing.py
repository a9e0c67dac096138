"""``accord bench routing``: the routers' evaluation on outcomes that came back through a live mesh, then the
routers deciding per query over that mesh.

One :func:`~accord.bench.replay_mesh.replay_mesh` serves every set: a device tier replaying the weak model
(Mixtral-8x7B) and a cloud tier replaying the strong one (GPT-4), priced with the sets' price sheets. Per set
(RouteLLM's MMLU, GSM8K, MT-Bench, or a generated log):

1. **both tiers**: every query through the market to each tier (:func:`~accord.bench.live.collect`);
   outcome records built from the verified results; failures counted (there should be none); the records
   checked against the set's own (same quality on every row, cost within rounding).
2. **cross-fit**: a :class:`~accord.routing.table.PairTable` of those records and the cross-fitted router
   suite, shown as the offline benchmark shows it, with the plot. Fitting runs in worker processes
   (``workers``), one job per router kind, while the mesh goes on with the next set.
3. **live**: the best cross-fitted router at its CPT(50%) point (and, where a cascade was fitted, the cascade at
   CPT(80%)) routes every query once more through the mesh; achieved quality, strong share and price paid are
   compared with the offline curve's point.

Wall time is reported per phase, and tasks per second over the mesh phases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import anyio.to_process
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from accord.backends.replay import OutcomeLog
from accord.bench.data.workload import Workload, routellm_workload, synthetic_workload
from accord.bench.evaluation.crossfit import CrossFit, SuiteRun, crossfit_kind, suite_from_fits
from accord.bench.evaluation.suite_view import best_router, goal_line, show_suite
from accord.bench.live import (
    Collection,
    LiveRun,
    OperatingPoint,
    cascade_live,
    collect,
    operating_point,
    route_live,
)
from accord.bench.replay_mesh import ReplayMesh, TierAgents, replay_mesh
from accord.bench.routing_report import (
    RoutingBenchResult,
    SetResult,
    live_summary,
    live_table,
    phase_table,
    row_summaries,
)
from accord.protocol.messages import Tier
from accord.routing.base import RouterError
from accord.routing.files import DEFAULT_KINDS
from accord.routing.table import PairTable

__all__ = ["RoutingBench", "bench_tiers", "compare_tables", "live_points", "run_routing_bench"]

WEAK_TIER: Final = Tier.DEVICE
STRONG_TIER: Final = Tier.CLOUD
_FIT_ORDER: Final = ("mf", "logistic", "bandit", "cascade", "subject")
"""Longest fits first, so the worker processes stay busy."""


@dataclass(frozen=True)
class RoutingBench:
    """What to run. ``synthetic`` > 0 runs one generated set of that many queries instead of ``sets``."""

    sets: Sequence[str] = ("mmlu", "gsm8k", "mt_bench")
    datasets_dir: Path | None = None
    synthetic: int = 0
    limit: int | None = None
    folds: int = 5
    seed: int = 0
    kinds: Sequence[str] = DEFAULT_KINDS
    plot_dir: Path | None = None
    concurrency: int = 64
    replicas: int = 1
    """Agents per tier."""
    workers: int = 2
    """Worker processes for cross-fitting (0: fit in this process, between the mesh phases)."""
    progress: bool = True


@dataclass
class _Set:
    """One set on its way through the phases."""

    workload: Workload
    phases: dict[str, float] = field(default_factory=dict)
    collection: Collection | None = None
    table: PairTable | None = None
    fits: dict[str, CrossFit] = field(default_factory=dict)
    fitted: anyio.Event = field(default_factory=anyio.Event)
    pending: int = 0


class _Bar:
    """A transient progress bar per phase (or nothing)."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self._console = console
        self._enabled = enabled

    def track(self, description: str, total: int) -> tuple[Callable[[], None], Callable[[], None]]:
        if not self._enabled:
            return (lambda: None), (lambda: None)
        progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        progress.start()
        task = progress.add_task(description, total=total)
        return (lambda: progress.advance(task)), progress.stop


def bench_tiers(workload: Workload, replicas: int) -> list[TierAgents]:
    """The device tier replays the weak model, the cloud tier the strong one (simulated speeds: a device at 40
    tokens/s, a cloud API at 80; neither waits in real time)."""
    weak_in, weak_out = workload.prices[workload.weak]
    strong_in, strong_out = workload.prices[workload.strong]
    return [
        TierAgents(WEAK_TIER, workload.weak, weak_in, weak_out, replicas=replicas, tokens_per_s=40.0, ttft_ms=150),
        TierAgents(
            STRONG_TIER, workload.strong, strong_in, strong_out, replicas=replicas, tokens_per_s=80.0, ttft_ms=400
        ),
    ]


def compare_tables(table: PairTable, reference: PairTable) -> tuple[int, float]:
    """(rows whose quality differs or that are missing, largest cost difference in micro-USD) of a table built
    from mesh outcomes against the one built from the set's own records."""
    index = {q: i for i, q in enumerate(reference.query_ids)}
    mine = [i for i, q in enumerate(table.query_ids) if q in index]
    theirs = [index[table.query_ids[i]] for i in mine]
    missing = len(reference) - len(mine)
    differs = (table.q_weak[mine] != reference.q_weak[theirs]) | (
        table.q_strong[mine] != reference.q_strong[theirs]
    )
    costs = [
        abs(table.c_weak[mine] - reference.c_weak[theirs]),
        abs(table.c_strong[mine] - reference.c_strong[theirs]),
    ]
    worst = max((float(c.max()) for c in costs if c.size), default=0.0)
    return missing + int(differs.sum()), worst


def live_points(run: SuiteRun) -> list[tuple[str, OperatingPoint | None]]:
    """The live policies: the best non-cascade router at CPT(50%); the cascade at CPT(80%) where one was fitted
    (each reached fold by fold, see :func:`~accord.bench.live.operating_point`). None where a fold's curve never
    reaches its target."""
    table = run.table
    points: list[tuple[str, OperatingPoint | None]] = []
    best = best_router(run.reports)
    if best is not None:
        fit = run.fits[best.name]
        point = operating_point(table, fit.scores, router=best.name, target=0.5, folds=fit.folds)
        points.append((best.name, point))
    if "cascade" in run.fits:
        fit = run.fits["cascade"]
        point = operating_point(table, fit.scores, router="cascade", target=0.8, cascade=True, folds=fit.folds)
        points.append(("cascade", point))
    return points


def _load(bench: RoutingBench, name: str) -> Workload:
    if bench.synthetic:
        return synthetic_workload(bench.synthetic, seed=bench.seed).limit(bench.limit)
    return routellm_workload(name, bench.datasets_dir).limit(bench.limit)


def _merged_log(workloads: Sequence[Workload]) -> OutcomeLog:
    first = workloads[0]
    for w in workloads[1:]:
        if (w.weak, w.strong) != (first.weak, first.strong) or w.prices != first.prices:
            raise RouterError("bad_input", f"set {w.name} has another model pair or price sheet than {first.name}")
    if len(workloads) == 1:
        return first.log
    merged = OutcomeLog()
    for w in workloads:
        for record in w.log:
            merged.add(record)
    return merged


def _fit_job(table: PairTable, kind: str, k: int, seed: int) -> CrossFit | None:
    """One cross-fitting job (runs in a worker process)."""
    return crossfit_kind(table, kind, k=k, seed=seed)


async def _fit(state: _Set, kind: str, bench: RoutingBench, limiter: anyio.CapacityLimiter | None) -> None:
    assert state.table is not None
    if limiter is None:
        fit = _fit_job(state.table, kind, bench.folds, bench.seed)
    else:
        fit = await anyio.to_process.run_sync(
            _fit_job, state.table, kind, bench.folds, bench.seed, cancellable=True, limiter=limiter
        )
    if fit is not None:
        state.fits[kind] = fit
        state.phases["cross-fit"] = state.phases.get("cross-fit", 0.0) + fit.seconds
    state.pending -= 1
    if state.pending == 0:
        state.fitted.set()


async def _both_tiers(mesh: ReplayMesh, state: _Set, bench: RoutingBench, console: Console, bar: _Bar) -> None:
    workload = state.workload
    began = time.perf_counter()
    advance, stop = bar.track(f"{workload.name}: both tiers", len(workload) * 2)
    try:
        collection = await collect(
            mesh,
            workload,
            {WEAK_TIER: workload.weak, STRONG_TIER: workload.strong},
            concurrency=bench.concurrency,
            on_done=advance,
        )
    finally:
        stop()
    state.phases["mesh: both tiers"] = time.perf_counter() - began
    state.collection = collection
    failures = sum(collection.failures.values())
    rate = collection.tasks / collection.seconds if collection.seconds > 0 else 0.0
    detail = f" ({', '.join(f'{k} x{v}' for k, v in collection.failures.most_common())})" if failures else ""
    style = "red" if failures or collection.text_mismatches else "green"
    console.print(
        f"{workload.name}: {len(workload)} queries x 2 tiers through the market: {collection.tasks} tasks in "
        f"{collection.seconds:.1f}s ({rate:.0f} tasks/s); [{style}]failures {failures}{detail}; answers "
        f"differing from the recorded text {collection.text_mismatches}[/{style}]"
    )
    state.table = collection.table(workload.weak, workload.strong)


async def _finish(mesh: ReplayMesh, state: _Set, bench: RoutingBench, console: Console, bar: _Bar) -> SetResult:
    """Show the set's suite (once its fits are in) and run its live passes."""
    workload, table, collection = state.workload, state.table, state.collection
    assert table is not None and collection is not None
    began = time.perf_counter()
    await state.fitted.wait()
    state.phases["waiting for cross-fit"] = time.perf_counter() - began
    run = suite_from_fits(
        table,
        [state.fits[k] for k in bench.kinds if k in state.fits],
        k=bench.folds,
        seed=bench.seed,
    )
    reference = PairTable.from_outcomes(workload.records(), workload.weak, workload.strong)
    quality_mismatches, cost_diff = compare_tables(table, reference)
    console.rule(f"[bold]{workload.name}")
    console.print(
        f"  outcomes built from the mesh's verified results: {len(table)} rows; vs the set's own records: "
        f"quality differs on {quality_mismatches}, cost differs by at most {cost_diff:.0f} micro-USD"
    )
    title = (
        f"{workload.name} THROUGH THE MESH: {len(table)} queries, {table.weak} (device) -> {table.strong} "
        f"(cloud); routers cross-fitted, {bench.folds} folds, seed {bench.seed} (in-distribution)"
    )
    plot = show_suite(
        console,
        workload.name,
        run,
        title=title,
        plot_dir=bench.plot_dir,
        plot_title=f"{workload.name} through the mesh: cross-fitted routers (in-distribution)",
    )
    live_runs: list[LiveRun] = []
    began = time.perf_counter()
    for policy, point in live_points(run):
        if point is None:
            console.print(f"  live: {policy} never reaches its target PGR; no live pass")
            continue
        advance, stop = bar.track(f"{workload.name}: live {policy}", point.queries)
        try:
            live_runs.append(await _live(mesh, workload, run, point, bench, advance))
        finally:
            stop()
    state.phases["mesh: live routing"] = time.perf_counter() - began
    summaries = [live_summary(r) for r in live_runs]
    if summaries:
        console.print(live_table(workload.name, table.scale, summaries))
    for live in live_runs:
        if live.score_mismatches:
            console.print(f"  [red]{live.score_mismatches} live scores differ from the cross-fitted ones[/red]")
    return SetResult(
        name=workload.name,
        queries=len(workload),
        weak=workload.weak,
        strong=workload.strong,
        scale=table.scale,
        tasks=collection.tasks + sum(r.tasks for r in live_runs),
        failures=dict(collection.failures),
        text_mismatches=collection.text_mismatches,
        quality_mismatches=quality_mismatches,
        max_cost_diff_micros=cost_diff,
        rows=row_summaries(run),
        goal=goal_line(workload.name, run.reports),
        plot=str(plot) if plot is not None else None,
        live=summaries,
        phases=dict(state.phases),
    )


async def _live(
    mesh: ReplayMesh,
    workload: Workload,
    run: SuiteRun,
    point: OperatingPoint,
    bench: RoutingBench,
    advance: Callable[[], None],
) -> LiveRun:
    fit = run.fits[point.router]
    tiers = (WEAK_TIER, STRONG_TIER)
    live = cascade_live if point.cascade else route_live
    return await live(
        mesh, workload, run.table, fit, point, tiers=tiers, concurrency=bench.concurrency, on_done=advance
    )


async def run_routing_bench(bench: RoutingBench, console: Console) -> RoutingBenchResult:
    """Run the benchmark (see the module docstring), printing as it goes; returns the numbers."""
    started = time.perf_counter()
    states: list[_Set] = []
    for name in ["synthetic"] if bench.synthetic else bench.sets:
        began = time.perf_counter()
        workload = _load(bench, name)
        states.append(_Set(workload, phases={"load": time.perf_counter() - began}))
        turns = sum(len(q.turns) for q in workload.queries)
        console.print(
            f"loaded {workload.name}: {len(workload)} queries ({turns} turns) in {states[-1].phases['load']:.1f}s"
        )
    workloads = [s.workload for s in states]
    tiers = bench_tiers(workloads[0], bench.replicas)
    kinds = sorted({q.kind for w in workloads for q in w.queries})
    order = [k for k in _FIT_ORDER if k in bench.kinds] + [k for k in bench.kinds if k not in _FIT_ORDER]
    limiter = anyio.CapacityLimiter(bench.workers) if bench.workers > 0 else None
    bar = _Bar(console, bench.progress)
    result = RoutingBenchResult()
    began = time.perf_counter()
    async with replay_mesh(
        _merged_log(workloads), tiers, concurrency=bench.concurrency, kinds=kinds, seed=bench.seed
    ) as mesh:
        console.print(
            f"mesh up in {time.perf_counter() - began:.1f}s: nats-server pid {mesh.server.pid} at {mesh.url}; "
            + "; ".join(f"{len(t.names())} {t.tier.value} agent(s) replaying {t.model}" for t in tiers)
        )
        async with anyio.create_task_group() as tg:
            for state in states:
                await _both_tiers(mesh, state, bench, console, bar)
                state.pending = len(order)
                if not order:
                    state.fitted.set()
                for kind in order:
                    if limiter is None:
                        await _fit(state, kind, bench, None)
                    else:
                        tg.start_soon(_fit, state, kind, bench, limiter)
            for state in states:
                result.sets.append(await _finish(mesh, state, bench, console, bar))
    result.seconds = time.perf_counter() - started
    result.mesh_seconds = sum(
        s.phases.get("mesh: both tiers", 0.0) + s.phases.get("mesh: live routing", 0.0) for s in result.sets
    )
    result.tasks = sum(s.tasks for s in result.sets)
    console.rule("[bold]summary")
    console.print(phase_table(result))
    failures = result.failures
    console.print(
        f"total: {result.tasks} tasks through the mesh in {result.mesh_seconds:.1f}s of mesh phases "
        f"({result.tasks / result.mesh_seconds if result.mesh_seconds else 0:.0f} tasks/s), "
        f"failures {sum(failures.values())}"
        + (f" ({dict(failures)})" if failures else "")
        + f"; total wall time {result.seconds:.1f}s"
    )
    return result
