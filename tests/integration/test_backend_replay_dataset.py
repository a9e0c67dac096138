"""The replay backend on the real RouteLLM evaluation logs (vendored; see tests/support/datasets.py)."""

from __future__ import annotations

import csv
import io
import statistics

import pytest

from accord.backends import NO_TEXT_MARKER, CompletionRequest, ReplayBackend, ReplayMissError
from accord.backends.replay import OutcomeLog
from accord.bench.data.routellm import (
    STRONG_MODEL,
    WEAK_MODEL,
    contaminated_prompts,
    load_routellm_log,
    read_routellm,
)
from tests.support.datasets import dataset, evals_files, require_datasets

pytestmark = dataset


def accuracy(log_records: list[float]) -> float:
    return statistics.mean(log_records)


def replay_log(name: str, *, drop_contaminated: bool = True) -> OutcomeLog:
    return read_routellm(name, require_datasets(), drop_contaminated=drop_contaminated).replay_log()


def test_gsm8k_matches_the_dataset_readme() -> None:
    log = replay_log("gsm8k")
    assert len(log.prompts()) == 1307  # 1,319 minus 12 contaminated
    weak = [r.unit_quality for r in log if r.model == WEAK_MODEL]
    strong = [r.unit_quality for r in log if r.model == STRONG_MODEL]
    assert round(accuracy(weak) * 100, 2) == 63.73
    assert round(accuracy(strong) * 100, 2) == 85.77
    assert all(r.response for r in log)
    assert len(replay_log("gsm8k", drop_contaminated=False).prompts()) == 1319


def test_mmlu_and_mt_bench_match_the_dataset_readme() -> None:
    mmlu = replay_log("mmlu")
    assert len(mmlu) == 2 * 14_037
    assert round(accuracy([r.unit_quality for r in mmlu if r.model == WEAK_MODEL]) * 100, 2) == 68.09
    assert round(accuracy([r.unit_quality for r in mmlu if r.model == STRONG_MODEL]) * 100, 2) == 80.59
    assert all(r.response is None and r.source.startswith("mmlu/") for r in mmlu)
    bench = replay_log("mt_bench")
    assert len({r.query_id for r in bench}) == 72
    assert {r.turn for r in bench} == {1, 2}
    assert round(statistics.mean(r.score or 0 for r in bench if r.model == WEAK_MODEL), 3) == 8.281
    assert round(statistics.mean(r.score or 0 for r in bench if r.model == STRONG_MODEL), 3) == 9.212
    assert all(r.response for r in bench)  # answer texts recovered from the judge prompts


@pytest.mark.asyncio
async def test_replay_answers_real_gsm8k_rows_verbatim() -> None:
    files = evals_files()
    with io.StringIO(files.text("gsm8k/gsm8k_responses.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    backend = ReplayBackend(replay_log("gsm8k"), model=WEAK_MODEL)
    dropped = contaminated_prompts(files, "gsm8k")
    checked = 0
    for row in rows[:40]:
        if " ".join(row["prompt"].split()) in dropped:
            with pytest.raises(ReplayMissError):
                await backend.complete(CompletionRequest.from_prompt(row["prompt"]))
            continue
        for model in (WEAK_MODEL, STRONG_MODEL):
            result = await backend.complete(CompletionRequest.from_prompt(row["prompt"], model=model))
            assert result.text == row[f"{model}_response"]
            assert result.metadata["correct"] == (row[model] == "True")
            assert result.quality == (1.0 if row[model] == "True" else 0.0)
            assert result.usage_estimated
            checked += 1
    assert checked >= 70


@pytest.mark.asyncio
async def test_replay_answers_mmlu_with_the_marker_and_mt_bench_with_scores() -> None:
    log = load_routellm_log(require_datasets(), sets=("mmlu", "mt_bench"))
    backend = ReplayBackend(log, model=STRONG_MODEL)
    mmlu_record = next(r for r in log if r.source.startswith("mmlu/") and r.model == STRONG_MODEL)
    mmlu = await backend.complete(CompletionRequest.from_prompt(mmlu_record.prompt))
    assert mmlu.text == NO_TEXT_MARKER
    assert mmlu.metadata["has_text"] is False
    assert mmlu.metadata["correct"] == mmlu_record.correct
    bench_record = next(r for r in log if r.source.startswith("mt_bench/") and r.model == WEAK_MODEL)
    bench = await backend.complete(CompletionRequest.from_prompt(bench_record.prompt, model=WEAK_MODEL))
    assert bench.text == bench_record.response
    assert bench.quality == pytest.approx((bench_record.score or 0) / 10)
    assert bench.metadata["turn"] == bench_record.turn


@pytest.mark.parametrize("name", ["mmlu", "gsm8k", "mt_bench"])
def test_one_read_gives_both_views_of_the_same_queries(name: str) -> None:
    rows = read_routellm(name, require_datasets())
    per_query, per_turn = rows.outcomes(), rows.replay_log()
    assert [r.query_id for r in per_query[::2]] == list(rows.queries)
    assert {r.query_id for r in per_turn} == set(rows.queries)
    first = {(r.query_id, r.model): r for r in per_turn if r.turn in (None, 1)}
    for record in per_query:
        turn = first[(record.query_id, record.model)]
        assert (turn.prompt, turn.response, turn.category) == (record.prompt, record.response, record.category)
