"""``accord traces export --format outcomes``: the store's scored attempts as an outcome log routers train on."""

from __future__ import annotations

import json
from pathlib import Path

from accord.protocol.messages import ChatMessage, Privacy, Role
from accord.routing.records import read_outcomes
from accord.routing.store import OutcomeStore, StoredOutcome
from accord.routing.traces import TraceFormat, trace_rows


def _row(task: str, prompt: str, **kw: object) -> StoredOutcome:
    fields: dict[str, object] = {
        "task_id": task,
        "attempt": 1,
        "ts_ns": 1,
        "agent": "U" + "A" * 55,
        "model": "m-small",
        "delivered": True,
        "messages": (ChatMessage(role=Role.USER, content=prompt),),
        **kw,
    }
    return StoredOutcome(**fields)  # type: ignore[arg-type]


def test_scored_attempts_become_outcome_records_and_unscored_or_private_ones_do_not(tmp_path: Path) -> None:
    with OutcomeStore(tmp_path / "o.sqlite3") as store:
        store.add(_row("1" * 32, "judged", quality=0.8, quality_source="judge", price_micros=120, latency_ms=40))
        store.add(_row("2" * 32, "failed", delivered=False, quality=0.0, quality_source="failure"))
        store.add(_row("3" * 32, "never scored"))
        store.add(_row("4" * 32, "secret", quality=1.0, privacy=Privacy.CONFIDENTIAL))
        lines = [json.dumps(r) for r in trace_rows(store.rows(), TraceFormat.OUTCOMES)]
        with_private = list(trace_rows(store.rows(), TraceFormat.OUTCOMES, include_private=True))
    (tmp_path / "log.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    records = {r.prompt: r for r in read_outcomes(tmp_path / "log.jsonl")}
    assert set(records) == {"judged", "failed"} and len(with_private) == 3
    judged, failed = records["judged"], records["failed"]
    assert (judged.quality, judged.cost_micros, judged.latency_ms, judged.model) == (0.8, 120, 40, "m-small")
    assert (failed.quality, failed.cost_micros) == (0.0, None)
