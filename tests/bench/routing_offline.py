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
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from accord.bench.data.routellm import SETS, load_routellm_outcomes
from accord.bench.data.synthetic import synthetic_outcomes
from accord.bench.evaluation.crossfit import run_suite
from accord.bench.evaluation.evaluate import Report
from accord.bench.evaluation.render import format_quality
from accord.bench.evaluation.suite_view import show_suite
from accord.routing.bandit import BanditRouter, simulate_online
from accord.routing.files import DEFAULT_KINDS, ROUTER_KINDS
from accord.routing.table import PairTable

console = Console(width=None if sys.stdout.isatty() else 170)


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
    run = run_suite(table, kinds, k=folds, seed=seed)
    title = (
        f"{name}: {len(table)} queries, {table.weak} -> {table.strong}; "
        f"routers cross-fitted, {folds} folds, seed {seed} (in-distribution)"
    )
    show_suite(console, name, run, title=title, plot_dir=plot_dir)
    if online and "bandit" in kinds:
        online_table = Table(
            title=f"{name}: bandit online (bandit feedback, one seeded pass)", title_justify="left"
        )
        for column in ("policy", "strong price", "quality", "strong share", "regret/query", "time"):
            online_table.add_column(column, justify="right")
        for policy in ("ucb", "thompson"):
            bandit = BanditRouter(table.weak, table.strong, policy=policy, alpha=0.3)
            began = time.perf_counter()
            result = simulate_online(bandit, table, strong_price=0.1, seed=seed)
            online_table.add_row(
                policy,
                "0.10",
                format_quality(result.quality, table.scale),
                f"{result.strong_share:.1%}",
                f"{result.mean_regret:.3f}",
                f"{time.perf_counter() - began:.1f}s",
            )
        console.print(online_table)
    console.print(f"  set wall time: {time.perf_counter() - started:.1f}s\n")
    return run.everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--kinds", nargs="+", choices=list(ROUTER_KINDS), default=list(DEFAULT_KINDS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", type=Path, default=None, help="datasets dir (default: the vendored rows)")
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
