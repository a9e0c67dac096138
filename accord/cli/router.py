"""``accord router ...``: train routers on outcome logs, evaluate them, and make logs (from the RouteLLM sets, a
generated world of N models, or any multi-model log). Over N models (``--models``) see
:mod:`accord.cli.router_models`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from accord.bench.evaluation.evaluate import Report, baseline_reports, evaluate_scores
from accord.bench.evaluation.render import plot_reports, report_table
from accord.cli import router_models
from accord.files import FileRefusedError
from accord.routing.base import RouterError
from accord.routing.files import (
    DEFAULT_KINDS,
    ROUTER_KINDS,
    load_predictor,
    load_router,
    make_router,
    overlap,
    read_router_file,
    save_router,
)
from accord.routing.records import Outcome, OutcomeLogError, read_outcomes, write_outcomes
from accord.routing.table import PairTable

__all__ = ["register"]

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

Logs = Annotated[list[Path], typer.Argument(help="Outcome logs (JSON Lines), one or more.")]
Weak = Annotated[str | None, typer.Option(help="The weak model (default: inferred from the logs).")]
Strong = Annotated[str | None, typer.Option(help="The strong model (default: inferred from the logs).")]
Plot = Annotated[
    Path | None, typer.Option(help="Also write a PNG (quality against strong-call share, or against cost).")
]
Models = Annotated[
    str | None,
    typer.Option(help="Learn over these models: 'all' (every model of the logs) or a comma-separated list."),
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the numbers as JSON here (N models).")]
Points = Annotated[int, typer.Option(help="Lambdas on the curve (N models).")]


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
        kind: Annotated[
            str | None, typer.Option(help=f"One of: {', '.join(ROUTER_KINDS)} (default logistic).")
        ] = None,
        weak: Weak = None,
        strong: Strong = None,
        models: Models = None,
    ) -> None:
        """Fit a router on outcome logs and save it: a pair router (--kind, --weak, --strong), or with
        --models the learned predictor over any number of models."""
        if models is not None:
            if kind not in (None, "predictor") or weak is not None or strong is not None:
                raise _fail(
                    RouterError("bad_input", "--models trains the predictor: no --kind, --weak or --strong")
                )
            router_models.train_models(_read(logs), models, output)
            return
        kind = kind or "logistic"
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
        json_out: JsonOut = None,
        points: Points = 200,
    ) -> None:
        """Evaluate a saved router on outcome logs. A pair router: APGR, CPT(50%), CPT(80%), AIQ against random
        and oracle. A predictor over N models: its curve over lambda against the single models' hull and the
        oracle (--json writes every number)."""
        try:
            if read_router_file(router_file).models:
                predictor, file = load_predictor(router_file)
                router_models.evaluate_models(
                    predictor, file, _read(logs), json_out=json_out, plot=plot, points=points
                )
                return
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
        kind: Annotated[
            list[str] | None, typer.Option(help="Router kinds (repeatable; default: all but predictor).")
        ] = None,
        folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
        seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
        weak: Weak = None,
        strong: Strong = None,
        plot: Plot = None,
        models: Models = None,
        json_out: JsonOut = None,
        points: Points = 200,
    ) -> None:
        """Train and evaluate on the same logs with k-fold cross-fitting (in-distribution numbers; every metric
        per fold, then averaged). With --models: the learned predictor over those models."""
        from accord.bench.evaluation.crossfit import run_suite

        if models is not None:
            router_models.crossfit_models(
                _read(logs), models, folds=folds, seed=seed, json_out=json_out, plot=plot, points=points
            )
            return
        table = _table(_read(logs), weak, strong)
        try:
            run = run_suite(table, kind or list(DEFAULT_KINDS), k=folds, seed=seed)
        except RouterError as exc:
            raise _fail(exc) from exc
        title = (
            f"cross-fitted ({folds} folds, seed {seed}) on {len(table)} queries: {table.weak} -> {table.strong}"
        )
        _show(run.everything, table, title, plot, run.seconds)

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

    @router_app.command("import")
    def import_log(
        source: Annotated[Path, typer.Argument(help="A multi-model log: .csv, .json (array) or .jsonl.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="The outcome log to write (JSONL).")],
        column: Annotated[
            list[str] | None,
            typer.Option(
                help="FIELD=COLUMN: read an outcome field from another column (repeat), e.g. prompt=question."
            ),
        ] = None,
        cost_unit: Annotated[str, typer.Option(help="Unit of a 'cost' column: usd, cents or micros.")] = "usd",
        score_max: Annotated[float | None, typer.Option(help="The scale of a 'score' column (e.g. 10).")] = None,
    ) -> None:
        """Turn any log with the columns prompt, model, correct or score, and cost into an outcome log."""
        from accord.bench.data.importer import import_outcomes

        mapping: dict[str, str] = {}
        for item in column or []:
            field, sep, name = item.partition("=")
            if not sep or not field or not name:
                raise typer.BadParameter(f"--column wants FIELD=COLUMN, got {item!r}")
            mapping[field.strip()] = name.strip()
        try:
            result = import_outcomes(source, columns=mapping, cost_unit=cost_unit, score_max=score_max)
            count = write_outcomes(output, result.records)
            console.print(router_models.models_overview(result.records))
        except (RouterError, FileRefusedError, OSError) as exc:  # OSError: writing the output
            raise _fail(exc) from exc
        if result.rounded_to_zero:
            err.print(f"[yellow]warning:[/yellow] {result.rounded_to_zero} costs below 0.5 micro-USD became 0")
        console.print(f"wrote {count} outcome records to {output}")

    @router_app.command("synth")
    def synth(
        output: Annotated[Path, typer.Option("-o", "--output", help="The outcome log to write (JSONL).")],
        models: Annotated[int, typer.Option(help="Number of models.")] = 10,
        queries: Annotated[int, typer.Option(help="Number of queries.")] = 3000,
        world: Annotated[int, typer.Option(help="Seed of the world (models, topics): the ground truth.")] = 0,
        seed: Annotated[
            int, typer.Option(help="Seed of the queries and outcomes (train and test: two seeds).")
        ] = 1,
        topics: Annotated[int, typer.Option(help="Number of topics.")] = 8,
        categories: Annotated[bool, typer.Option(help="Records carry the topic as their category.")] = False,
    ) -> None:
        """Write a generated N-model outcome log with known ground truth (accord.bench.data.synthetic_models)."""
        from accord.bench.data.synthetic_models import synthetic_world

        try:
            records = synthetic_world(models, seed=world, topics=topics, categories=categories).outcomes(
                queries, seed=seed
            )
            count = write_outcomes(output, records)
        except (RouterError, OSError) as exc:
            raise _fail(exc) from exc
        console.print(router_models.models_overview(records))
        console.print(f"wrote {count} outcome records (world {world}, seed {seed}) to {output}")
