"""The replay backend on small outcome logs the tests write themselves (CSV and JSONL) or build from records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import anyio
import msgspec
import pytest

from accord.backends import (
    NO_TEXT_MARKER,
    BackendError,
    BackendErrorReason,
    CompletionRequest,
    Delta,
    OutcomeLog,
    ReplayBackend,
    ReplayMissError,
    load_outcome_log,
)
from accord.protocol.messages import ChatMessage, Role
from accord.protocol.pricing import ResourceModel
from accord.routing.records import Outcome, query_key, read_outcomes, write_outcomes

ROWS = [
    {"prompt": "What is 2+2?", "model": "weak", "response": "5", "correct": "False", "output_tokens": "1"},
    {"prompt": "What is 2+2?", "model": "strong", "response": "4", "correct": "True", "output_tokens": "1"},
    {"prompt": "Capital of  France?\n", "model": "strong", "response": "Paris", "score": "9", "score_max": "10"},
    {"prompt": "Pick A or B.", "model": "weak", "response": "", "correctness": "yes"},
]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = sorted({key for row in rows for key in row})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def log(tmp_path: Path) -> OutcomeLog:
    return load_outcome_log(write_csv(tmp_path / "outcomes.csv", ROWS))


@pytest.mark.asyncio
async def test_answers_with_the_recorded_text_for_the_requested_model(log: OutcomeLog) -> None:
    backend = ReplayBackend(log, model="weak")
    weak = await backend.complete(CompletionRequest.from_prompt("What is 2+2?"))
    strong = await backend.complete(CompletionRequest.from_prompt("What is 2+2?", model="strong"))
    assert (weak.text, weak.model, weak.quality, weak.metadata["correct"]) == ("5", "weak", 0.0, False)
    assert (strong.text, strong.model, strong.quality, strong.metadata["correct"]) == ("4", "strong", 1.0, True)
    assert weak.metadata["source"] == "outcomes"
    assert weak.metadata["has_text"] is True
    assert weak.usage.output_tokens == 1
    assert weak.usage_estimated  # input tokens were not recorded
    assert weak.cost_micros is None
    assert weak.backend == "replay"


@pytest.mark.asyncio
async def test_lookup_normalises_whitespace_and_uses_the_last_user_message(log: OutcomeLog) -> None:
    backend = ReplayBackend(log, model="strong")
    request = CompletionRequest(
        messages=[
            ChatMessage(role=Role.SYSTEM, content="You are terse."),
            ChatMessage(role=Role.USER, content="  Capital of\tFrance? "),
        ]
    )
    result = await backend.complete(request)
    assert result.text == "Paris"
    assert result.quality == pytest.approx(0.9)
    assert result.metadata["score"] == 9.0
    assert result.metadata["score_max"] == 10.0


@pytest.mark.asyncio
async def test_a_missing_prompt_or_model_raises_a_typed_miss(log: OutcomeLog) -> None:
    backend = ReplayBackend(log, model="weak")
    with pytest.raises(ReplayMissError) as caught:
        await backend.complete(CompletionRequest.from_prompt("never asked"))
    assert caught.value.reason is BackendErrorReason.NOT_FOUND
    assert caught.value.reason_code.value == "backend_error"
    assert "never asked" in str(caught.value)
    with pytest.raises(ReplayMissError):
        await backend.complete(CompletionRequest.from_prompt("Capital of France?", model="weak"))


@pytest.mark.asyncio
async def test_a_record_without_text_answers_with_the_marker(log: OutcomeLog) -> None:
    # An empty CSV cell is "no text" only when the column is absent; here the response is "", kept as such.
    backend = ReplayBackend(log, model="weak")
    result = await backend.complete(CompletionRequest.from_prompt("Pick A or B."))
    assert result.text == ""
    assert result.quality == 1.0
    no_text = OutcomeLog([Outcome(query_id="q", prompt="Q?", model="m", correct=False, source="mmlu/x")])
    marker = await ReplayBackend(no_text).complete(CompletionRequest.from_prompt("Q?"))
    assert marker.text == NO_TEXT_MARKER
    assert marker.metadata == {"has_text": False, "source": "mmlu/x", "correct": False}
    assert marker.quality == 0.0


@pytest.mark.asyncio
async def test_jsonl_logs_load_and_round_trip(tmp_path: Path, log: OutcomeLog) -> None:
    path = tmp_path / "copy.jsonl"
    log.write_jsonl(path)
    again = load_outcome_log(path, source="outcomes")
    assert list(again) == list(log)
    lines = [{"prompt": "p1", "model": "m", "response": "r1", "score": 0.25, "tokens": 7}]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    loaded = load_outcome_log(raw)
    record = loaded.lookup("p1", "m")
    assert record is not None
    assert (record.response, record.score, record.output_tokens, record.source) == ("r1", 0.25, 7, "raw")
    assert record.query_id == query_key("p1")  # a row without an id is keyed by its prompt


def test_outcome_logs_load_whole_and_csv_columns_are_typed(tmp_path: Path) -> None:
    router = Outcome(
        query_id="q1",
        prompt="p",
        model="m",
        kind="math",
        category="c",
        correct=True,
        agent="a",
        cost_micros=12,
        latency_ms=30,
        input_tokens=4,
        output_tokens=5,
        ts_ns=1_700_000_000_123_456_789,
        source="mesh",
    )
    turn = Outcome(
        query_id="q2", prompt="t2", model="m", score=7.0, score_max=10.0, response="r", turn=2, source="x"
    )
    records = [router, turn]
    path = tmp_path / "router.jsonl"
    write_outcomes(path, records)
    assert list(load_outcome_log(path)) == records  # a router's log is a replay log, field for field
    OutcomeLog(records).write_jsonl(copy := tmp_path / "copy.jsonl")
    assert copy.read_bytes() == path.read_bytes() and read_outcomes(copy) == records
    columns = {"query_id": "q2", "prompt": "t2", "model": "m", "score": "7", "score_max": "10", "turn": "2"}
    row = load_outcome_log(write_csv(tmp_path / "typed.csv", [{**columns, "response": "r", "kind": ""}]))
    assert list(row) == [msgspec.structs.replace(records[1], source="typed")]


@pytest.mark.asyncio
async def test_quality_follows_the_record_and_turns_are_reported(tmp_path: Path) -> None:
    log = OutcomeLog(
        [
            Outcome(query_id="q", prompt="judged", model="m", score=12.0, score_max=10.0, turn=2),
            Outcome(query_id="r", prompt="ungraded", model="m", response="x"),
        ]
    )
    backend = ReplayBackend(log)
    judged = await backend.complete(CompletionRequest.from_prompt("judged"))
    assert judged.quality == 1.0 and judged.metadata["turn"] == 2  # clamped to 0..1, as routers see it
    ungraded = await backend.complete(CompletionRequest.from_prompt("ungraded"))
    assert ungraded.quality is None and "turn" not in ungraded.metadata


def test_malformed_rows_name_the_file_and_line(tmp_path: Path) -> None:
    bad_csv = write_csv(tmp_path / "bad.csv", [ROWS[0], {"prompt": "x", "model": "m", "correct": "maybe"}])
    with pytest.raises(ValueError, match=r"bad\.csv:3: not a boolean"):
        load_outcome_log(bad_csv)
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"prompt": "p", "model": "m"}\n{"prompt": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: a record needs"):
        load_outcome_log(bad_jsonl)


def test_the_log_keeps_duplicates_and_answers_with_the_first() -> None:
    first = Outcome(query_id="a", prompt="Same  question", model="m", response="one")
    second = Outcome(query_id="b", prompt="Same question", model="m", response="two")
    other = Outcome(query_id="c", prompt="Other", model="n", response="x")
    log = OutcomeLog([first, second, other])
    assert len(log) == 3
    assert log.duplicates == 1
    assert log.lookup("Same question", "m") == first
    assert log.prompts() == ["Same  question", "Other"]
    assert log.prompts("n") == ["Other"]
    assert log.models == ("m", "n")
    assert log.drop_prompts(["same question", "Same question"]) == 2
    assert list(log) == [other]
    assert log.duplicates == 0


@pytest.mark.asyncio
async def test_resources_give_timings_and_cost_and_the_deadline_is_checked(log: OutcomeLog) -> None:
    resources = ResourceModel(
        model="strong", tokens_per_s=10.0, ttft_ms=100, context_window=4096, price_out_per_1k_micros=1_000_000
    )
    backend = ReplayBackend(log, model="strong", resources=resources, clock=lambda: 1_000_000_000)
    result = await backend.complete(CompletionRequest.from_prompt("What is 2+2?"))
    prompt_tokens = result.usage.input_tokens
    assert result.timings.total_ms == resources.estimate_latency_ms(prompt_tokens, 1)
    assert result.timings.ttft_ms == resources.service_ms(prompt_tokens, 0)
    assert result.cost_micros == resources.price_micros(prompt_tokens, 1) == 1000
    with pytest.raises(BackendError) as caught:
        await backend.complete(CompletionRequest.from_prompt("What is 2+2?", timeout_ms=50))
    assert caught.value.reason is BackendErrorReason.TIMEOUT


@pytest.mark.asyncio
async def test_on_delta_gets_the_whole_answer_once(log: OutcomeLog) -> None:
    deltas: list[Delta] = []

    async def on_delta(delta: Delta) -> None:
        deltas.append(delta)

    result = await ReplayBackend(log, model="strong").complete(
        CompletionRequest.from_prompt("What is 2+2?"), on_delta=on_delta
    )
    assert deltas == [Delta(seq=0, text=result.text, output_tokens=result.usage.output_tokens)]


def test_an_empty_log_needs_an_explicit_model() -> None:
    with pytest.raises(ValueError, match="model="):
        ReplayBackend(OutcomeLog())
    empty = ReplayBackend(OutcomeLog(), model="m")
    with pytest.raises(ReplayMissError) as miss:
        anyio.run(empty.complete, CompletionRequest.from_prompt("What is 2+2?"))
    assert miss.value.model == "m"  # a request without a model asks the log for the given one


def test_the_default_model_is_the_logs_first_by_name(log: OutcomeLog) -> None:
    backend = ReplayBackend(log)
    answer = anyio.run(backend.complete, CompletionRequest.from_prompt("What is 2+2?"))
    assert (answer.model, answer.text) == ("strong", "4")  # "strong" sorts before "weak", ROWS' first model
