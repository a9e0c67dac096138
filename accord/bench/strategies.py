"""Collaboration strategies over a replay mesh: accuracy and cost of ensemble, mixture-of-agents and debate on the
GSM8K rows, next to the single models (``accord bench routing --strategy ...``).

The mesh: two device agents replaying the weak model (Mixtral-8x7B) and one cloud agent replaying the strong one
(GPT-4), priced with the set's price sheets. Every query runs each strategy through the market
(:func:`accord.strategies.run_strategy`: signed bids, awards and payments, verified attestations); the
answer's correctness is the recorded correctness of the model whose text the strategy returned (a vote returns
one of its voters' texts, an aggregator its own), and the cost is what the market was paid. A second accuracy
column grades by final number (the returned number is that of a recorded answer the set marked right): the set's
grader marks some right numbers wrong for their format (``#### $20.00``), and a vote that returns one of two
equal answers should not win or lose by which text it returned.

What a replay can and cannot show. Each replayed model answers a question with the one text it recorded, whatever
the notes say: two replicas of a model always agree, a debater never changes its mind, an aggregator answers as if
it saw nothing. So a replay measures the strategies' plumbing and cost (how many calls, who was paid, that the
budget holds) and what combining *these fixed answers* gives, bounded by the "either right" line (the share of
questions at least one model answered right). It cannot show the gains that come from sampling diversity or from
models reading each other's answers; that takes live models.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from rich.console import Console
from rich.table import Table

from accord.bench.data.workload import BenchQuery, Workload
from accord.bench.replay_mesh import ReplayMesh, TierAgents, replay_mesh
from accord.protocol.messages import Tier
from accord.strategies import (
    Ask,
    StrategyFailed,
    StrategyResult,
    StrategySpec,
    build_strategy,
    normalise,
    parse_strategy_option,
    run_strategy,
)

__all__ = [
    "DEFAULT_STRATEGIES",
    "StrategyRow",
    "reference_rows",
    "run_strategy_bench",
    "strategy_tiers",
]

DEFAULT_STRATEGIES: dict[str, str] = {
    "weak (device)": "single:tiers=device",
    "strong (cloud)": "single:tiers=cloud",
    "ensemble": "ensemble:k=3",
    "moa": "moa:layers=2,proposer_tiers=device,aggregator_tiers=cloud",
    "debate": "debate:k=3,rounds=2",
}
"""What ``--strategy ensemble|moa|debate`` runs (the single models always run as the reference rows)."""

_BUDGET_MICROS = 1_000_000
_DEADLINE_MS = 600_000
_BID_WINDOW_MS = 2_000
"""Long on purpose: calls are targeted and close when every invited agent answered (see replay_mesh.spec)."""


@dataclass
class StrategyRow:
    name: str
    spec: str
    queries: int = 0
    correct: int = 0
    """Queries whose returned text the set's own grader marked right (the recorded correctness of that text)."""
    same_number: int = 0
    """Queries whose returned answer has the final number of a recorded answer the grader marked right."""
    calls: int = 0
    paid_micros: int = 0
    strong_final: int = 0
    """Queries whose returned text was the strong model's."""
    failed: Counter[str] = field(default_factory=Counter)
    stopped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.queries if self.queries else float("nan")

    @property
    def number_accuracy(self) -> float:
        return self.same_number / self.queries if self.queries else float("nan")


def strategy_tiers(workload: Workload) -> list[TierAgents]:
    """Two weak device agents and one strong cloud agent (an ensemble of three needs three agents)."""
    weak_in, weak_out = workload.prices[workload.weak]
    strong_in, strong_out = workload.prices[workload.strong]
    return [
        TierAgents(Tier.DEVICE, workload.weak, weak_in, weak_out, replicas=2, tokens_per_s=40.0, ttft_ms=150),
        TierAgents(Tier.CLOUD, workload.strong, strong_in, strong_out, replicas=1, tokens_per_s=80.0, ttft_ms=400),
    ]


def _ask(query: BenchQuery) -> Ask:
    longest = max(rec[0].output_tokens for rec in query.recorded.values())
    return Ask(
        prompt=query.prompt, kind=query.kind, form="math", category=query.category, max_output_tokens=longest
    )


def _score(row: StrategyRow, query: BenchQuery, result: StrategyResult, strong: str) -> None:
    source = next((c for c in result.calls if c.ok and c.answer == result.answer), None)
    model = source.model if source is not None else None
    truth = query.truth.get(model) if model is not None else None
    row.correct += int(bool(truth is not None and truth.correct))
    right = {
        normalise(rec[0].response or "", "math")
        for model, rec in query.recorded.items()
        if query.truth[model].correct and rec[0].response
    }
    row.same_number += int(normalise(result.answer, "math") in right)
    row.strong_final += int(model == strong)
    row.calls += sum(1 for c in result.calls if c.task_id is not None)
    row.paid_micros += result.spent_micros
    if result.stopped:
        row.stopped[result.stopped] += 1


async def _run_row(
    mesh: ReplayMesh, workload: Workload, name: str, spec: StrategySpec, text: str, in_flight: int
) -> StrategyRow:
    row = StrategyRow(name=name, spec=text)
    strategy = build_strategy(spec)
    limit = anyio.CapacityLimiter(in_flight)
    started = time.perf_counter()

    async def one(query: BenchQuery) -> None:
        async with limit:
            try:
                result = await run_strategy(
                    mesh.requester,
                    strategy,
                    _ask(query),
                    budget_micros=_BUDGET_MICROS,
                    deadline_ms=_DEADLINE_MS,
                    bid_window_ms=_BID_WINDOW_MS,
                )
            except StrategyFailed as exc:
                row.queries += 1
                row.failed[exc.reason] += 1
                row.calls += sum(1 for c in exc.calls if c.task_id is not None)
                return
            row.queries += 1
            _score(row, query, result, workload.strong)

    async with anyio.create_task_group() as tg:
        for query in workload.queries:
            tg.start_soon(one, query)
    row.seconds = time.perf_counter() - started
    return row


def reference_rows(workload: Workload) -> dict[str, float]:
    """From the recorded answers alone: each model's accuracy, how often their final answers agree, and the share
    of questions at least one of them got right (the ceiling of any way of choosing between their answers)."""
    n = len(workload.queries)
    weak_ok = sum(bool(q.truth[workload.weak].correct) for q in workload.queries)
    strong_ok = sum(bool(q.truth[workload.strong].correct) for q in workload.queries)
    either = sum(
        bool(q.truth[workload.weak].correct or q.truth[workload.strong].correct) for q in workload.queries
    )
    agree = sum(
        normalise(q.recorded[workload.weak][0].response or "", "math")
        == normalise(q.recorded[workload.strong][0].response or "", "math")
        for q in workload.queries
    )
    return {"weak": weak_ok / n, "strong": strong_ok / n, "either": either / n, "agree": agree / n}


async def run_strategy_bench(
    workload: Workload,
    strategies: Sequence[str],
    console: Console,
    *,
    concurrency: int = 64,
) -> list[StrategyRow]:
    """Run the reference single-model rows and each named strategy (``ensemble``, ``moa``, ``debate``, or any
    ``--strategy`` text) over ``workload`` through one replay mesh; print the table and return its rows."""
    chosen = {name: DEFAULT_STRATEGIES[name] for name in ("weak (device)", "strong (cloud)")}
    for text in strategies:
        chosen[text] = DEFAULT_STRATEGIES.get(text, text)
    specs = {name: parse_strategy_option(text) for name, text in chosen.items()}  # fail before starting a mesh
    rows: list[StrategyRow] = []
    kinds = tuple(sorted({q.kind for q in workload.queries}))
    async with replay_mesh(workload.log, strategy_tiers(workload), concurrency=concurrency, kinds=kinds) as mesh:
        for name, spec in specs.items():
            row = await _run_row(mesh, workload, name, spec, chosen[name], max(1, concurrency // 4))
            rows.append(row)
            console.print(
                f"  {name}: {row.queries} queries, {row.calls} calls in {row.seconds:.1f}s "
                f"({row.calls / max(row.seconds, 1e-9):.0f} tasks/s), failed {dict(row.failed) or 0}"
            )
    console.print(_table(workload, rows))
    ref = reference_rows(workload)
    console.print(
        f"  recorded answers: weak {ref['weak']:.1%}, strong {ref['strong']:.1%}, at least one right "
        f"{ref['either']:.1%} (the ceiling of choosing between them), final answers agree on {ref['agree']:.1%}"
    )
    console.print(
        "  accuracy: the set's grader on the returned text; by number: the returned final number is that of an "
        "answer the grader marked right (its grader marks some right numbers wrong for their format: '$20.00')"
    )
    console.print(
        "  replay: each model answers with its one recorded text whatever it is shown, so replicas agree, "
        "debaters never change their minds and an aggregator answers as if alone; this measures cost, plumbing "
        "and what combining these fixed answers gives, not gains from sampling diversity or from models reading "
        "each other (those need live models)."
    )
    return rows


def _table(workload: Workload, rows: Sequence[StrategyRow]) -> Table:
    table = Table(
        title=f"{workload.name}: strategies through the mesh ({len(workload.queries)} queries; device: 2 x "
        f"{workload.weak}, cloud: 1 x {workload.strong})",
        title_justify="left",
    )
    for column in (
        "strategy",
        "spec",
        "accuracy",
        "by number",
        "calls/query",
        "paid $",
        "$/query",
        "vs strong $",
        "strong text",
    ):
        table.add_column(column, justify="left" if column in ("strategy", "spec") else "right")
    strong_paid = next((r.paid_micros for r in rows if r.name == "strong (cloud)"), 0)
    for row in rows:
        n = max(row.queries, 1)
        table.add_row(
            row.name,
            row.spec,
            f"{row.accuracy:.1%}",
            f"{row.number_accuracy:.1%}",
            f"{row.calls / n:.2f}",
            f"{row.paid_micros / 1e6:.4f}",
            f"{row.paid_micros / n / 1e6:.6f}",
            f"{row.paid_micros / strong_paid:.2f}x" if strong_paid else "-",
            f"{row.strong_final / n:.1%}",
        )
    return table
