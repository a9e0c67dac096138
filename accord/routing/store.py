"""The outcome store: every attempt a requester awarded, and how it ended, kept in the mesh's state dir.

One row per awarded attempt that ended: an accepted result (``delivered``, with the digest of its verified
attestation, the chat that was asked and the answer) or an attempt that did not deliver (quality 0, spec 6.2).
A quality signal joins a row when one exists: a vote or a judge of a strategy run, or ground truth. The store is
what reputation survives restarts by (:meth:`OutcomeStore.records`, read by every new requester process, such as
each ``accord ask``), what routers learn from (:meth:`OutcomeStore.outcomes`, as :class:`~.records.Outcome`
records) and what ``accord traces export`` turns into fine-tuning data.

SQLite (the standard library's), one file, WAL mode, so several processes of one mesh (``accord up``, each
``accord ask``) share it. Bounded: past ``max_rows`` the oldest rows are deleted. Confidential and restricted
rows are stored like the others (the file is the operator's, mode 0600); exports leave them out unless asked.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from msgspec import Struct

from accord.protocol.market import Record
from accord.protocol.messages import ChatMessage, Privacy, Role
from accord.routing.records import Outcome

__all__ = ["DEFAULT_MAX_ROWS", "OutcomeStore", "StoredOutcome"]

DEFAULT_MAX_ROWS: Final = 100_000
_SCHEMA_VERSION: Final = 1
_TRIM_EVERY: Final = 256
"""Inserts between two checks of the bound (a count is cheap, not free)."""

_COLUMNS: Final = (
    "task_id",
    "attempt",
    "ts_ns",
    "agent",
    "model",
    "tier",
    "kind",
    "category",
    "privacy",
    "residency",
    "delivered",
    "quality",
    "quality_source",
    "price_micros",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "messages",
    "response",
    "attestation_digest",
    "run_id",
)


class StoredOutcome(Struct, frozen=True, kw_only=True):
    """One row: an awarded attempt and how it ended."""

    task_id: str
    attempt: int
    ts_ns: int
    agent: str
    model: str
    tier: str = ""
    kind: str = "chat"
    category: str | None = None
    privacy: Privacy = Privacy.PUBLIC
    residency: str | None = None
    delivered: bool
    quality: float | None = None
    """0..1; 0 for an attempt that did not deliver; None for a result no signal has scored (yet)."""
    quality_source: str | None = None
    """Where ``quality`` comes from: ``failure``, ``vote``, ``judge`` or ``truth``."""
    price_micros: int = 0
    latency_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    messages: tuple[ChatMessage, ...] = ()
    response: str | None = None
    attestation_digest: str | None = None
    """SHA-256 (hex) of the result's attestation envelope, as verified when the result was accepted."""
    run_id: str | None = None
    """The strategy run the attempt belonged to (its calls share it), if any."""

    @property
    def private(self) -> bool:
        return self.privacy in (Privacy.CONFIDENTIAL, Privacy.RESTRICTED)

    def first_user_prompt(self) -> str:
        return next((m.content for m in self.messages if m.role is Role.USER), "")

    def to_outcome(self) -> Outcome:
        """The routing record of this row (for training routers on what the mesh did)."""
        return Outcome(
            query_id=self.task_id,
            prompt=self.first_user_prompt(),
            model=self.model,
            agent=self.agent,
            kind=self.kind,
            category=self.category,
            score=self.quality,
            response=self.response,
            cost_micros=self.price_micros if self.delivered else None,
            latency_ms=self.latency_ms if self.delivered else None,
            input_tokens=self.input_tokens or None,
            output_tokens=self.output_tokens or None,
            source="mesh",
            ts_ns=self.ts_ns,
        )


class OutcomeStore:
    """A bounded SQLite table of :class:`StoredOutcome` rows (see the module docstring)."""

    def __init__(self, path: str | Path, *, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.path = Path(path)
        self.max_rows = max_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        if fresh:
            os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outcomes ("
            "task_id TEXT NOT NULL, attempt INTEGER NOT NULL, ts_ns INTEGER NOT NULL, agent TEXT NOT NULL, "
            "model TEXT NOT NULL, tier TEXT, kind TEXT, category TEXT, privacy TEXT NOT NULL, residency TEXT, "
            "delivered INTEGER NOT NULL, quality REAL, quality_source TEXT, price_micros INTEGER, "
            "latency_ms INTEGER, input_tokens INTEGER, output_tokens INTEGER, messages TEXT, response TEXT, "
            "attestation_digest TEXT, run_id TEXT, PRIMARY KEY (task_id, attempt))"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS outcomes_ts ON outcomes (ts_ns)")
        self._db.execute("CREATE INDEX IF NOT EXISTS outcomes_agent ON outcomes (agent)")
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._inserts = 0

    # --- writing ------------------------------------------------------------------------------------------------
    def add(self, row: StoredOutcome) -> None:
        """Insert (or replace: the same attempt ends once) one row; trims the table to ``max_rows``."""
        values = (
            row.task_id,
            row.attempt,
            row.ts_ns,
            row.agent,
            row.model,
            row.tier,
            row.kind,
            row.category,
            row.privacy.value,
            row.residency,
            int(row.delivered),
            row.quality,
            row.quality_source,
            row.price_micros,
            row.latency_ms,
            row.input_tokens,
            row.output_tokens,
            json.dumps([[m.role.value, m.content] for m in row.messages]),
            row.response,
            row.attestation_digest,
            row.run_id,
        )
        marks = ",".join("?" * len(_COLUMNS))
        self._db.execute(f"INSERT OR REPLACE INTO outcomes ({','.join(_COLUMNS)}) VALUES ({marks})", values)
        self._inserts += 1
        if self._inserts % _TRIM_EVERY == 0 or self.max_rows < _TRIM_EVERY:
            self._trim()

    def set_quality(self, task_id: str, quality: float, source: str, *, run_id: str | None = None) -> bool:
        """Give the delivered row of ``task_id`` its quality signal; False when there is no such row."""
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        cursor = self._db.execute(
            "UPDATE outcomes SET quality = ?, quality_source = ?, run_id = COALESCE(?, run_id) "
            "WHERE task_id = ? AND delivered = 1",
            (quality, source, run_id, task_id),
        )
        return cursor.rowcount > 0

    def _trim(self) -> None:
        (count,) = self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
        if count > self.max_rows:
            self._db.execute(
                "DELETE FROM outcomes WHERE rowid IN (SELECT rowid FROM outcomes ORDER BY ts_ns LIMIT ?)",
                (count - self.max_rows,),
            )

    # --- reading ------------------------------------------------------------------------------------------------
    def records(self) -> dict[str, Record]:
        """Every agent's track record over the rows kept (what a requester's reputation starts from)."""
        out: dict[str, Record] = {}
        query = (
            "SELECT agent, SUM(delivered = 0), SUM(delivered = 1 AND quality IS NULL), "
            "SUM(delivered = 1 AND quality IS NOT NULL), TOTAL(CASE WHEN delivered = 1 THEN quality END) "
            "FROM outcomes GROUP BY agent"
        )
        for agent, failed, unscored, scored, quality_sum in self._db.execute(query):
            out[agent] = Record(failed=failed, unscored=unscored, scored=scored, quality_sum=quality_sum)
        return out

    def rows(self, *, delivered: bool | None = None) -> Iterator[StoredOutcome]:
        """The rows kept, oldest first (only delivered or only failed ones if asked)."""
        where = "" if delivered is None else f" WHERE delivered = {int(delivered)}"
        cursor = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM outcomes{where} ORDER BY ts_ns, attempt")
        for values in cursor:
            yield _row(dict(zip(_COLUMNS, values, strict=True)))

    def outcomes(self) -> Iterator[Outcome]:
        """The delivered rows as routing records."""
        return (row.to_outcome() for row in self.rows(delivered=True))

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
        return int(count)

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _row(values: dict[str, object]) -> StoredOutcome:
    raw = values.pop("messages")
    pairs = json.loads(raw) if isinstance(raw, str) else []
    messages = tuple(ChatMessage(role=Role(role), content=content) for role, content in pairs)
    return StoredOutcome(
        task_id=str(values["task_id"]),
        attempt=_int(values["attempt"]),
        ts_ns=_int(values["ts_ns"]),
        agent=str(values["agent"]),
        model=str(values["model"]),
        tier=str(values["tier"] or ""),
        kind=str(values["kind"] or "chat"),
        category=_str(values["category"]),
        privacy=Privacy(str(values["privacy"])),
        residency=_str(values["residency"]),
        delivered=bool(values["delivered"]),
        quality=None if values["quality"] is None else float(str(values["quality"])),
        quality_source=_str(values["quality_source"]),
        price_micros=_int(values["price_micros"]),
        latency_ms=_int(values["latency_ms"]),
        input_tokens=_int(values["input_tokens"]),
        output_tokens=_int(values["output_tokens"]),
        messages=messages,
        response=_str(values["response"]),
        attestation_digest=_str(values["attestation_digest"]),
        run_id=_str(values["run_id"]),
    )


def _int(value: object) -> int:
    return int(str(value)) if value is not None else 0


def _str(value: object) -> str | None:
    return None if value is None else str(value)
