"""Fine-tuning data from the outcome store: the other half of learning to collaborate.

Two formats, one JSON object per line, each row carrying the SHA-256 of the attestation(s) it comes from (so a
row can be traced to a verified result, ``accord verify``), and the task, agent and model under ``metadata``:

- ``openai-chat`` (supervised fine-tuning, e.g. to distil cloud answers into a device model): one row per
  accepted answer of the chosen tiers (default ``cloud``) whose quality is not known to be poor (< 0.5)::

      {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
       "metadata": {"attestation_digest": "...", "task_id": "...", "agent": "U...", "model": "...", ...}}

- ``preference`` (DPO, in OpenAI's preference fine-tuning layout): for the answers of one strategy run to the
  same prompt that a vote or a judge told apart, every (agreeing, disagreeing) pair::

      {"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content": "..."}],
       "non_preferred_output": [{"role": "assistant", "content": "..."}], "metadata": {...}}

- ``outcomes`` (training routers and the learned predictor): one outcome record (spec/OUTCOMES.md) per scored
  attempt, a failure included (quality 0), so ``accord router train`` fits on what the mesh did.

Rows whose task was ``confidential`` or ``restricted`` are never exported unless ``include_private`` is set.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from typing import Final

import msgspec

from accord.protocol.messages import ChatMessage
from accord.routing.store import StoredOutcome

__all__ = ["TraceFormat", "outcome_rows", "preference_rows", "sft_rows", "trace_rows"]

_POOR: Final = 0.5
"""An answer scored below this (a lost vote, a judge's low score) is not taught."""

JsonRow = dict[str, object]


class TraceFormat(enum.StrEnum):
    OPENAI_CHAT = "openai-chat"
    PREFERENCE = "preference"
    OUTCOMES = "outcomes"


def _chat(messages: Iterable[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role.value, "content": m.content} for m in messages]


def _metadata(row: StoredOutcome) -> dict[str, object]:
    return {
        "attestation_digest": row.attestation_digest,
        "task_id": row.task_id,
        "agent": row.agent,
        "model": row.model,
        "tier": row.tier,
        "quality": row.quality,
        "quality_source": row.quality_source,
    }


def _exportable(row: StoredOutcome, include_private: bool) -> bool:
    return (
        row.delivered
        and row.response is not None
        and row.attestation_digest is not None
        and bool(row.messages)
        and (include_private or not row.private)
    )


def sft_rows(
    rows: Iterable[StoredOutcome], *, tiers: Collection[str] = ("cloud",), include_private: bool = False
) -> Iterator[JsonRow]:
    """Supervised fine-tuning rows (see the module docstring)."""
    for row in rows:
        if not _exportable(row, include_private) or (tiers and row.tier not in tiers):
            continue
        if row.quality is not None and row.quality < _POOR:
            continue
        messages = [*_chat(row.messages), {"role": "assistant", "content": row.response}]
        yield {"messages": messages, "metadata": _metadata(row)}


def preference_rows(rows: Iterable[StoredOutcome], *, include_private: bool = False) -> Iterator[JsonRow]:
    """Preference pairs from the runs whose answers a vote or a judge told apart (see the module docstring)."""
    groups: dict[tuple[str, tuple[ChatMessage, ...]], list[StoredOutcome]] = defaultdict(list)
    for row in rows:
        if _exportable(row, include_private) and row.run_id is not None and row.quality is not None:
            groups[(row.run_id, row.messages)].append(row)
    for (_run, messages), answers in groups.items():
        better = [r for r in answers if r.quality is not None and r.quality >= _POOR]
        worse = [r for r in answers if r.quality is not None and r.quality < _POOR]
        for good in better:
            for bad in worse:
                yield {
                    "input": {"messages": _chat(messages)},
                    "preferred_output": [{"role": "assistant", "content": good.response}],
                    "non_preferred_output": [{"role": "assistant", "content": bad.response}],
                    "metadata": {
                        "run_id": good.run_id,
                        "decided_by": good.quality_source,
                        "preferred": _metadata(good),
                        "non_preferred": _metadata(bad),
                    },
                }


def outcome_rows(rows: Iterable[StoredOutcome], *, include_private: bool = False) -> Iterator[JsonRow]:
    """Outcome records of the scored attempts (see the module docstring)."""
    for row in rows:
        if row.quality is not None and bool(row.messages) and (include_private or not row.private):
            record = msgspec.to_builtins(row.to_outcome())
            assert isinstance(record, dict)
            yield record


def trace_rows(
    rows: Iterable[StoredOutcome],
    fmt: TraceFormat,
    *,
    tiers: Collection[str] = ("cloud",),
    include_private: bool = False,
) -> Iterator[JsonRow]:
    if fmt is TraceFormat.OPENAI_CHAT:
        return sft_rows(rows, tiers=tiers, include_private=include_private)
    if fmt is TraceFormat.OUTCOMES:
        return outcome_rows(rows, include_private=include_private)
    return preference_rows(rows, include_private=include_private)
