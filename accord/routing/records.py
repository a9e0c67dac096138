"""Outcome records: what one model did on one query, the one record routers learn from, replay agents answer from
and benchmarks score.

Every accepted result can be logged as an :class:`Outcome`: the task's features (prompt text, kind, category),
who answered (agent, model), the quality signal (``correct`` and/or a ``score`` on a ``score_max`` scale), cost
(integer micro-USD) and latency (integer ms). Records of the same query under different models share a
``query_id``; that is how a router sees "model A got it right, model B did not" for one query. A record may also
describe one turn of a multi-turn query (``turn`` set, ``prompt`` and ``response`` that turn's): the replay
backend answers each turn of a conversation from such records.

Logs are JSON Lines, one record per line (:func:`write_outcomes`, :func:`read_outcomes`, :class:`OutcomeWriter`
for appending as results arrive). The replay backend's lenient loader (``accord.backends.replay.load_outcome_log``)
reads the same files, and CSV tables with the same column names, into the same records. Unknown fields are
ignored when reading (forward compatibility), defaults are omitted when writing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated, Final, Self

import msgspec
from msgspec import Meta, Struct

from accord.errors import AccordError
from accord.files import MAX_DATA_FILE_BYTES, open_regular

__all__ = [
    "OUTCOME_VERSION",
    "Outcome",
    "OutcomeLogError",
    "OutcomeWriter",
    "iter_outcomes",
    "normalize_prompt",
    "query_key",
    "read_outcomes",
    "write_outcomes",
]

OUTCOME_VERSION: Final = 1

Micros = Annotated[int, Meta(ge=0, le=10**15, description="micro-US-dollars")]
DurationMs = Annotated[int, Meta(ge=0, le=7 * 24 * 3600 * 1000)]
Count = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Turn = Annotated[int, Meta(ge=1, le=2**31 - 1)]


class OutcomeLogError(AccordError):
    """An outcome log could not be read: ``reason`` is ``"malformed"`` or ``"invalid"``; the text says where."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def normalize_prompt(text: str) -> str:
    """Whitespace-normalised text: runs of whitespace become one space, ends stripped (the key under which a
    prompt is looked up in a log, and hashed by :func:`query_key`)."""
    return " ".join(text.split())


def query_key(prompt: str) -> str:
    """A stable id for a prompt: SHA-256 (first 16 bytes, hex) of its whitespace-normalised text."""
    return hashlib.sha256(normalize_prompt(prompt).encode()).hexdigest()[:32]


class Outcome(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One model's outcome on one query."""

    query_id: str
    """Groups the records of one query across models (a task id, a data set row id, or :func:`query_key`)."""
    prompt: str
    """The query as the router sees it at request time (for multi-turn tasks: the first user turn; for a record of
    one turn, that turn's user message)."""
    model: str
    agent: str = ""
    """The answering agent (its id or name); empty for data sets."""
    kind: str = "chat"
    category: str | None = None
    """A subject or category known at request time (e.g. an MMLU subject), if any."""
    correct: bool | None = None
    score: float | None = None
    """A graded quality signal (e.g. a judge's 1-10 score); takes precedence over ``correct``."""
    score_max: float = 1.0
    response: str | None = None
    turn: Turn | None = None
    """For a record of one turn of a multi-turn query: which user turn (1-based) ``prompt`` and ``response`` are.
    None for a record of the whole query (every single-turn record)."""
    cost_micros: Micros | None = None
    latency_ms: DurationMs | None = None
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    source: str = ""
    """Where the record comes from (``mmlu``, ``gsm8k``, ``mt_bench``, ``mesh``, ...)."""
    ts_ns: int | None = None
    v: int = OUTCOME_VERSION

    @property
    def has_quality(self) -> bool:
        """Whether the record carries a quality signal (``score`` or ``correct``)."""
        return self.score is not None or self.correct is not None

    @property
    def quality(self) -> float:
        """The quality signal on its own scale: ``score`` when present, else 1.0 / 0.0 for correct / wrong.

        Raises :class:`OutcomeLogError` (``invalid``) for a record that carries neither (see :attr:`has_quality`).
        """
        if self.score is not None:
            return self.score
        if self.correct is not None:
            return 1.0 if self.correct else 0.0
        raise OutcomeLogError("invalid", f"outcome of {self.model} on {self.query_id} has no quality signal")

    @property
    def unit_quality(self) -> float:
        """``quality`` scaled to 0..1 (``score / score_max`` clamped; correctness as 1.0 / 0.0)."""
        if self.score is not None:
            return min(1.0, max(0.0, self.score / self.score_max)) if self.score_max > 0 else 0.0
        return self.quality


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(Outcome)


def iter_outcomes(path: str | Path) -> Iterator[Outcome]:
    """Stream the records of a JSONL log; blank lines are skipped.

    Raises :class:`OutcomeLogError` naming ``file:line`` for a line that is not a valid record, and
    :class:`~accord.files.FileRefusedError` for a path that is no regular file of at most
    :data:`~accord.files.MAX_DATA_FILE_BYTES`.
    """
    path = Path(path)
    with open_regular(path, cap=MAX_DATA_FILE_BYTES) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield _DECODER.decode(raw)
            except msgspec.ValidationError as exc:
                raise OutcomeLogError("invalid", f"{path}:{line_no}: {exc}") from exc
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise OutcomeLogError("malformed", f"{path}:{line_no}: {exc}") from exc


def read_outcomes(*paths: str | Path) -> list[Outcome]:
    """All records of one or more JSONL logs, in file order."""
    return [record for path in paths for record in iter_outcomes(path)]


class OutcomeWriter:
    """Appends records to a JSONL log, one line each, flushed per record (safe to tail while it runs)."""

    def __init__(self, path: str | Path, *, append: bool = True) -> None:
        self.path = Path(path)
        self._handle: IO[bytes] = self.path.open("ab" if append else "wb")
        self.written = 0

    def write(self, record: Outcome) -> None:
        self._handle.write(_ENCODER.encode(record) + b"\n")
        self._handle.flush()
        self.written += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_outcomes(path: str | Path, records: Iterable[Outcome]) -> int:
    """Write (replacing) a JSONL log; returns the number of records written."""
    with OutcomeWriter(path, append=False) as writer:
        for record in records:
            writer.write(record)
        return writer.written
