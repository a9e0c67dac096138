"""``accord bench ...``: benchmarks over a live mesh (``routing``: the routers through a replay mesh)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from accord.bench.data.routellm import SETS
from accord.bench.data.workload import routellm_workload, synthetic_workload
from accord.bench.models_routing import ModelsBench, ModelsBenchResult, run_models_bench
from accord.bench.routing import RoutingBench, run_routing_bench
from accord.bench.routing_report import RoutingBenchResult
from accord.bench.strategies import DEFAULT_STRATEGIES, run_strategy_bench
from accord.cli.common import run_cli
from accord.cli.logging import configure_logging
from accord.routing.base import RouterError
from accord.routing.files import DEFAULT_KINDS, ROUTER_KINDS
from accord.strategies import StrategyConfigError, parse_strategy_option

__all__ = ["register", "resolve_datasets_dir"]

console = Console(width=None if sys.stdout.isatty() else 170)
err = Console(stderr=True, soft_wrap=True)


def resolve_datasets_dir(path: Path) -> Path:
    """The datasets directory (the one holding ``routellm-evals/``) from ``path``: that directory itself,
    ``routellm-evals``, or its ``routellm/evals`` directory."""
    for candidate in (path, *path.parents[:3]):
        if (candidate / "routellm-evals" / "routellm" / "evals").is_dir():
            return candidate
    raise typer.BadParameter(f"no RouteLLM evaluation data (routellm-evals/routellm/evals) at or above {path}")


def _strategies(
    strategies: list[str],
    sets: list[str] | None,
    dataset: Path | None,
    synthetic: int,
    limit: int | None,
    seed: int,
    concurrency: int,
) -> None:
    """``--strategy``: the strategies over GSM8K (or a generated set) through a replay mesh."""
    chosen = list(sets or ["gsm8k"])
    if synthetic:
        workloads = [synthetic_workload(synthetic, seed=seed).limit(limit)]
    else:
        if any(name != "gsm8k" for name in chosen):
            raise typer.BadParameter(
                "--strategy runs over gsm8k (the only set whose answers are recorded as text)"
            )
        datasets_dir = resolve_datasets_dir(dataset) if dataset is not None else None
        workloads = [routellm_workload("gsm8k", datasets_dir).limit(limit)]
    try:
        for text in strategies:
            parse_strategy_option(DEFAULT_STRATEGIES.get(text, text))
    except StrategyConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc

    async def main() -> None:
        for workload in workloads:
            await run_strategy_bench(workload, strategies, console, concurrency=concurrency)

    run_cli(main)


def _write_json(result: object, json_out: Path | None) -> None:
    if json_out is not None:
        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(result)))
        console.print(f"numbers written to {json_out}")


def _models(bench: ModelsBench, json_out: Path | None) -> None:
    """``--models``: the learned predictor in a market of one replay agent per model."""
    holder: list[ModelsBenchResult] = []

    async def main() -> None:
        holder.append(await run_models_bench(bench, console))

    try:
        run_cli(main)
    except RouterError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not holder:
        raise typer.Exit(1)
    result = holder[0]
    _write_json(result, json_out)
    if not all(point.matches for point in result.live):
        err.print("[red]a live pass did not reproduce its offline point[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks over a live mesh.", no_args_is_help=True)
    app.add_typer(bench, name="bench")

    @bench.command("routing")
    def routing(
        dataset: Annotated[
            Path | None,
            typer.Option(
                help="The datasets directory, or its routellm-evals directory (default: $ACCORD_DATASETS, "
                "else the rows vendored with Accord)."
            ),
        ] = None,
        sets: Annotated[list[str] | None, typer.Option(help="RouteLLM sets to run (repeat the option).")] = None,
        synthetic: Annotated[
            int, typer.Option(help="Run one generated set of N queries instead (no data set needed).")
        ] = 0,
        limit: Annotated[int | None, typer.Option(help="At most N queries per set, evenly spaced.")] = None,
        folds: Annotated[int, typer.Option(help="Cross-fitting folds.")] = 5,
        seed: Annotated[int, typer.Option(help="Seed of the folds and the seeded random baseline.")] = 0,
        kinds: Annotated[
            list[str] | None, typer.Option(help="Router kinds (repeat; default all but predictor).")
        ] = None,
        plot_dir: Annotated[Path, typer.Option(help="Where the PNG plots go.")] = Path("routing-plots"),
        no_plot: Annotated[bool, typer.Option("--no-plot", help="Write no plots.")] = False,
        concurrency: Annotated[int, typer.Option(help="Tasks in flight at once.")] = 64,
        replicas: Annotated[int, typer.Option(help="Agents per tier.")] = 1,
        workers: Annotated[
            int, typer.Option(help="Worker processes for cross-fitting (0: in this process, between mesh phases).")
        ] = 2,
        json_out: Annotated[
            Path | None, typer.Option("--json", help="Also write the numbers as JSON here.")
        ] = None,
        strategy: Annotated[
            list[str] | None,
            typer.Option(
                help="Run collaboration strategies instead of routers (repeat: ensemble, moa, debate, or any "
                "--strategy text of `accord ask`) over GSM8K, next to the single models.",
            ),
        ] = None,
        models: Annotated[
            str | None,
            typer.Option(
                help="Run the learned predictor in a market of one replay agent per model instead: 'all' or a "
                "comma-separated list (data: --log, else a generated world of --world-models models, --synthetic "
                "queries, default 1000).",
            ),
        ] = None,
        log: Annotated[Path | None, typer.Option(help="With --models: the outcome log (JSONL) to replay.")] = None,
        world_models: Annotated[int, typer.Option(help="With --models: models of the generated world.")] = 10,
        lambdas: Annotated[
            list[float] | None,
            typer.Option("--lambda", help="With --models: price weights of the live passes (repeat)."),
        ] = None,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
        log_json: Annotated[bool, typer.Option("--log-json", help="Logs as JSON lines.")] = False,
        verbose: Annotated[bool, typer.Option(help="Show the agents' logs.")] = False,
    ) -> None:
        """Route the RouteLLM MMLU, GSM8K and MT-Bench rows THROUGH a live mesh of replay agents and evaluate
        and run the routers on what came back."""
        configure_logging(json=log_json, level="info" if verbose else "warning")
        if models is not None:
            _models(
                ModelsBench(
                    models=models,
                    log=log,
                    world_models=world_models,
                    queries=synthetic or 1000,
                    seed=seed,
                    folds=folds,
                    lambdas=tuple(lambdas or ()),
                    concurrency=concurrency,
                    plot_dir=None if no_plot else plot_dir,
                ),
                json_out,
            )
            return
        if strategy:
            _strategies(strategy, sets, dataset, synthetic, limit, seed, concurrency)
            return
        chosen = list(sets or SETS)
        unknown = [s for s in chosen if s not in SETS]
        if unknown:
            raise typer.BadParameter(f"unknown set(s) {unknown}; choose from {', '.join(SETS)}")
        router_kinds = list(kinds or DEFAULT_KINDS)
        unknown = [k for k in router_kinds if k not in ROUTER_KINDS]
        if unknown:
            raise typer.BadParameter(f"unknown router kind(s) {unknown}; choose from {', '.join(ROUTER_KINDS)}")
        config = RoutingBench(
            sets=chosen,
            datasets_dir=resolve_datasets_dir(dataset) if dataset is not None and not synthetic else None,
            synthetic=synthetic,
            limit=limit,
            folds=folds,
            seed=seed,
            kinds=router_kinds,
            plot_dir=None if no_plot else plot_dir,
            concurrency=concurrency,
            replicas=replicas,
            workers=workers,
            progress=not no_progress and console.is_terminal,
        )
        holder: list[RoutingBenchResult] = []

        async def main() -> None:
            holder.append(await run_routing_bench(config, console))

        run_cli(functools.partial(main))
        if not holder:
            raise typer.Exit(1)
        result = holder[0]
        _write_json(result, json_out)
        failures = sum(result.failures.values())
        if failures:
            err.print(f"[red]{failures} queries failed[/red]")
            raise typer.Exit(1)
