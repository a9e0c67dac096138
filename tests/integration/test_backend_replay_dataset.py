"""The replay backend on the real RouteLLM evaluation logs (../shared/datasets; see tests/support/datasets.py)."""

from __future__ import annotations

import csv
import statistics

import pytest

from accord.backends import NO_TEXT_MARKER, CompletionRequest, ReplayBackend, ReplayMissError
from accord.bench.data.routellm_replay import (
    STRONG_MODEL,
    WEAK_MODEL,
    contaminated_prompts,
    load_gsm8k,
    load_mmlu,
    load_mt_bench,
    load_routellm,
)
from tests.support.datasets import ROUTELLM_EVALS_DIR, dataset, require_datasets

pytestmark = dataset


def accuracy(log_records: list[float | None]) -> float:
    return statistics.mean(q for q in log_records if q is not None)


def test_gsm8k_matches_the_dataset_readme() -> None:
    log = load_gsm8k(require_datasets())
    assert len(log.prompts()) == 1307  # 1,319 minus 12 contaminated
    weak = [r.quality for r in log if r.model == WEAK_MODEL]
    strong = [r.quality for r in log if r.model == STRONG_MODEL]
    assert round(accuracy(weak) * 100, 2) == 63.73
    assert round(accuracy(strong) * 100, 2) == 85.77
    assert all(r.response for r in log)
    assert len(load_gsm8k(require_datasets(), drop_contaminated=False).prompts()) == 1319


def test_mmlu_and_mt_bench_match_the_dataset_readme() -> None:
    mmlu = load_mmlu(require_datasets())
    assert len(mmlu) == 2 * 14_037
    assert round(accuracy([r.quality for r in mmlu if r.model == WEAK_MODEL]) * 100, 2) == 68.09
    assert round(accuracy([r.quality for r in mmlu if r.model == STRONG_MODEL]) * 100, 2) == 80.59
    assert all(r.response is None and r.source.startswith("mmlu/") for r in mmlu)
    bench = load_mt_bench(require_datasets())
    assert len({r.metadata["question_id"] for r in bench}) == 72
    assert round(statistics.mean(r.score or 0 for r in bench if r.model == WEAK_MODEL), 3) == 8.281
    assert round(statistics.mean(r.score or 0 for r in bench if r.model == STRONG_MODEL), 3) == 9.212
    assert all(r.response for r in bench)  # answer texts recovered from the judge prompts


@pytest.mark.asyncio
async def test_replay_answers_real_gsm8k_rows_verbatim() -> None:
    with (ROUTELLM_EVALS_DIR / "gsm8k" / "gsm8k_responses.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    backend = ReplayBackend(load_gsm8k(require_datasets()), model=WEAK_MODEL)
    dropped = contaminated_prompts(ROUTELLM_EVALS_DIR / "gsm8k")
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
    log = load_routellm(require_datasets(), sets=("mmlu", "mt_bench"))
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
    assert bench.metadata["turn"] == bench_record.metadata["turn"]
