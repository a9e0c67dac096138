"""Outcome records built from mesh answers, operating points, and live routing over an in-memory asker.

The asker here stands in for a mesh (no sockets): it answers from the workload's replay log as the tier's model
and charges what a first-price market would (the bid's price for ``est_input_tokens`` and ``max_output_tokens``).
The real mesh runs in tests/integration/test_bench_routing.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from accord.backends.replay import NO_TEXT_MARKER, OutcomeLog
from accord.bench.data.workload import (
    BenchQuery,
    Recorded,
    per_1k,
    synthetic_workload,
    workload_from_outcomes,
)
from accord.bench.evaluation.crossfit import run_suite
from accord.bench.live import (
    MeshAnswer,
    MeshOutcomeError,
    TurnAnswer,
    ask_query,
    build_outcome,
    cascade_live,
    collect,
    operating_point,
    route_live,
    text_matches,
)
from accord.bench.routing import compare_tables, live_points
from accord.protocol.messages import Attestation, ChatMessage, ReasonCode, Result, Role, Tier
from accord.routing.base import RouterError
from accord.routing.records import Outcome
from accord.routing.table import PairTable
from accord.runtime.requester import TaskFailed, TaskOutcome
from accord.security import Certificate, VerifiedAttestation

WEAK, STRONG = "weak-m", "strong-m"
PRICES = {WEAK: (600, 600), STRONG: (10_000, 30_000)}


def turn(answer: str, model: str, *, price: int = 10, latency: float = 20.4, attested: bool = True) -> TurnAnswer:
    return TurnAnswer(
        answer=answer,
        model=model,
        agent="device" if model == WEAK else "cloud",
        price_micros=price,
        latency_ms=latency,
        input_tokens=7,
        output_tokens=3,
        attested=attested,
    )


def bench_query(*, turns: int = 1, score: bool = False, texts: bool = True) -> BenchQuery:
    prompts = tuple(f"question part {i}" for i in range(turns))

    def truth(model: str, ok: bool, value: float) -> Outcome:
        if score:
            return Outcome(
                query_id="q1", prompt=prompts[0], model=model, score=value, score_max=10.0, category="c"
            )
        return Outcome(query_id="q1", prompt=prompts[0], model=model, correct=ok, category="c")

    return BenchQuery(
        query_id="q1",
        kind="math",
        category="c",
        turns=prompts,
        truth={WEAK: truth(WEAK, False, 6.5), STRONG: truth(STRONG, True, 9.0)},
        recorded={
            m: tuple(Recorded(f"{m} says {i}" if texts else None, 3) for i in range(turns)) for m in (WEAK, STRONG)
        },
    )


# --- build_outcome --------------------------------------------------------------------------------------------
def test_outcome_takes_the_attested_models_recorded_quality_and_the_paid_price() -> None:
    query = bench_query()
    weak = build_outcome(MeshAnswer(query, Tier.DEVICE, (turn("weak-m says 0", WEAK, price=12),)))
    strong = build_outcome(MeshAnswer(query, Tier.CLOUD, (turn("strong-m says 0", STRONG, price=345),)))
    assert (weak.model, weak.correct, weak.quality, weak.cost_micros) == (WEAK, False, 0.0, 12)
    assert (strong.model, strong.correct, strong.quality, strong.cost_micros) == (STRONG, True, 1.0, 345)
    assert weak.response == "weak-m says 0" and weak.source == "mesh" and weak.agent == "device"
    assert (weak.query_id, weak.kind, weak.category, weak.latency_ms) == ("q1", "math", "c", 20)


def test_multi_turn_outcome_sums_price_latency_and_tokens_and_keeps_the_first_answer() -> None:
    query = bench_query(turns=2, score=True)
    answer = MeshAnswer(
        query,
        Tier.CLOUD,
        (turn("strong-m says 0", STRONG, price=100, latency=10.2), turn("strong-m says 1", STRONG, price=250)),
    )
    record = build_outcome(answer)
    assert (record.score, record.score_max, record.quality) == (9.0, 10.0, 9.0)
    assert (record.cost_micros, record.latency_ms, record.input_tokens, record.output_tokens) == (350, 31, 14, 6)
    assert record.response == "strong-m says 0" and record.prompt == "question part 0"


def test_a_replayed_answer_without_text_has_no_response() -> None:
    query = bench_query(texts=False)
    answer = MeshAnswer(query, Tier.DEVICE, (turn(NO_TEXT_MARKER, WEAK),))
    assert build_outcome(answer).response is None
    assert answer.first_answer is None
    assert text_matches(answer)
    assert not text_matches(MeshAnswer(query, Tier.DEVICE, (turn("some text", WEAK),)))


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (MeshAnswer(bench_query(), Tier.DEVICE, (), failure="no_bids"), "failed"),
        (MeshAnswer(bench_query(turns=2), Tier.DEVICE, (turn("a", WEAK),)), "failed"),
        (MeshAnswer(bench_query(), Tier.DEVICE, (turn("a", WEAK, attested=False),)), "unattested"),
        (MeshAnswer(bench_query(turns=2), Tier.DEVICE, (turn("a", WEAK), turn("b", STRONG))), "model_changed"),
        (MeshAnswer(bench_query(), Tier.DEVICE, (turn("a", "other-model"),)), "unknown_model"),
    ],
)
def test_answers_that_cannot_become_records(answer: MeshAnswer, reason: str) -> None:
    with pytest.raises(MeshOutcomeError) as info:
        build_outcome(answer)
    assert info.value.reason == reason


def test_text_matches_compares_every_turn_with_what_the_attested_model_recorded() -> None:
    query = bench_query(turns=2)
    good = MeshAnswer(query, Tier.CLOUD, (turn("strong-m  says 0", STRONG), turn("strong-m says 1\n", STRONG)))
    assert text_matches(good)  # whitespace-normalised
    swapped = MeshAnswer(query, Tier.CLOUD, (turn("weak-m says 0", STRONG), turn("strong-m says 1", STRONG)))
    assert not text_matches(swapped)


# --- asking through a (fake) mesh -----------------------------------------------------------------------------
def task_outcome(answer: str, model: str, price: int, *, checked: bool = True) -> TaskOutcome:
    statement = Attestation(
        id="0" * 32,
        sender="A",
        ts=1,
        task_id="t" * 32,
        attempt=1,
        agent="A",
        requester="R",
        prompt_digest="0" * 64,
        award_digest="0" * 64,
        output_digest="0" * 64,
        model=model,
        backend="replay",
    )
    cert = Certificate(
        serial=1, agent_id="A", name=f"agent-{model}", tier=Tier.CLOUD, region="x", not_before_ns=0, not_after_ns=1
    )
    result = Result(
        id="1" * 32, sender="A", ts=1, task_id="t" * 32, attempt=1, award_id="2" * 32, model=model, output=answer
    )
    verified = VerifiedAttestation(
        statement=statement, signer="A", certificate=cert, output_digest="", output_checked=checked, payload=b""
    )
    return TaskOutcome(
        task_id="t" * 32,
        answer=answer,
        agent_id="A",
        model=model,
        price_micros=price,
        latency_ms=5.0,
        attempt=1,
        result=result,
        attestation=verified,
    )


class FakeMesh:
    """Answers from a replay log as the tier's model, priced as a first-price bid; records every call."""

    def __init__(self, log: OutcomeLog, models: dict[Tier, str], prices: dict[str, tuple[int, int]]) -> None:
        self.log = log
        self.models = models
        self.prices = prices
        self.calls: list[tuple[Tier | None, list[ChatMessage], int | None, int]] = []
        self.fail_prompts: set[str] = set()

    async def ask(
        self,
        messages: Sequence[ChatMessage],
        *,
        tier: Tier | None,
        kind: str = "chat",
        est_input_tokens: int | None = None,
        max_output_tokens: int = 256,
    ) -> TaskOutcome:
        assert tier is not None
        self.calls.append((tier, list(messages), est_input_tokens, max_output_tokens))
        prompt = messages[-1].content
        if prompt in self.fail_prompts:
            raise TaskFailed("t" * 32, ReasonCode.NO_BIDS)
        model = self.models[tier]
        record = self.log.lookup(prompt, model)
        assert record is not None, prompt
        text = record.response if record.response is not None else NO_TEXT_MARKER
        p_in, p_out = self.prices[model]
        price = -(-(est_input_tokens or 0) * p_in // 1000) - (-max_output_tokens * p_out // 1000)
        return task_outcome(text, model, price)


def two_turn_workload() -> tuple[OutcomeLog, BenchQuery]:
    query = bench_query(turns=2)
    log = OutcomeLog()
    for model in (WEAK, STRONG):
        for i, prompt in enumerate(query.turns):
            log.add(
                Outcome(
                    query_id=query.query_id, prompt=prompt, model=model, response=f"{model} says {i}", turn=i + 1
                )
            )
    return log, query


@pytest.mark.asyncio
async def test_ask_query_sends_each_turn_with_the_history_and_prices_it_for_the_recorded_answer() -> None:
    log, query = two_turn_workload()
    mesh = FakeMesh(log, {Tier.DEVICE: WEAK, Tier.CLOUD: STRONG}, PRICES)
    answer = await ask_query(mesh, query, Tier.CLOUD, model=STRONG)
    assert answer.failure is None and answer.tasks == 2
    assert [t.answer for t in answer.turns] == ["strong-m says 0", "strong-m says 1"]
    (_, first, est1, out1), (tier2, second, est2, out2) = mesh.calls
    assert [m.content for m in first] == ["question part 0"]
    assert [(m.role, m.content) for m in second] == [
        (Role.USER, "question part 0"),
        (Role.ASSISTANT, "strong-m says 0"),
        (Role.USER, "question part 1"),
    ]
    assert tier2 is Tier.CLOUD and (out1, out2) == (3, 3)
    assert est1 == math.ceil(len("question part 0") / 4)
    assert est2 == math.ceil(len("question part 0question part 1strong-m says 0") / 4)
    assert answer.turns[0].model == STRONG and answer.turns[0].agent == f"agent-{STRONG}"


@pytest.mark.asyncio
async def test_a_failed_task_ends_the_query_with_its_reason() -> None:
    log, query = two_turn_workload()
    mesh = FakeMesh(log, {Tier.DEVICE: WEAK, Tier.CLOUD: STRONG}, PRICES)
    mesh.fail_prompts.add("question part 1")
    answer = await ask_query(mesh, query, Tier.DEVICE, model=WEAK)
    assert (answer.failure, answer.tasks, len(answer.turns)) == ("no_bids", 2, 1)
    assert (await ask_query(mesh, query, Tier.DEVICE, model="nobody")).failure == "unknown_model"


def test_an_unchecked_attestation_is_not_attested() -> None:
    assert not TurnAnswer.from_outcome(task_outcome("x", WEAK, 1, checked=False), input_tokens=1).attested
    assert TurnAnswer.from_outcome(task_outcome("x", WEAK, 1), input_tokens=1).attested


# --- operating points -----------------------------------------------------------------------------------------
def small_table() -> PairTable:
    # strong gains on q0 and q2, loses on q3; weak cost 1, strong cost 10 per query
    records = []
    for i, (w, s) in enumerate([(0, 1), (1, 1), (0, 1), (1, 0)]):
        records.append(Outcome(query_id=f"q{i}", prompt=f"p{i}", model=WEAK, correct=bool(w), cost_micros=1))
        records.append(Outcome(query_id=f"q{i}", prompt=f"p{i}", model=STRONG, correct=bool(s), cost_micros=10))
    return PairTable.from_outcomes(records, WEAK, STRONG)


def test_operating_point_is_the_first_curve_point_reaching_the_target() -> None:
    table = small_table()  # weak 0.5, strong 0.75
    scores = np.asarray([0.9, 0.1, 0.5, 0.3])
    point = operating_point(table, scores, router="r", target=0.5)
    assert point is not None
    # one strong call (q0): quality 0.75 -> PGR 1.0 >= 0.5
    assert (point.strong_calls, point.thresholds, point.quality, point.share) == (1, (0.9,), 0.75, 0.25)
    assert point.cost_micros == pytest.approx(1 * 10 + 3 * 1)
    cascade = operating_point(table, scores, router="c", target=0.5, cascade=True)
    assert cascade is not None and cascade.cost_micros == pytest.approx(4 * 1 + 10)
    assert operating_point(table, scores, router="r", target=2.5) is None  # the peak is PGR 2.0


def test_operating_point_with_tied_scores_keeps_whole_ties() -> None:
    table = small_table()
    scores = np.asarray([0.5, 0.5, 0.5, 0.1])  # q0..q2 tie: all or none of them
    point = operating_point(table, scores, router="r", target=0.5)
    assert point is not None and point.strong_calls == 3 and point.thresholds == (0.5,)
    assert point.quality == pytest.approx(1.0)


def test_workload_builders() -> None:
    assert per_1k({"m": (0.6, 30.0)}) == {"m": (600, 30_000)}
    workload = synthetic_workload(50, seed=3)
    assert len(workload) == 50 and {workload.weak, workload.strong} <= set(workload.prices)
    picked = workload.limit(10)
    assert [q.query_id for q in picked.queries] == [f"q{5 * i}" for i in range(10)]
    assert workload.limit(None) is workload and workload.limit(500) is workload
    with pytest.raises(RouterError):
        workload_from_outcomes("x", workload.records(), prices={workload.weak: (1, 1)})


def test_compare_tables_counts_quality_differences_and_cost_drift() -> None:
    table = small_table()
    records = [
        Outcome(query_id=q, prompt=f"p{q[1]}", model=m, correct=bool(c), cost_micros=cost)
        for q, m, c, cost in [
            ("q0", WEAK, 0, 1), ("q0", STRONG, 1, 12), ("q1", WEAK, 1, 1), ("q1", STRONG, 1, 10),
            ("q2", WEAK, 1, 1), ("q2", STRONG, 1, 10), ("q3", WEAK, 1, 1), ("q3", STRONG, 0, 10),
        ]
    ]  # fmt: skip
    other = PairTable.from_outcomes(records, WEAK, STRONG)
    assert compare_tables(table, table) == (0, 0.0)
    assert compare_tables(table, other) == (1, 2.0)  # q2's weak outcome differs; q0's strong cost by 2
    assert compare_tables(table.take([0, 1, 2]), table)[0] == 1  # q3 missing


# --- collect and live routing over the fake mesh --------------------------------------------------------------
@pytest.mark.asyncio
async def test_collect_then_live_routing_reproduces_the_offline_curve_points() -> None:
    workload = synthetic_workload(120, seed=1)
    mesh = FakeMesh(workload.log, {Tier.DEVICE: workload.weak, Tier.CLOUD: workload.strong}, workload.prices)
    tiers = {Tier.DEVICE: workload.weak, Tier.CLOUD: workload.strong}
    done: list[int] = []
    collection = await collect(mesh, workload, tiers, concurrency=8, on_done=lambda: done.append(1))
    assert len(done) == 240 and collection.tasks == 240 and not collection.failures
    assert collection.text_mismatches == 0 and len(collection.records) == 240
    table = collection.table(workload.weak, workload.strong)
    reference = PairTable.from_outcomes(workload.records(), workload.weak, workload.strong)
    assert compare_tables(table, reference)[0] == 0
    run = run_suite(table, ["subject", "cascade"], k=3, seed=0)
    points = dict(live_points(run))
    assert set(points) == {"subject", "cascade"}
    subject, cascade = points["subject"], points["cascade"]
    assert subject is not None and cascade is not None and cascade.cascade and cascade.target == 0.8
    mesh.calls.clear()
    routed = await route_live(mesh, workload, table, run.fits["subject"], subject, concurrency=8)
    assert routed.matches() and routed.score_mismatches == 0 and routed.tasks == 120
    assert sum(1 for tier, *_ in mesh.calls if tier is Tier.CLOUD) == subject.strong_calls
    mesh.calls.clear()
    cascaded = await cascade_live(mesh, workload, table, run.fits["cascade"], cascade, concurrency=8)
    assert cascaded.matches() and cascaded.score_mismatches == 0
    assert sum(1 for tier, *_ in mesh.calls if tier is Tier.DEVICE) == 120
    assert sum(1 for tier, *_ in mesh.calls if tier is Tier.CLOUD) == cascade.strong_calls == cascaded.strong_calls
    assert cascaded.tasks == 120 + cascade.strong_calls


@pytest.mark.asyncio
async def test_live_run_counts_failures_and_then_does_not_match() -> None:
    workload = synthetic_workload(40, seed=2)
    mesh = FakeMesh(workload.log, {Tier.DEVICE: workload.weak, Tier.CLOUD: workload.strong}, workload.prices)
    collection = await collect(mesh, workload, {Tier.DEVICE: workload.weak, Tier.CLOUD: workload.strong})
    table = collection.table(workload.weak, workload.strong)
    run = run_suite(table, ["subject"], k=2, seed=0)
    fit = run.fits["subject"]
    point = operating_point(table, fit.scores, router="subject", target=0.5, folds=fit.folds)
    assert point is not None and len(point.thresholds) == 2
    mesh.fail_prompts.add(workload.queries[0].prompt)
    live = await route_live(mesh, workload, table, run.fits["subject"], point)
    assert live.failures == {"no_bids": 1} and live.queries == 39 and not live.matches()
