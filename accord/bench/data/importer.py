"""Importing any multi-model outcome log: one row per (query, model) with a prompt, a model, a quality signal
(correct or score) and a cost, in CSV, JSON Lines or a JSON array, whatever its column names.

``columns`` maps an outcome field to the file's column (``{"prompt": "question", "correct": "is_correct"}``);
fields not mapped are read from columns of their own name (see :func:`~accord.backends.replay.outcome_from_row`
for the aliases it accepts). Cost: ``cost_micros`` is taken as is; otherwise ``cost`` is read in ``cost_unit``
(``usd`` by default, or ``cents``, ``micros``) and rounded to integer micro-USD. Rows of one prompt share a
``query_id`` (the prompt's :func:`~accord.routing.records.query_key`) unless the file has one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from accord.backends.replay import outcome_from_row
from accord.files import MAX_DATA_FILE_BYTES, open_regular, read_capped
from accord.routing.base import RouterError
from accord.routing.records import Outcome

__all__ = ["COST_UNITS", "ImportResult", "import_outcomes"]

COST_UNITS: Final[dict[str, float]] = {"usd": 1e6, "cents": 1e4, "micros": 1.0}
"""Micro-USD per unit of the ``cost`` column."""


@dataclass(frozen=True)
class ImportResult:
    records: list[Outcome]
    rounded_to_zero: int
    """Rows whose non-zero cost rounded to 0 micro-USD (costs below half a micro-dollar)."""


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, object]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with (
            open_regular(path, cap=MAX_DATA_FILE_BYTES) as binary,
            io.TextIOWrapper(binary, "utf-8", newline="") as text,
        ):
            yield from enumerate(csv.DictReader(text), start=2)
        return
    if suffix == ".json":
        try:
            data = json.loads(read_capped(path, cap=MAX_DATA_FILE_BYTES))
        except ValueError as exc:  # not UTF-8, not JSON
            raise RouterError("bad_input", f"{path}: {exc}") from exc
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise RouterError("bad_input", f"{path}: a .json log must be an array of objects")
        yield from enumerate(data, start=1)
        return
    decoder = msgspec.json.Decoder(dict[str, object])
    with open_regular(path, cap=MAX_DATA_FILE_BYTES) as handle:
        for line, raw in enumerate(handle, start=1):
            if raw.strip():
                try:
                    yield line, decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    raise RouterError("bad_input", f"{path}:{line}: {exc}") from exc


def import_outcomes(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    cost_unit: str = "usd",
    source: str | None = None,
    score_max: float | None = None,
) -> ImportResult:
    """Read ``path`` (``.csv``, ``.json`` or JSON Lines) into outcome records (see the module docstring).

    Raises :class:`~accord.routing.base.RouterError` (``bad_input``) naming the file and row of a row that is
    not a record.
    """
    path = Path(path)
    if cost_unit not in COST_UNITS:
        raise RouterError("bad_input", f"cost unit {cost_unit!r}; choose from {', '.join(COST_UNITS)}")
    factor = COST_UNITS[cost_unit]
    mapping = dict(columns or {})
    tag = source if source is not None else path.stem
    records: list[Outcome] = []
    zeros = 0
    for line, raw in _rows(path):
        row: dict[str, object] = dict(raw)
        for field, column in mapping.items():
            row[field] = raw.get(column)
        try:
            if row.get("cost_micros") in (None, "") and row.get("cost") not in (None, ""):
                cost = float(str(row["cost"])) * factor
                if cost < 0:
                    raise ValueError(f"negative cost {row['cost']!r}")
                row["cost_micros"] = round(cost)
                zeros += cost > 0 and round(cost) == 0
            if score_max is not None and row.get("score_max") in (None, ""):
                row["score_max"] = score_max
            record = outcome_from_row(row, source=tag)
        except ValueError as exc:
            raise RouterError("bad_input", f"{path}:{line}: {exc}") from exc
        if not record.has_quality:
            raise RouterError("bad_input", f"{path}:{line}: no quality signal (correct or score)")
        records.append(record)
    return ImportResult(records=records, rounded_to_zero=zeros)
