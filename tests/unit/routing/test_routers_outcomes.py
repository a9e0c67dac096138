"""Outcome records and their JSONL logs; the pair table built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accord.backends.replay import load_outcome_log
from accord.bench.data.synthetic import synthetic_outcomes
from accord.bench.evaluation.evaluate import fold_ids
from accord.routing.base import RouterError
from accord.routing.records import (
    Outcome,
    OutcomeLogError,
    OutcomeWriter,
    query_key,
    read_outcomes,
    write_outcomes,
)
from accord.routing.table import PairTable, infer_pair


def _record(query: str, model: str, **fields: object) -> Outcome:
    return Outcome(query_id=query, prompt=f"prompt {query}", model=model, **fields)  # type: ignore[arg-type]


def test_log_round_trip_and_append(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    records = synthetic_outcomes(5, seed=3)
    assert write_outcomes(path, records[:6]) == 6
    with OutcomeWriter(path) as writer:
        for record in records[6:]:
            writer.write(record)
    assert read_outcomes(path) == records
    first = path.read_text().splitlines()[0]
    assert '"score_max"' not in first  # defaults are omitted


def test_quality_signal() -> None:
    assert _record("a", "m", correct=True).quality == 1.0
    assert _record("a", "m", correct=False).unit_quality == 0.0
    judged = _record("a", "m", score=8.5, score_max=10.0, correct=False)
    assert judged.quality == 8.5 and judged.unit_quality == pytest.approx(0.85)
    with pytest.raises(OutcomeLogError):
        _ = _record("a", "m").quality


def test_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query_id":"a","prompt":"p","model":"m","correct":true}\n\n{"query_id": 3}\n')
    with pytest.raises(OutcomeLogError) as info:
        read_outcomes(path)
    assert info.value.reason == "invalid" and "bad.jsonl:3" in str(info.value)
    path.write_text("{not json\n")
    with pytest.raises(OutcomeLogError) as info:
        read_outcomes(path)
    assert info.value.reason == "malformed"


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "future.jsonl"
    path.write_text('{"query_id":"a","prompt":"p","model":"m","correct":true,"from_the_future":1}\n')
    assert read_outcomes(path)[0].correct is True


def test_replay_backend_reads_our_logs(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    records = synthetic_outcomes(4, seed=2)
    write_outcomes(path, records)
    replay = load_outcome_log(path)
    assert list(replay) == records  # the same records, not a copy of some of their fields
    assert replay.lookup(records[0].prompt, records[0].model) == records[0]


def test_pair_table_pairs_averages_and_drops() -> None:
    records = [
        _record("q1", "weak", correct=True, cost_micros=1),
        _record("q1", "strong", score=4.0, score_max=10.0, cost_micros=5),
        _record("q1", "strong", score=8.0, score_max=10.0, cost_micros=5),  # a second turn
        _record("q2", "weak", correct=False),  # strong never answered q2
        _record("q3", "strong", correct=True),
        _record("q3", "weak", correct=False, response="42"),
        _record("q3", "other", correct=True),
    ]
    table = PairTable.from_outcomes(records, "weak", "strong")
    assert table.query_ids == ["q1", "q3"]
    assert table.q_strong.tolist() == [6.0, 1.0]
    assert table.c_strong.tolist() == [10.0, 0.0]
    assert table.scale == 10.0
    assert [q.answer for q in table.queries] == [None, "42"]
    with pytest.raises(RouterError):
        PairTable.from_outcomes(records, "weak", "weak")


def test_infer_pair_orders_by_quality() -> None:
    table = PairTable.from_outcomes(synthetic_outcomes(50, seed=1))
    assert (table.weak, table.strong) == ("small-model", "large-model")
    with pytest.raises(RouterError):
        infer_pair([_record("q", "only", correct=True)])


def test_folds_are_seeded_and_keep_duplicate_prompts_together() -> None:
    records = synthetic_outcomes(40, seed=4)
    duplicate = [Outcome(**{**_as_dict(r), "query_id": r.query_id + "-again"}) for r in records[:10]]
    table = PairTable.from_outcomes(records + duplicate)
    folds = fold_ids(table, 4, seed=9)
    assert folds.tolist() == fold_ids(table, 4, seed=9).tolist()
    assert folds.tolist() != fold_ids(table, 4, seed=10).tolist()
    by_prompt: dict[str, set[int]] = {}
    for query, fold in zip(table.queries, folds.tolist(), strict=True):
        by_prompt.setdefault(query_key(query.text), set()).add(fold)
    assert all(len(f) == 1 for f in by_prompt.values())
    assert sorted(np.bincount(folds).tolist())[0] >= 8


def _as_dict(record: Outcome) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__struct_fields__}
