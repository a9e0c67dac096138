"""``accord router`` over any number of models: training and evaluating the learned predictor
(``train --models``, ``eval`` of its file, ``crossfit --models``), and making N-model logs (``import``,
``synth``). Registered by :mod:`accord.cli.router`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from accord.bench.evaluation.models import Chooser, ModelsReport, crossfit_plans, evaluate_chooser
from accord.bench.evaluation.render import models_summary, models_tables, plot_models_report
from accord.routing.base import RouterError
from accord.routing.files import RouterFile, overlap, save_predictor
from accord.routing.matrix import OutcomeMatrix, parse_models
from accord.routing.predictor import LearnedPredictor
from accord.routing.records import Outcome, OutcomeLogError

__all__ = ["crossfit_models", "evaluate_models", "models_overview", "show_models_report", "train_models"]

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def _matrix(records: list[Outcome], spec: str) -> OutcomeMatrix:
    try:
        return OutcomeMatrix.from_outcomes(records, parse_models(spec, {r.model for r in records}))
    except (RouterError, OutcomeLogError) as exc:
        raise _fail(exc) from exc


def train_models(records: list[Outcome], spec: str, output: Path) -> None:
    """Fit a learned predictor over the models ``spec`` names and save it."""
    matrix = _matrix(records, spec)
    predictor = LearnedPredictor()
    started = time.perf_counter()
    try:
        predictor.fit_matrix(matrix)
        save_predictor(predictor, output, trained_on=matrix.queries)
    except (RouterError, OSError) as exc:
        raise _fail(exc) from exc
    spent = time.perf_counter() - started
    report = predictor.report
    console.print(
        f"trained a predictor over {len(matrix.models)} models on {len(matrix)} queries in {spent:.1f}s: {output}"
    )
    if report is not None and report.log_loss is not None and report.log_loss_fallback is not None:
        console.print(
            f"  out of fold ({report.folds} folds) on the training log: log-loss {report.log_loss:.4f} "
            f"(per-task table alone {report.log_loss_fallback:.4f}), calibration error {report.ece or 0:.4f}; "
            "gate (share of task x lambda cells): "
            + ", ".join(f"{name} {share:.0%}" for name, share in report.gate.items())
        )


def show_models_report(report: ModelsReport, *, json_out: Path | None, plot: Path | None, title: str) -> None:
    console.print(f"{report.router} over {len(report.models)} models on {report.queries} queries ({report.note})")
    for table in models_tables(report):
        console.print(table)
    for line in models_summary(report):
        console.print("  " + line)
    if json_out is not None:
        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        console.print(f"numbers written to {json_out}")
    if plot is not None:
        try:
            console.print(f"plot: {plot_models_report(report, plot, title=title)}")
        except RouterError as exc:
            raise _fail(exc) from exc


def evaluate_models(
    predictor: LearnedPredictor,
    file: RouterFile,
    records: list[Outcome],
    *,
    json_out: Path | None,
    plot: Path | None,
    points: int,
) -> None:
    """Evaluate a saved predictor on a log: its lambda curve against the single models (see
    :mod:`accord.bench.evaluation.models`)."""
    present = {r.model for r in records}
    models = [m for m in predictor.models if m in present]
    missing = [m for m in predictor.models if m not in present]
    extra = sorted(present - set(predictor.models))
    if missing:
        err.print(f"[yellow]warning:[/yellow] the log has no outcomes of {missing}; choosing among the others")
    if extra:
        err.print(f"[yellow]warning:[/yellow] the predictor was not trained on {extra}; they are left out")
    try:
        table = OutcomeMatrix.from_outcomes(records, models).complete()
        if len(models) < 2 or not len(table):
            raise RouterError("no_pair", f"no query of the log has outcomes of every one of {models}")
        plan = predictor.plan(table.queries).restrict(models)
    except (RouterError, OutcomeLogError) as exc:
        raise _fail(exc) from exc
    seen = overlap(file, table.queries)
    note = "held-out" if seen == 0 else f"IN-SAMPLE ({seen:.0%} seen in training)"
    report = evaluate_chooser(table, plan, router="predictor", note=note, points=points)
    show_models_report(report, json_out=json_out, plot=plot, title=f"predictor over {len(models)} models ({note})")
    if seen:
        err.print(
            f"[yellow]warning:[/yellow] the predictor was trained on {seen:.0%} of these queries; "
            "use `accord router crossfit --models ...` for honest in-distribution numbers"
        )


def crossfit_models(
    records: list[Outcome],
    spec: str,
    *,
    folds: int,
    seed: int,
    json_out: Path | None,
    plot: Path | None,
    points: int,
) -> None:
    """Cross-fit the learned predictor over N models: each fold chosen by a predictor fitted on the others."""
    matrix = _matrix(records, spec)

    def fit(train: OutcomeMatrix) -> Callable[[OutcomeMatrix], Chooser]:
        predictor = LearnedPredictor(seed=seed)
        predictor.fit_matrix(train)

        def plan(test: OutcomeMatrix) -> Chooser:
            return predictor.plan(test.queries)

        return plan

    started = time.perf_counter()
    try:
        table, plans = crossfit_plans(matrix, fit, k=folds, seed=seed)
    except RouterError as exc:
        raise _fail(exc) from exc
    note = f"cross-fitted, {folds} folds (in-distribution)"
    report = evaluate_chooser(table, plans, router="predictor", note=note, points=points)
    console.print(f"cross-fitted in {time.perf_counter() - started:.1f}s")
    show_models_report(
        report, json_out=json_out, plot=plot, title=f"predictor over {len(matrix.models)} models ({note})"
    )


def models_overview(records: list[Outcome]) -> Table:
    """Per model: queries, accuracy and cost per query (what ``import`` and ``synth`` wrote)."""
    matrix = OutcomeMatrix.from_outcomes(records)
    observed = matrix.observed
    out = Table(title=f"{len(matrix)} queries, {len(matrix.models)} models", title_justify="left")
    for column in ("model", "queries", "accuracy", "cost/query (micro-USD)"):
        out.add_column(column, justify="left" if column == "model" else "right")
    accuracy, cost = matrix.accuracy(), matrix.cost_per_query()
    for j in sorted(range(len(matrix.models)), key=lambda j: float(cost[j])):
        out.add_row(matrix.models[j], str(int(observed[:, j].sum())), f"{accuracy[j]:.2%}", f"{cost[j]:,.1f}")
    return out
