"""Routing over a live mesh: outcome records built from what the market returned, and routers deciding per query.

Three steps, each over anything that can ``ask`` a tier (:class:`Asker`; :class:`accord.bench.ReplayMesh` is
one):

1. :func:`collect`: every query of a workload through the market to each tier. A query's turns go one task each
   (turn ``i`` carries the earlier turns and the answers the mesh gave). What comes back is a :class:`MeshAnswer`
   per (query, tier).
2. :func:`build_outcome`: the :class:`~accord.routing.records.Outcome` record of one :class:`MeshAnswer`.
   The model is the one the result's verified attestation names (every turn the same); the quality is the
   recorded signal of (query, that model) (replayed MMLU answers carry no text, so it is always looked up);
   cost = the prices actually paid; latency = the measured time from submit to the accepted result.
3. :func:`route_live` / :func:`cascade_live`: every query once more through the mesh with a cross-fitted router
   deciding per query (each query scored by the router of its fold, which never saw it) at an operating point
   read off the offline curve (:func:`operating_point`); a cascade first asks the weak tier, scores (query,
   answer) and escalates when the score reaches the threshold.

Pricing: a bid is priced at the task's ``est_input_tokens`` and ``max_output_tokens``. The harness sets them to
the set's estimate of the prompt (``ceil(chars / 4)`` of the conversation so far) and to the length of the
answer the tier's model recorded, so what the market charges is the set's cost estimate for that answer (up to
rounding each part up separately).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import numpy as np

from accord.backends.replay import NO_TEXT_MARKER
from accord.bench.data.workload import BenchQuery, Workload
from accord.bench.evaluation.crossfit import CrossFit
from accord.bench.evaluation.metrics import pgr, routing_curve
from accord.errors import AccordError
from accord.protocol.messages import ChatMessage, Role, Tier
from accord.protocol.pricing import estimate_tokens
from accord.routing.base import FloatArray, RouterError
from accord.routing.records import Outcome, normalize_prompt
from accord.routing.table import PairTable
from accord.runtime.requester import TaskOutcome

__all__ = [
    "Asker",
    "Collection",
    "LiveRun",
    "MeshAnswer",
    "MeshOutcomeError",
    "OperatingPoint",
    "TurnAnswer",
    "ask_query",
    "build_outcome",
    "cascade_live",
    "collect",
    "operating_point",
    "route_live",
    "text_matches",
]

MESH_SOURCE = "mesh"


class Asker(Protocol):
    """Submits one task to one tier of a mesh and returns its verified outcome (raises on failure)."""

    async def ask(
        self,
        messages: Sequence[ChatMessage],
        *,
        tier: Tier | None,
        kind: str = "chat",
        est_input_tokens: int | None = None,
        max_output_tokens: int = 256,
    ) -> TaskOutcome: ...


class MeshOutcomeError(AccordError):
    """A mesh answer cannot become an outcome record; ``reason``: ``failed``, ``unattested``, ``model_changed``
    or ``unknown_model``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class TurnAnswer:
    """One accepted result, as the requester verified it."""

    answer: str
    model: str
    """The model the result's attestation names."""
    agent: str
    """The answering agent's certified name."""
    price_micros: int
    latency_ms: float
    input_tokens: int
    """What the task was priced at (the requester's estimate)."""
    output_tokens: int
    """What the agent attested it produced."""
    attested: bool
    """The attestation verified against this output and names the same model as the result."""

    @classmethod
    def from_outcome(cls, outcome: TaskOutcome, *, input_tokens: int) -> TurnAnswer:
        statement = outcome.attestation.statement
        return cls(
            answer=outcome.answer,
            model=statement.model,
            agent=outcome.attestation.certificate.name,
            price_micros=outcome.price_micros,
            latency_ms=outcome.latency_ms,
            input_tokens=input_tokens,
            output_tokens=statement.usage.output_tokens,
            attested=outcome.attestation.output_checked and statement.model == outcome.model,
        )


@dataclass(frozen=True)
class MeshAnswer:
    """What the mesh returned for every turn of one query sent to one tier (or why it stopped)."""

    query: BenchQuery
    tier: Tier
    turns: tuple[TurnAnswer, ...]
    failure: str | None = None
    tasks: int = 0
    """Tasks submitted for it (a failed one included)."""

    @property
    def model(self) -> str | None:
        return self.turns[0].model if self.turns else None

    @property
    def price_micros(self) -> int:
        return sum(t.price_micros for t in self.turns)

    @property
    def first_answer(self) -> str | None:
        """The first turn's answer text (None for a replayed record without text)."""
        if not self.turns or self.turns[0].answer == NO_TEXT_MARKER:
            return None
        return self.turns[0].answer


async def ask_query(asker: Asker, query: BenchQuery, tier: Tier, *, model: str) -> MeshAnswer:
    """Send every turn of ``query`` to ``tier``, each priced for ``model``'s recorded answer (see the module
    docstring); a failed task ends the query with ``failure`` set to its reason."""
    messages: list[ChatMessage] = []
    turns: list[TurnAnswer] = []
    recorded = query.recorded.get(model)
    if recorded is None or len(recorded) != len(query.turns):
        return MeshAnswer(query, tier, (), failure="unknown_model")
    for i, turn in enumerate(query.turns):
        messages.append(ChatMessage(role=Role.USER, content=turn))
        est = estimate_tokens("".join(query.turns[: i + 1]) + "".join(t.answer for t in turns))
        try:
            outcome = await asker.ask(
                messages,
                tier=tier,
                kind=query.kind,
                est_input_tokens=est,
                max_output_tokens=recorded[i].output_tokens,
            )
        except AccordError as exc:
            reason = getattr(exc, "reason", None)
            failure = str(getattr(reason, "value", reason) or exc)
            return MeshAnswer(query, tier, tuple(turns), failure=failure, tasks=i + 1)
        turns.append(TurnAnswer.from_outcome(outcome, input_tokens=est))
        messages.append(ChatMessage(role=Role.ASSISTANT, content=outcome.answer))
    return MeshAnswer(query, tier, tuple(turns), tasks=len(turns))


def build_outcome(answer: MeshAnswer) -> Outcome:
    """The outcome record of one query answered through the mesh (see the module docstring).

    Raises :class:`MeshOutcomeError` when the query failed, a result was not attested, the turns were answered
    by different models, or the attested model has no recorded outcome for the query.
    """
    query = answer.query
    if answer.failure is not None or len(answer.turns) != len(query.turns):
        raise MeshOutcomeError("failed", answer.failure or "missing turns")
    if not all(t.attested for t in answer.turns):
        raise MeshOutcomeError("unattested", query.query_id)
    models = {t.model for t in answer.turns}
    if len(models) != 1:
        raise MeshOutcomeError("model_changed", f"{query.query_id}: {sorted(models)}")
    model = models.pop()
    truth = query.truth.get(model)
    if truth is None:
        raise MeshOutcomeError("unknown_model", f"{query.query_id}: no recorded outcome of {model}")
    return Outcome(
        query_id=query.query_id,
        prompt=query.prompt,
        model=model,
        agent=answer.turns[0].agent,
        kind=query.kind,
        category=query.category,
        correct=truth.correct,
        score=truth.score,
        score_max=truth.score_max,
        response=answer.first_answer,
        cost_micros=answer.price_micros,
        latency_ms=round(sum(t.latency_ms for t in answer.turns)),
        input_tokens=sum(t.input_tokens for t in answer.turns),
        output_tokens=sum(t.output_tokens for t in answer.turns),
        source=MESH_SOURCE,
    )


def text_matches(answer: MeshAnswer) -> bool:
    """Whether every turn's answer is the text the attested model recorded (whitespace-normalised); a record
    without text must come back as the replay's no-text marker."""
    recorded = answer.query.recorded.get(answer.model or "")
    if recorded is None or len(recorded) < len(answer.turns):
        return False
    for turn, record in zip(answer.turns, recorded[: len(answer.turns)], strict=True):
        expected = record.response if record.response is not None else NO_TEXT_MARKER
        if normalize_prompt(turn.answer) != normalize_prompt(expected):
            return False
    return True


# --- running many queries -------------------------------------------------------------------------------------
async def _pool(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run ``jobs`` with at most ``concurrency`` at once (a fixed set of workers taking the next job)."""
    position = iter(range(len(jobs)))

    async def worker() -> None:
        for i in position:
            await jobs[i]()

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, min(concurrency, len(jobs)))):
            tg.start_soon(worker)


@dataclass
class Collection:
    """The outcome of :func:`collect`: every answer, the records built from them and what went wrong."""

    answers: list[MeshAnswer]
    records: list[Outcome]
    failures: Counter[str] = field(default_factory=Counter)
    """By reason: failed tasks (their protocol reason), and answers that could not become records."""
    text_mismatches: int = 0
    tasks: int = 0
    seconds: float = 0.0

    def table(self, weak: str, strong: str) -> PairTable:
        return PairTable.from_outcomes(self.records, weak, strong)


async def collect(
    asker: Asker,
    workload: Workload,
    tiers: Mapping[Tier, str],
    *,
    concurrency: int = 64,
    on_done: Callable[[], None] | None = None,
) -> Collection:
    """Every query of ``workload`` to every tier in ``tiers`` (tier -> the model its agents serve); records in
    workload order, one per (query, tier) that succeeded."""
    started = time.perf_counter()
    pairs = [(q, tier) for q in workload.queries for tier in tiers]
    answers: list[MeshAnswer | None] = [None] * len(pairs)

    def job(i: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            query, tier = pairs[i]
            answers[i] = await ask_query(asker, query, tier, model=tiers[tier])
            if on_done is not None:
                on_done()

        return run

    await _pool([job(i) for i in range(len(pairs))], concurrency)
    done = [a for a in answers if a is not None]
    collection = Collection(answers=done, records=[], seconds=0.0)
    for answer in done:
        collection.tasks += answer.tasks
        try:
            collection.records.append(build_outcome(answer))
        except MeshOutcomeError as exc:
            collection.failures[answer.failure or exc.reason] += 1
            continue
        if not text_matches(answer):
            collection.text_mismatches += 1
    collection.seconds = time.perf_counter() - started
    return collection


# --- live routing ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatingPoint:
    """A router's point on its offline curve: route ``score >= thresholds[fold]`` to the strong tier, where
    ``fold`` is the fold whose router scores the query (one fold, 0, for a router fitted once)."""

    router: str
    target: float
    """The PGR the point is the first to reach in every fold (0.5 for CPT(50%))."""
    thresholds: tuple[float, ...]
    strong_calls: int
    queries: int
    quality: float
    """Mean quality the curve predicts at this point."""
    cost_micros: float
    """Total cost the curve predicts (cascade: the weak call of every query plus the escalated strong calls)."""
    cascade: bool = False

    @property
    def share(self) -> float:
        return self.strong_calls / self.queries

    def threshold_for(self, fold: int) -> float:
        return self.thresholds[fold]


def operating_point(
    table: PairTable,
    scores: FloatArray,
    *,
    router: str,
    target: float,
    cascade: bool = False,
    folds: np.ndarray | None = None,
) -> OperatingPoint | None:
    """The first point of the router's exact curve whose PGR reaches ``target``, with the threshold that gives
    it (the lowest score routed to the strong model); None when the curve never reaches the target.

    With ``folds`` (cross-fitted scores) the point is found in each fold separately, on its rows, with its own
    weak and strong means and its own threshold (scores of different folds' routers are not on one scale), and
    the folds' points are summed: the live counterpart of the per-fold metrics."""
    fold_of = np.zeros(len(table), dtype=np.int64) if folds is None else np.asarray(folds, dtype=np.int64)
    thresholds: list[float] = []
    calls_total, quality_sum, cost_sum = 0, 0.0, 0.0
    for fold in range(int(fold_of.max()) + 1):
        rows = np.flatnonzero(fold_of == fold)
        part, part_scores = table.take(rows), np.asarray(scores, dtype=np.float64)[rows]
        weak, strong = float(part.q_weak.mean()), float(part.q_strong.mean())
        c_strong = part.c_weak + part.c_strong if cascade else part.c_strong
        curve = routing_curve(part_scores, part.q_weak, part.q_strong, part.c_weak, c_strong)
        hits = np.flatnonzero(pgr(curve.quality, weak, strong) >= target)
        if hits.size == 0:
            return None
        i = int(hits[0])
        n = len(part)
        calls = round(float(curve.share[i]) * n)
        ranked = np.sort(part_scores)[::-1]
        threshold = float(ranked[calls - 1]) if calls > 0 else math.inf
        if int(np.count_nonzero(part_scores >= threshold)) != calls:
            raise RouterError("bad_input", "the threshold does not reproduce the curve point")
        thresholds.append(threshold)
        calls_total += calls
        quality_sum += float(curve.quality[i]) * n
        cost_sum += float(curve.cost[i]) * n
    return OperatingPoint(
        router=router,
        target=target,
        thresholds=tuple(thresholds),
        strong_calls=calls_total,
        queries=len(table),
        quality=quality_sum / len(table),
        cost_micros=cost_sum,
        cascade=cascade,
    )


@dataclass
class LiveRun:
    """One live routing pass over a workload."""

    point: OperatingPoint
    queries: int = 0
    strong_calls: int = 0
    quality_sum: float = 0.0
    paid_micros: int = 0
    tasks: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    score_mismatches: int = 0
    """Queries whose live score differed from their cross-fitted score (the same router on the same input
    must give the same score)."""
    seconds: float = 0.0

    @property
    def quality(self) -> float:
        return self.quality_sum / self.queries if self.queries else math.nan

    @property
    def share(self) -> float:
        return self.strong_calls / self.queries if self.queries else math.nan

    def matches(self, *, tolerance: float = 1e-9) -> bool:
        """The pass reproduced its curve point: same strong calls, quality and total cost, nothing failed."""
        point = self.point
        return (
            not self.failures
            and self.queries == point.queries
            and self.strong_calls == point.strong_calls
            and abs(self.quality - point.quality) <= tolerance * max(1.0, abs(point.quality))
            and abs(self.paid_micros - point.cost_micros) <= 0.5
        )

    def _add(self, outcome: Outcome, paid: int, strong: bool) -> None:
        self.queries += 1
        self.strong_calls += strong
        self.quality_sum += outcome.quality
        self.paid_micros += paid


def _rows(table: PairTable, workload: Workload) -> list[tuple[int, BenchQuery]]:
    index = {qid: i for i, qid in enumerate(table.query_ids)}
    return [(index[q.query_id], q) for q in workload.queries if q.query_id in index]


async def route_live(
    asker: Asker,
    workload: Workload,
    table: PairTable,
    fit: CrossFit,
    point: OperatingPoint,
    *,
    tiers: tuple[Tier, Tier] = (Tier.DEVICE, Tier.CLOUD),
    concurrency: int = 64,
    on_done: Callable[[], None] | None = None,
) -> LiveRun:
    """Each query of ``table`` scored at request time by its fold's router, sent to the strong tier (``tiers[1]``)
    when the score reaches the point's threshold, else to the weak tier."""
    run = LiveRun(point)
    started = time.perf_counter()
    models = {tiers[0]: table.weak, tiers[1]: table.strong}

    def job(row: int, query: BenchQuery) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            score = fit.score(row, query.query())
            run.score_mismatches += not _same(score, float(fit.scores[row]))
            strong = score >= point.threshold_for(int(fit.folds[row]))
            tier = tiers[1] if strong else tiers[0]
            answer = await ask_query(asker, query, tier, model=models[tier])
            run.tasks += answer.tasks
            try:
                outcome = build_outcome(answer)
            except MeshOutcomeError as exc:
                run.failures[answer.failure or exc.reason] += 1
            else:
                run._add(outcome, answer.price_micros, strong)
            if on_done is not None:
                on_done()

        return go

    await _pool([job(row, q) for row, q in _rows(table, workload)], concurrency)
    run.seconds = time.perf_counter() - started
    return run


async def cascade_live(
    asker: Asker,
    workload: Workload,
    table: PairTable,
    fit: CrossFit,
    point: OperatingPoint,
    *,
    tiers: tuple[Tier, Tier] = (Tier.DEVICE, Tier.CLOUD),
    concurrency: int = 64,
    on_done: Callable[[], None] | None = None,
) -> LiveRun:
    """Each query first to the weak tier; its fold's cascade router scores (query, that answer); at or above the
    threshold the query goes on to the strong tier, whose answer is kept. Cost: both calls when escalated."""
    run = LiveRun(point)
    started = time.perf_counter()

    def job(row: int, query: BenchQuery) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            first = await ask_query(asker, query, tiers[0], model=table.weak)
            run.tasks += first.tasks
            try:
                outcome = build_outcome(first)
            except MeshOutcomeError as exc:
                run.failures[first.failure or exc.reason] += 1
                return
            score = fit.score(row, query.query(answer=first.first_answer))
            run.score_mismatches += not _same(score, float(fit.scores[row]))
            paid = first.price_micros
            strong = score >= point.threshold_for(int(fit.folds[row]))
            if strong:
                second = await ask_query(asker, query, tiers[1], model=table.strong)
                run.tasks += second.tasks
                try:
                    outcome = build_outcome(second)
                except MeshOutcomeError as exc:
                    run.failures[second.failure or exc.reason] += 1
                    return
                paid += second.price_micros
            run._add(outcome, paid, strong)
            if on_done is not None:
                on_done()

        return go

    await _pool([job(row, q) for row, q in _rows(table, workload)], concurrency)
    run.seconds = time.perf_counter() - started
    return run


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
