"""A backend that answers from an outcome log of real model responses: reproducible experiments, no model.

An :class:`OutcomeLog` indexes :class:`~accord.routing.records.Outcome` records (the one outcome record routers
and benchmarks read too) by (model, prompt): each holds the recorded response text (or none), the recorded
quality signal (``correct`` and/or a ``score`` on a ``score_max`` scale) and token counts where known. Logs
load from CSV or JSONL (:func:`load_outcome_log`) with the record's field names as columns

    prompt, model, response, correct, score, score_max, input_tokens, output_tokens, source,
    query_id, agent, kind, category, turn, cost_micros, latency_ms, ts_ns, v

(only ``prompt`` and ``model`` are required; ``query_id`` defaults to
:func:`~accord.routing.records.query_key` of the prompt; ``correctness`` is accepted for ``correct``, ``tokens``
and ``completion_tokens`` for ``output_tokens``, ``prompt_tokens`` for ``input_tokens``). A router's JSONL log
(:func:`~accord.routing.records.write_outcomes`) is such a file. :mod:`accord.bench.data.routellm` builds logs
from the RouteLLM evaluation sets.

:class:`ReplayBackend` looks the request's prompt up (the last user message, whitespace-normalised) for the
requested model and answers with the recorded text. Records without text (MMLU rows carry only correctness)
answer with :data:`NO_TEXT_MARKER` and ``metadata["has_text"] = False``; the recorded signal is always in
``Completion.quality`` (:attr:`~accord.routing.records.Outcome.unit_quality`: 1.0 correct / 0.0 wrong, or
``score / score_max``; None for a record without a signal) and in ``metadata`` (``correct``, ``score``,
``source``, and ``turn`` for a record of one turn), so experiments can score outcomes. The recorded text is
returned whole (``max_tokens`` and stop sequences do not cut a record). A prompt or model missing from the log
raises :class:`ReplayMissError` (reason ``not_found``).

Timings and cost: with a :class:`~accord.protocol.pricing.ResourceModel` the backend reports the latency and
price that model predicts for the recorded token counts (and, with ``realtime=True``, waits that long for
real); without one it reports zeros and ``cost_micros=None``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import anyio
import msgspec

from accord.backends.base import (
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    Delta,
    DeltaCallback,
    MetadataValue,
)
from accord.files import MAX_DATA_FILE_BYTES, open_regular
from accord.protocol.messages import ChatMessage, Role, Timings, Usage
from accord.protocol.pricing import ResourceModel, estimate_prompt_tokens, estimate_tokens
from accord.routing.records import OUTCOME_VERSION, Outcome, normalize_prompt, query_key, write_outcomes

__all__ = [
    "NO_TEXT_MARKER",
    "OutcomeLog",
    "ReplayBackend",
    "ReplayMissError",
    "load_outcome_log",
]

NO_TEXT_MARKER: Final = "[replay: no response text recorded]"
"""The answer text for a record that carries only a quality signal (see ``Completion.metadata``)."""


class ReplayMissError(BackendError):
    """The log has no record of this model answering this prompt."""

    def __init__(self, model: str, prompt: str, *, backend: str = "replay") -> None:
        snippet = normalize_prompt(prompt)[:80]
        super().__init__(
            BackendErrorReason.NOT_FOUND, f"no recorded answer from {model} to {snippet!r}", backend=backend
        )
        self.model = model
        self.prompt = prompt


class OutcomeLog:
    """Records in insertion order, indexed by (model, whitespace-normalised prompt).

    Every record is kept (iteration and ``len`` see them all, so statistics over a data set match its row
    count); a lookup returns the first record of its key. ``duplicates`` counts records whose key was taken.
    """

    def __init__(self, records: Iterable[Outcome] = ()) -> None:
        self._records: list[Outcome] = []
        self._index: dict[tuple[str, str], Outcome] = {}
        self.duplicates = 0
        for record in records:
            self.add(record)

    def add(self, record: Outcome) -> bool:
        """Add a record; False (and counted in ``duplicates``) when a record with its key is already present."""
        self._records.append(record)
        key = (record.model, normalize_prompt(record.prompt))
        if key in self._index:
            self.duplicates += 1
            return False
        self._index[key] = record
        return True

    def lookup(self, prompt: str, model: str) -> Outcome | None:
        return self._index.get((model, normalize_prompt(prompt)))

    def drop_prompts(self, prompts: Iterable[str]) -> int:
        """Remove every model's records of these prompts (e.g. contaminated ones); returns how many went."""
        drop = {normalize_prompt(p) for p in prompts}
        kept = [r for r in self._records if normalize_prompt(r.prompt) not in drop]
        removed = len(self._records) - len(kept)
        self._records, self._index, self.duplicates = [], {}, 0
        for record in kept:
            self.add(record)
        return removed

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted({model for model, _ in self._index}))

    def prompts(self, model: str | None = None) -> list[str]:
        """The distinct prompts (first spelling, in insertion order), optionally only those ``model`` answered."""
        seen: set[str] = set()
        prompts: list[str] = []
        for (answered_by, key), record in self._index.items():
            if (model is None or answered_by == model) and key not in seen:
                seen.add(key)
                prompts.append(record.prompt)
        return prompts

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def merge(self, other: OutcomeLog) -> OutcomeLog:
        """A new log with this log's records, then ``other``'s."""
        return OutcomeLog([*self, *other])

    def write_jsonl(self, path: str | Path) -> int:
        """Write every record as a JSONL outcome log (:func:`~accord.routing.records.write_outcomes`)."""
        return write_outcomes(path, self)


# --- loading -----------------------------------------------------------------------------------------------------
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t", "correct"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f", "wrong", "incorrect"})


def _as_bool(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text == "":
        return None
    raise ValueError(f"not a boolean: {value!r}")


def _as_float(value: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | str):
        return float(value)
    raise ValueError(f"not a number: {value!r}")


def _as_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact (``ts_ns`` does not fit a float's 53 bits)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    number = _as_float(value)
    return None if number is None else int(number)


def _first(row: Mapping[str, object], *names: str) -> object:
    for name in names:
        value = row.get(name)
        if value is not None and value != "":
            return value
    return None


def _text(row: Mapping[str, object], name: str) -> str | None:
    value = row.get(name)
    return value if isinstance(value, str) and value != "" else None


def outcome_from_row(row: Mapping[str, object], *, source: str = "") -> Outcome:
    """An :class:`~accord.routing.records.Outcome` from one CSV row or JSON object (columns as in the module
    docstring; empty cells count as absent, except that an empty ``response`` is an empty answer)."""
    prompt, model = row.get("prompt"), row.get("model")
    if not isinstance(prompt, str) or not isinstance(model, str) or not model:
        raise ValueError("a record needs string 'prompt' and 'model' fields")
    response = row.get("response")
    score_max = _as_float(row.get("score_max"))
    version = _as_int(row.get("v"))
    record = Outcome(
        query_id=_text(row, "query_id") or query_key(prompt),
        prompt=prompt,
        model=model,
        agent=_text(row, "agent") or "",
        kind=_text(row, "kind") or "chat",
        category=_text(row, "category"),
        correct=_as_bool(_first(row, "correct", "correctness")),
        score=_as_float(row.get("score")),
        response=response if isinstance(response, str) else None,
        turn=_as_int(row.get("turn")),
        cost_micros=_as_int(row.get("cost_micros")),
        latency_ms=_as_int(row.get("latency_ms")),
        input_tokens=_as_int(_first(row, "input_tokens", "prompt_tokens")),
        output_tokens=_as_int(_first(row, "output_tokens", "completion_tokens", "tokens")),
        source=str(row.get("source") or source),
        ts_ns=_as_int(row.get("ts_ns")),
        v=OUTCOME_VERSION if version is None else version,
    )
    # replaced only when given: msgspec omits a default when encoding only if it is the default object itself
    return record if score_max is None else msgspec.structs.replace(record, score_max=score_max)


def load_outcome_log(path: str | Path, *, source: str | None = None) -> OutcomeLog:
    """Read an outcome log from ``.csv`` or ``.jsonl`` (``.json`` lines also accepted); ``source`` (default: the
    file's stem) fills in records that name none.

    Raises ``ValueError`` naming the file and line for a malformed row, and
    :class:`~accord.files.FileRefusedError` for a path that is no regular file of at most
    :data:`~accord.files.MAX_DATA_FILE_BYTES`.
    """
    path = Path(path)
    tag = source if source is not None else path.stem
    records: list[Outcome] = []
    if path.suffix.lower() == ".csv":
        with io.TextIOWrapper(open_regular(path, cap=MAX_DATA_FILE_BYTES), encoding="utf-8", newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    records.append(outcome_from_row(row, source=tag))
                except ValueError as exc:
                    raise ValueError(f"{path}:{line}: {exc}") from exc
    else:
        decoder = msgspec.json.Decoder(dict[str, object])
        with open_regular(path, cap=MAX_DATA_FILE_BYTES) as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    records.append(outcome_from_row(decoder.decode(raw), source=tag))
                except (ValueError, msgspec.DecodeError) as exc:
                    raise ValueError(f"{path}:{line}: {exc}") from exc
    return OutcomeLog(records)


# --- the backend -------------------------------------------------------------------------------------------------
class ReplayBackend:
    """Answers from an :class:`OutcomeLog`. ``model`` is the default model (the log's first, sorted by name)."""

    def __init__(
        self,
        log: OutcomeLog,
        *,
        name: str = "replay",
        model: str | None = None,
        resources: ResourceModel | None = None,
        realtime: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        models = log.models
        if model is None and not models:
            raise ValueError("an empty outcome log has no default model; pass model=")
        self.log = log
        self._name = name
        self._model = model if model is not None else models[0]
        self._resources = resources
        self._realtime = realtime
        self._clock = clock

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def aclose(self) -> None:
        return None

    async def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """The recorded model's prompt size (what an agent prices a task by): the log's ``input_tokens`` of this
        prompt when it has them, else the log's own estimate, ``ceil(chars / 4)`` of the conversation's user and
        assistant turns (system prompts are the serving agent's, not the recorded model's)."""
        prompt = next((m.content for m in reversed(messages) if m.role is Role.USER), "")
        record = self.log.lookup(prompt, self._model)
        if record is not None and record.input_tokens is not None:
            return record.input_tokens
        return estimate_tokens("".join(m.content for m in messages if m.role is not Role.SYSTEM))

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        model = request.model or self._model
        record = self.log.lookup(request.prompt, model)
        if record is None:
            raise ReplayMissError(model, request.prompt, backend=self._name)
        has_text = record.response is not None
        text = record.response if record.response is not None else NO_TEXT_MARKER
        estimated = record.input_tokens is None or record.output_tokens is None
        usage = Usage(
            input_tokens=(
                record.input_tokens
                if record.input_tokens is not None
                else estimate_prompt_tokens(request.messages)
            ),
            output_tokens=record.output_tokens if record.output_tokens is not None else estimate_tokens(text),
        )
        timings, cost = self._timings_and_cost(usage)
        deadline = request.effective_deadline_ns(self._clock())
        if deadline is not None and self._clock() + timings.total_ms * 1_000_000 > deadline:
            raise BackendError(
                BackendErrorReason.TIMEOUT,
                "the modelled latency passes the request's deadline",
                backend=self._name,
            )
        if self._realtime and timings.total_ms:
            await anyio.sleep(timings.total_ms / 1000)
        if on_delta is not None:
            await on_delta(Delta(seq=0, text=text, output_tokens=usage.output_tokens))
        metadata: dict[str, MetadataValue] = {"has_text": has_text, "source": record.source}
        if record.correct is not None:
            metadata["correct"] = record.correct
        if record.score is not None:
            metadata["score"] = record.score
            metadata["score_max"] = record.score_max
        if record.turn is not None:
            metadata["turn"] = record.turn
        return Completion(
            text=text,
            model=model,
            usage=usage,
            timings=timings,
            finish_reason="stop",
            backend=self._name,
            usage_estimated=estimated,
            cost_micros=cost,
            quality=record.unit_quality if record.has_quality else None,
            metadata=metadata,
        )

    def _timings_and_cost(self, usage: Usage) -> tuple[Timings, int | None]:
        resources = self._resources
        if resources is None:
            return Timings(), None
        prompt, output = usage.input_tokens, usage.output_tokens
        ttft = resources.service_ms(prompt, 0) + resources.network_ms(prompt, 0)
        total = resources.estimate_latency_ms(prompt, output)
        return Timings(ttft_ms=ttft, total_ms=total), resources.price_micros(prompt, output)
