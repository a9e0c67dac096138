"""The learned predictor over N models on held-out seeds of generated worlds (no data set, no mesh).

    python -m tests.bench.routing_models [--models 10] [--train 3000] [--test 3000] [--worlds 0] [--json OUT]

Per world (``accord.bench.data.synthetic_models``: topic- and task-dependent skills, prices over 100x, ground
truth known) the predictor is trained on the queries of seed 1 and evaluated on those of seed 2, as
``accord router train --models all`` and ``accord router eval`` do. It prints the single models, the lambda curve
against their hull, the goals of the issue (accuracy at the best single model's cost at least 3 points above it;
that model's accuracy at no more than half its cost; never below the hull) and, for reference, the same numbers
for the Bayes router, which knows every query's true probabilities (the ceiling no router can pass on average).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
from rich.console import Console

from accord.bench.data.synthetic_models import synthetic_world
from accord.bench.evaluation.metrics import nondecreasing_hull
from accord.bench.evaluation.models import ModelsReport, evaluate_chooser, hull_at
from accord.bench.evaluation.render import models_summary, models_tables, plot_models_report
from accord.routing.gate import choose
from accord.routing.matrix import OutcomeMatrix
from accord.routing.predictor import LearnedPredictor, Plan

console = Console(width=None if sys.stdout.isatty() else 170)


class Bayes:
    """The router that knows the true probabilities (and chooses with the predictor's cost estimates)."""

    def __init__(self, truth: np.ndarray, plan: Plan) -> None:
        self.truth, self.plan = truth, plan

    def choose(self, lam: float) -> np.ndarray:
        return choose(self.truth, self.plan.options[0].cost, lam)

    def lambdas(self, points: int = 200) -> list[float]:
        return self.plan.lambdas(points)


def goals(report: ModelsReport) -> list[tuple[str, bool]]:
    best = report.best_single
    gain = (report.accuracy_at_best_single_cost - best.accuracy) * 100
    reach = report.cost_at_best_single_accuracy
    share = None if reach is None else reach / best.cost_per_query_micros
    return [
        (f"accuracy at the best single model's cost: {gain:+.2f} points (goal >= +3)", gain >= 3.0),
        (
            "its accuracy at "
            + ("no cost on the curve" if share is None else f"{share:.1%} of its cost")
            + " (goal <= 50%)",
            share is not None and share <= 0.5,
        ),
        (
            f"least gap to the single-model hull {report.min_gap_to_hull * 100:+.2f} points (goal >= 0)",
            report.min_gap_to_hull >= 0.0,
        ),
    ]


def run_world(world_seed: int, args: argparse.Namespace) -> ModelsReport:
    world = synthetic_world(args.models, seed=world_seed)
    started = time.perf_counter()
    predictor = LearnedPredictor.from_outcomes(world.outcomes(args.train, seed=1))
    fitted = time.perf_counter() - started
    queries = world.sample(args.test, seed=2)
    matrix = OutcomeMatrix.from_outcomes(world.outcomes(args.test, seed=2), predictor.models)
    plan = predictor.plan(matrix.queries)
    report = evaluate_chooser(
        matrix, plan, router="predictor", note="held-out seed", reference=Bayes(world.probabilities(queries), plan)
    )
    console.rule(
        f"[bold]world {world_seed}: {args.models} models, train {args.train} (seed 1), test {args.test} (seed 2)"
    )
    fit = predictor.report
    if fit is not None:
        console.print(f"fitted in {fitted:.1f}s; out of fold: log-loss {fit.log_loss}, gate {fit.gate}")
    for table in models_tables(report):
        console.print(table)
    for line in models_summary(report):
        console.print("  " + line)
    ref_x, ref_y = nondecreasing_hull(
        np.asarray([p.cost_per_query_micros for p in report.reference]),
        np.asarray([p.accuracy for p in report.reference]),
    )
    bayes = hull_at(ref_x, ref_y, report.best_single.cost_per_query_micros)
    console.print(f"  Bayes router (true probabilities) at the best single model's cost: {bayes:.2%}")
    for text, met in goals(report):
        console.print(f"  goal: {text} -> {'[green]MET[/green]' if met else '[red]NOT MET[/red]'}")
    if args.plot_dir is not None:
        args.plot_dir.mkdir(parents=True, exist_ok=True)
        path = plot_models_report(
            report, args.plot_dir / f"routing_models_world{world_seed}.png", title=f"world {world_seed}"
        )
        console.print(f"  plot: {path}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=3000)
    parser.add_argument("--worlds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    reports = [run_world(seed, args) for seed in args.worlds]
    if args.json is not None:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(reports)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
