"""Offline routing benchmark: routers cross-fitted on the RouteLLM evaluation rows, scored as RouteLLM and
RouterBench score them.

    python -m tests.bench.routing_offline [--sets mmlu gsm8k mt_bench] [--folds 5] [--plot-dir DIR]
    python -m tests.bench.routing_offline --synthetic 600      # a generated log, no data set needed

Per set it prints weak, strong, random (expected line and one seeded draw), oracle, and each router kind:
peak quality, APGR (exact grid and RouteLLM's 10-bin grid), CPT(50%), CPT(80%), AIQ and the wall time of its
cross-fitting (fit + score over all folds). Every router number is cross-fitted on the same set: it is an
in-distribution number. The "vs oracle" lines put APGR against the oracle's and the random line's, the floor and
ceiling measured in the same run. The bandit also runs online (bandit feedback only, one pass in a seeded order).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from accord.agents.routers.bandit import BanditRouter, simulate_online
from accord.agents.routers.datasets import SETS, load_routellm_outcomes
from accord.agents.routers.evaluate import Report, baseline_reports
from accord.agents.routers.render import format_quality, plot_reports, report_table
from accord.agents.routers.store import ROUTER_KINDS
from accord.agents.routers.suite import crossfit_suite
from accord.agents.routers.synthetic import synthetic_outcomes
from accord.agents.routers.table import PairTable

console = Console(width=None if sys.stdout.isatty() else 170)

# The goals, cross-fitted (in-distribution).
GOALS = {
    "mmlu": ("best non-cascade router: APGR >= 0.70 and CPT(50%) <= 25%", "apgr_cpt50"),
    "gsm8k": ("cascade: PGR 80% with <= 40% strong calls", "cascade_cpt80"),
}


def _goal_line(name: str, reports: list[Report]) -> str | None:
    if name not in GOALS:
        return None
    text, kind = GOALS[name]
    if kind == "apgr_cpt50":
        routers = [r for r in reports if r.name in ROUTER_KINDS and r.name != "cascade"]
        best = max(routers, key=lambda r: r.apgr)
        met = best.apgr >= 0.70 and best.cpt50 <= 0.25
        verdict = "MET" if met else "NOT MET"
        return f"goal ({text}): {best.name} APGR {best.apgr:.3f}, CPT(50%) {best.cpt50:.1%} -> {verdict}"
    cascades = [r for r in reports if r.name == "cascade"]
    if not cascades:
        return f"goal ({text}): no cascade run"
    cpt80 = cascades[0].cpt80
    met = not math.isnan(cpt80) and cpt80 <= 0.40
    return f"goal ({text}): cascade CPT(80%) {cpt80:.1%} -> {'MET' if met else 'NOT MET'}"


def run_set(
    name: str,
    table: PairTable,
    *,
    kinds: list[str],
    folds: int,
    seed: int,
    online: bool,
    plot_dir: Path | None,
) -> list[Report]:
    started = time.perf_counter()
    baselines = baseline_reports(table, seed=seed)
    reports, seconds = crossfit_suite(table, kinds, k=folds, seed=seed)
    everything = [*baselines, *reports]
    title = (
        f"{name}: {len(table)} queries, {table.weak} -> {table.strong}; "
        f"routers cross-fitted, {folds} folds, seed {seed} (in-distribution)"
    )
    console.print(report_table(everything, title=title, scale=table.scale, seconds=seconds))
    random_apgr, oracle_apgr = baselines[2].apgr, baselines[-1].apgr
    for report in reports:
        share = (report.apgr - random_apgr) / (oracle_apgr - random_apgr)
        console.print(
            f"  vs oracle: {report.name:<9} APGR {report.apgr:.3f} = {share:.1%} of the way from random "
            f"({random_apgr:.3f}) to oracle ({oracle_apgr:.3f})"
        )
    goal = _goal_line(name, reports)
    if goal:
        console.print("  " + goal)
    if online and "bandit" in kinds:
        online_table = Table(
            title=f"{name}: bandit online (bandit feedback, one seeded pass)", title_justify="left"
        )
        for column in ("policy", "strong price", "quality", "strong share", "regret/query", "time"):
            online_table.add_column(column, justify="right")
        for policy in ("ucb", "thompson"):
            bandit = BanditRouter(table.weak, table.strong, policy=policy, alpha=0.3)
            began = time.perf_counter()
            run = simulate_online(bandit, table, strong_price=0.1, seed=seed)
            online_table.add_row(
                policy,
                "0.10",
                format_quality(run.quality, table.scale),
                f"{run.strong_share:.1%}",
                f"{run.mean_regret:.3f}",
                f"{time.perf_counter() - began:.1f}s",
            )
        console.print(online_table)
    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
        path = plot_reports(
            [r for r in everything if r.name != "random (seeded)"],
            plot_dir / f"routing_{name}.png",
            title=f"{name}: cross-fitted routers (in-distribution)",
            weak=float(table.q_weak.mean()),
            strong=float(table.q_strong.mean()),
            scale=table.scale,
        )
        console.print(f"  plot: {path}")
    console.print(f"  set wall time: {time.perf_counter() - started:.1f}s\n")
    return everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--kinds", nargs="+", choices=list(ROUTER_KINDS), default=list(ROUTER_KINDS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", type=Path, default=None, help="datasets dir (default ../shared/datasets)")
    parser.add_argument("--plot-dir", type=Path, default=None)
    parser.add_argument("--no-online", action="store_true", help="skip the online bandit pass")
    parser.add_argument("--synthetic", type=int, default=0, help="run on a generated log of N queries instead")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    common = {
        "kinds": args.kinds,
        "folds": args.folds,
        "seed": args.seed,
        "online": not args.no_online,
        "plot_dir": args.plot_dir,
    }
    if args.synthetic:
        table = PairTable.from_outcomes(synthetic_outcomes(args.synthetic, seed=args.seed))
        run_set("synthetic", table, **common)
    else:
        for name in args.sets:
            loaded = time.perf_counter()
            table = PairTable.from_outcomes(load_routellm_outcomes(name, args.datasets))
            console.print(f"loaded {name}: {len(table)} queries in {time.perf_counter() - loaded:.1f}s")
            run_set(name, table, **common)
    console.print(f"total wall time: {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
