"""``accord bench routing --models``: the learned predictor inside a live market of N replay agents.

One replay agent per model of an outcome log (a generated N-model world by default, or ``--log``), each priced
from the log: a flat price per task equal to its model's mean cost per query (price sheet 0 per input token,
tasks priced at one output token, at the mean cost), and claiming its training
accuracy as its quality. The requester ranks bids with the learned predictor (``Requester(predictor=...)``), by
``predicted quality - lambda * price`` (``mu = 0``). Every agent is invited to every task (``shortlist_k`` = the
number of agents): the registry's shortlist is cached per class of task, not per query, so with a per-query
predictor a shorter list would carry one query's ranking over to the next.

1. **cross-fit**: the queries are split into ``folds`` by prompt; a :class:`~accord.routing.predictor.
   LearnedPredictor` is fitted on the other folds for each, and :class:`FoldPredictor` hands a task to the
   predictor of its query's fold, so no query is ranked by a predictor that saw it.
2. **offline**: the market's choice at each lambda is computed without the mesh: per query (as the market sees
   it: its text and kind, no category), the model with the highest ``value - lambda * price`` (the predictor's
   gated values, the agents' prices; ties to the cheaper), giving the mesh's cost-accuracy curve
   (:class:`~accord.bench.evaluation.models.ModelsReport`, costs = what the mesh charges) against the single
   models' hull.
3. **live**: at two lambdas (by default the curve's points nearest the best single model's cost and a third of
   it) every query goes through the market (signed bids, awards, attested results); the model that answered,
   its recorded outcome and the price paid are compared with the offline point, query by query.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
import numpy as np
from rich.console import Console
from rich.table import Table

from accord.backends.replay import OutcomeLog
from accord.bench.data.synthetic_models import synthetic_world
from accord.bench.evaluation.evaluate import fold_ids
from accord.bench.evaluation.models import ModelsReport, evaluate_chooser
from accord.bench.evaluation.render import models_summary, models_tables, plot_models_report
from accord.bench.replay_mesh import BENCH_REQUESTER_CONFIG, ReplayMesh, TierAgents, replay_mesh
from accord.errors import AccordError
from accord.protocol.market import Offer
from accord.protocol.messages import ChatMessage, Policy, Role, Task, Tier
from accord.routing.base import Query, RouterError
from accord.routing.gate import choose
from accord.routing.matrix import OutcomeMatrix, parse_models
from accord.routing.predictor import LearnedPredictor, Plan, query_of_task
from accord.routing.records import Outcome, query_key, read_outcomes

__all__ = [
    "FoldPredictor",
    "LivePoint",
    "ModelsBench",
    "ModelsBenchResult",
    "MarketPlans",
    "agent_prices",
    "run_models_bench",
]

TASK_TOKENS = 1
"""Output tokens every task is priced at (the agents' sheets make that their flat price). One token, so that the
bids' latency estimates stay far inside the deadline however many tasks an agent has in flight (an agent
declines a task it cannot finish in time, which would make who bids depend on load)."""


@dataclass(frozen=True)
class ModelsBench:
    """What to run: ``log`` (an outcome log) or a generated world of ``world_models`` models (``queries``
    queries drawn with ``seed`` from world ``world_seed``); ``lambdas``: the live points (default: two read off
    the offline curve)."""

    models: str = "all"
    log: Path | None = None
    world_models: int = 10
    world_seed: int = 0
    queries: int = 1000
    seed: int = 1
    folds: int = 5
    lambdas: Sequence[float] = ()
    concurrency: int = 64
    plot_dir: Path | None = None


class FoldPredictor:
    """A :class:`~accord.protocol.market.QualityPredictor` that asks the predictor of the task's query's fold."""

    def __init__(self, predictors: Sequence[LearnedPredictor], fold_of: dict[str, int]) -> None:
        self.predictors = list(predictors)
        self.fold_of = fold_of

    def predict(self, offer: Offer, task: Task) -> float:
        fold = self.fold_of.get(query_key(query_of_task(task).text))
        if fold is None:
            raise RouterError("bad_input", "a task whose query is in no fold")
        return self.predictors[fold].predict(offer, task)


@dataclass(frozen=True)
class MarketPlans:
    """The cross-fitted plans and the agents' prices: the market's choice at any lambda, offline."""

    rows: list[np.ndarray]
    plans: list[Plan]
    prices: np.ndarray
    size: int

    def choose(self, lam: float) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.int64)
        for rows, plan in zip(self.rows, self.plans, strict=True):
            values = plan.values(lam)
            out[rows] = choose(values, np.broadcast_to(self.prices, values.shape), lam)
        return out

    def lambdas(self, points: int = 200) -> list[float]:
        every = np.unique(np.concatenate([np.asarray(p.lambdas(points)) for p in self.plans]))
        if every.size > points:
            every = np.unique(np.concatenate([[0.0], np.quantile(every, np.linspace(0, 1, points))]))
        return [float(v) for v in every]


class LivePoint(msgspec.Struct, kw_only=True):
    """One live pass at one lambda against its offline point."""

    lambda_: float = msgspec.field(name="lambda")
    queries: int
    expected_accuracy: float
    accuracy: float
    expected_paid_micros: int
    paid_micros: int
    choice_mismatches: int
    """Queries the market awarded to another model than the offline choice."""
    reawards: int
    """Tasks the requester awarded again after an attempt ended (no ack in time, a failure): the next best
    agent then answers, which is the market working, and a choice that differs from the offline one."""
    failures: dict[str, int]
    seconds: float
    matches: bool


class ModelsBenchResult(msgspec.Struct, kw_only=True):
    models: list[str]
    prices_micros: dict[str, int]
    offline: ModelsReport
    live: list[LivePoint]
    seconds: float


def _market_view(query: Query) -> Query:
    """What the requester's predictor sees of the query in the market: text and kind, no category."""
    return Query(text=query.text, kind=query.kind)


def agent_prices(matrix: OutcomeMatrix) -> np.ndarray:
    """Each model's flat price per task: its mean cost per query, rounded, at least 1 micro-USD."""
    return np.maximum(1, np.round(matrix.cost_per_query())).astype(np.int64)


def _records(bench: ModelsBench) -> list[Outcome]:
    if bench.log is not None:
        return read_outcomes(bench.log)
    world = synthetic_world(bench.world_models, seed=bench.world_seed)
    return world.outcomes(bench.queries, seed=bench.seed)


def _tier(rank: float) -> Tier:
    return Tier.DEVICE if rank < 1 / 3 else Tier.EDGE if rank < 2 / 3 else Tier.CLOUD


def _live_lambdas(report: ModelsReport, wanted: Sequence[float]) -> list[float]:
    if wanted:
        return list(wanted)
    target = report.best_single.cost_per_query_micros
    picked: list[float] = []
    for cost in (target, target / 3):
        best = min(
            report.curve, key=lambda p: (abs(math.log(max(p.cost_per_query_micros, 1e-9) / cost)), p.lambda_)
        )
        if best.lambda_ not in picked:
            picked.append(best.lambda_)
    return picked


async def _live(
    mesh: ReplayMesh, table: OutcomeMatrix, market: MarketPlans, lam: float, concurrency: int
) -> LivePoint:
    expected = market.choose(lam)
    rows = np.arange(len(table))
    started = time.perf_counter()
    picked = np.full(len(table), -1)
    paid = np.zeros(len(table), dtype=np.int64)
    failures: dict[str, int] = {}
    policy = Policy(lambda_price=lam, mu_latency=0.0)
    reawards = mesh.requester.stats.reawards
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        query = table.queries[i]
        async with limiter:
            try:
                outcome = await mesh.ask(
                    [ChatMessage(role=Role.USER, content=query.text)],
                    tier=None,
                    kind=query.kind,
                    est_input_tokens=0,
                    max_output_tokens=TASK_TOKENS,
                    policy=policy,
                )
            except AccordError as exc:
                reason = str(getattr(getattr(exc, "reason", None), "value", None) or type(exc).__name__)
                failures[reason] = failures.get(reason, 0) + 1
                return
        model = outcome.attestation.statement.model
        if not outcome.attestation.output_checked or model not in table.models:
            failures["unattested"] = failures.get("unattested", 0) + 1
            return
        picked[i] = table.models.index(model)
        paid[i] = outcome.price_micros

    async with anyio.create_task_group() as tg:
        for i in range(len(table)):
            tg.start_soon(one, i)
    done = picked >= 0
    accuracy = float(table.quality[rows[done], picked[done]].mean()) if done.any() else math.nan
    expected_accuracy = float(table.quality[rows, expected].mean())
    expected_paid = int(market.prices[expected].sum())
    mismatches = int((picked[done] != expected[done]).sum())
    return LivePoint(
        lambda_=lam,
        queries=int(done.sum()),
        expected_accuracy=expected_accuracy,
        accuracy=accuracy,
        expected_paid_micros=expected_paid,
        paid_micros=int(paid.sum()),
        choice_mismatches=mismatches,
        reawards=mesh.requester.stats.reawards - reawards,
        failures=failures,
        seconds=time.perf_counter() - started,
        matches=not failures and mismatches == 0 and int(paid.sum()) == expected_paid,
    )


async def run_models_bench(bench: ModelsBench, console: Console) -> ModelsBenchResult:
    """Run the benchmark of the module docstring, printing as it goes."""
    started = time.perf_counter()
    records = _records(bench)
    models = parse_models(bench.models, {r.model for r in records})
    full = OutcomeMatrix.from_outcomes(records, models)
    folds = fold_ids(full, bench.folds, bench.seed)
    complete = np.flatnonzero(full.observed.all(axis=1))
    table = full.take(complete)
    prices = agent_prices(full)
    console.print(f"{len(table)} queries with an outcome of each of {len(models)} models; {bench.folds} folds")
    began = time.perf_counter()
    predictors, rows, plans = [], [], []
    for fold in range(bench.folds):
        predictor = LearnedPredictor(seed=bench.seed)
        predictor.fit_matrix(full.take(np.flatnonzero(folds != fold)))
        held_out = np.flatnonzero(folds[complete] == fold)
        predictors.append(predictor)
        rows.append(held_out)
        plans.append(predictor.plan([_market_view(table.queries[int(i)]) for i in held_out]))
    console.print(f"cross-fitted {bench.folds} predictors in {time.perf_counter() - began:.1f}s")
    market = MarketPlans(rows=rows, plans=plans, prices=prices, size=len(table))
    priced = OutcomeMatrix(
        models=table.models,
        query_ids=table.query_ids,
        queries=table.queries,
        quality=table.quality,
        cost=np.broadcast_to(prices.astype(np.float64), table.quality.shape).copy(),
    )
    report = evaluate_chooser(priced, market, router="predictor in the market", note="cross-fitted, mesh prices")
    for out in models_tables(report):
        console.print(out)
    for line in models_summary(report):
        console.print("  " + line)
    if bench.plot_dir is not None:
        bench.plot_dir.mkdir(parents=True, exist_ok=True)
        path = plot_models_report(
            report, bench.plot_dir / "routing_models.png", title="the mesh's curve (offline)"
        )
        console.print(f"  plot: {path}")
    fold_of = {query_key(q.text): int(folds[i]) for i, q in enumerate(full.queries)}
    accuracy = full.accuracy()
    order = np.argsort(prices, kind="stable")
    tiers = [
        TierAgents(
            _tier(rank / max(1, len(models) - 1)),
            models[j],
            0,
            int(prices[j]) * 1000 // TASK_TOKENS,
            quality=float(accuracy[j]),
            tokens_per_s=10_000.0,
            name=f"agent-{rank:02d}",
        )
        for rank, j in enumerate(order.tolist())
    ]
    log = OutcomeLog(r for r in records if r.model in models)
    live: list[LivePoint] = []
    kinds = sorted({q.kind for q in table.queries})
    config = msgspec.structs.replace(BENCH_REQUESTER_CONFIG, shortlist_k=len(tiers))
    async with replay_mesh(
        log,
        tiers,
        concurrency=bench.concurrency,
        kinds=kinds,
        seed=bench.seed,
        requester_config=config,
        predictor=FoldPredictor(predictors, fold_of),
    ) as mesh:
        console.print(
            f"mesh up: nats-server pid {mesh.server.pid}, {len(mesh.agents)} replay agents, one per model"
        )
        for lam in _live_lambdas(report, bench.lambdas):
            point = await _live(mesh, table, market, lam, bench.concurrency)
            live.append(point)
    console.print(_live_table(live))
    return ModelsBenchResult(
        models=list(models),
        prices_micros={m: int(prices[j]) for j, m in enumerate(models)},
        offline=report,
        live=live,
        seconds=time.perf_counter() - started,
    )


def _live_table(points: Sequence[LivePoint]) -> Table:
    out = Table(title="live: the same queries through the market at two lambdas", title_justify="left")
    for column in ("lambda", "queries", "accuracy (offline -> live)", "paid $ (offline -> live)", "other model",
                   "re-awards", "failures", "time", "matches"):  # fmt: skip
        out.add_column(column, justify="right")
    for p in points:
        out.add_row(
            f"{p.lambda_:,.4g}",
            str(p.queries),
            f"{p.expected_accuracy:.2%} -> {p.accuracy:.2%}",
            f"{p.expected_paid_micros / 1e6:.4f} -> {p.paid_micros / 1e6:.4f}",
            str(p.choice_mismatches),
            str(p.reawards),
            str(sum(p.failures.values())),
            f"{p.seconds:.1f}s",
            "[green]yes[/green]" if p.matches else "[red]NO[/red]",
        )
    return out
