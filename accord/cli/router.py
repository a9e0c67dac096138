"""``accord router ...``: train routers on outcome logs, evaluate them, and make logs from the RouteLLM sets."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from accord.bench.evaluation.evaluate import Report, baseline_reports, evaluate_scores
from accord.bench.evaluation.render import plot_reports, report_table
from accord.files import FileRefusedError
from accord.routing.base import RouterError
from accord.routing.files import ROUTER_KINDS, load_router, make_router, overlap, save_router
from accord.routing.records import Outcome, OutcomeLogError, read_outcomes, write_outcomes
from accord.routing.table import PairTable

__all__ = ["register"]

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

Logs = Annotated[list[Path], typer.Argument(help="Outcome logs (JSON Lines), one or more.")]
Weak = Annotated[str | None, typer.Option(help="The weak model (default: inferred from the logs).")]
Strong = Annotated[str | None, typer.Option(help="The strong model (default: inferred from the logs).")]
Plot = Annotated[Path | None, typer.Option(help="Also write a PNG of quality against strong-call share.")]


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def _read(paths: list[Path]) -> list[Outcome]:
    try:
        return read_outcomes(*paths)
    except (FileRefusedError, OSError, OutcomeLogError) as exc:  # OSError: reading on, a stream can fail
        raise _fail(exc) from exc


def _table(records: list[Outcome], weak: str | None, strong: str | None) -> PairTable:
    try:
        return PairTable.from_outcomes(records, weak, strong)
    except (RouterError, OutcomeLogError) as exc:
        raise _fail(exc) from exc


def _show(
    reports: list[Report], table: PairTable, title: str, plot: Path | None, seconds: dict[str, float] | None
) -> None:
    console.print(report_table(reports, title=title, scale=table.scale, seconds=seconds))
    if plot is not None:
        try:
            written = plot_reports(
                reports,
                plot,
                title=title,
                weak=float(table.q_weak.mean()),
                strong=float(table.q_strong.mean()),
                scale=table.scale,
            )
        except RouterError as exc:
            raise _fail(exc) from exc
        console.print(f"plot: {written}")


def register(app: typer.Typer) -> None:
    router_app = typer.Typer(
        help="Routers that learn from outcome logs, and their evaluation.", no_args_is_help=True
    )
    app.add_typer(router_app, name="router")

    @router_app.command("train")
    def train(
        logs: Logs,
        output: Annotated[Path, typer.Option("-o", "--output", help="Router file (.msgpack, or .json).")],
        kind: Annotated[str, typer.Option(help=f"One of: {', '.join(ROUTER_KINDS)}.")] = "logistic",
        weak: Weak = None,
        strong: Strong = None,
    ) -> None:
        """Fit a router on outcome logs and save it."""
        table = _table(_read(logs), weak, strong)
        try:
            router = make_router(kind)
            started = time.perf_counter()
            router.fit_table(table)
            spent = time.perf_counter() - started
            save_router(router, output, trained_on=table.queries)
        except (RouterError, OSError) as exc:
            raise _fail(exc) from exc
        console.print(
            f"trained a {kind} router on {len(table)} queries ({table.weak} -> {table.strong}) in {spent:.1f}s: "
            f"{output}"
        )

    @router_app.command("eval")
    def evaluate(
        router_file: Annotated[Path, typer.Argument(help="A router file written by `accord router train`.")],
        logs: Logs,
        plot: Plot = None,
    ) -> None:
        """Evaluate a saved router on outcome logs: APGR, CPT(50%), CPT(80%), AIQ against random and oracle."""
        try:
            router, file = load_router(router_file)
        except (RouterError, FileRefusedError) as exc:
            raise _fail(exc) from exc
        table = _table(_read(logs), router.weak, router.strong)
        seen = overlap(file, table.queries)
        note = "held-out" if seen == 0 else f"IN-SAMPLE ({seen:.0%} seen in training)"
        try:
            scores = router.score_batch(table.queries)
        except RouterError as exc:
            raise _fail(exc) from exc
        reports = [
            *baseline_reports(table),
            evaluate_scores(table, scores, file.kind, cascade=file.kind == "cascade", note=note),
        ]
        _show(reports, table, f"{file.kind} router on {len(table)} queries", plot, None)
        if seen:
            err.print(
                f"[yellow]warning:[/yellow] the router was trained on {seen:.0%} of these queries; "
                "use `accord router crossfit` for honest in-distribution numbers"
            )

    @router_app.command("crossfit")
    def crossfit(
        logs: Logs,
        kind: Annotated[list[str] | None, typer.Option(help="Router kinds (repeatable; default: all).")] = None,
        folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
        seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
        weak: Weak = None,
        strong: Strong = None,
        plot: Plot = None,
    ) -> None:
        """Train and evaluate on the same logs with k-fold cross-fitting (in-distribution numbers)."""
        from accord.bench.evaluation.suite import crossfit_suite

        table = _table(_read(logs), weak, strong)
        try:
            reports, seconds = crossfit_suite(table, kind or list(ROUTER_KINDS), k=folds, seed=seed)
        except RouterError as exc:
            raise _fail(exc) from exc
        title = (
            f"cross-fitted ({folds} folds, seed {seed}) on {len(table)} queries: {table.weak} -> {table.strong}"
        )
        _show([*baseline_reports(table), *reports], table, title, plot, seconds)

    @router_app.command("logs-from-routellm")
    def logs_from_routellm(
        set_name: Annotated[str, typer.Option("--set", help="mmlu, gsm8k or mt_bench.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="The outcome log to write (JSONL).")],
        datasets: Annotated[
            Path | None,
            typer.Option(help="The datasets directory (default: $ACCORD_DATASETS, else the vendored rows)."),
        ] = None,
        keep_contaminated: Annotated[bool, typer.Option(help="Keep the contaminated prompts.")] = False,
    ) -> None:
        """Write an outcome log (one record per query and model) from a RouteLLM evaluation set."""
        from accord.bench.data.routellm import load_routellm_outcomes

        try:
            records = load_routellm_outcomes(set_name, datasets, drop_contaminated=not keep_contaminated)
            count = write_outcomes(output, records)
        except (RouterError, OSError) as exc:
            raise _fail(exc) from exc
        queries = len({r.query_id for r in records})
        console.print(f"wrote {count} outcome records ({queries} queries) of {set_name} to {output}")
