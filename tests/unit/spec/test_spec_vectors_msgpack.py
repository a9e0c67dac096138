"""The message vectors checked by a second MessagePack implementation (the ``msgpack`` package), not by the
codec that wrote them: what another language's decoder reads from ``msgpack_hex`` is the vector's JSON form,
field for field and in wire order, and those bytes are what that implementation writes for it (every header in
its shortest form: the canonical form of spec 2.3)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.support.paths import SPEC_DIR

VALID_FILES = sorted((SPEC_DIR / "vectors" / "messages").glob("*.json"))


def _as_json(value: Any) -> Any:
    """A decoded msgpack value in the JSON form of spec 2.5: bin as standard base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    return value


def test_there_are_vectors() -> None:
    assert len(VALID_FILES) >= 13


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.stem)
def test_another_msgpack_implementation_reads_the_json_form(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    frame = bytes.fromhex(doc["msgpack_hex"])
    decoded = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    assert isinstance(decoded, dict)
    assert list(decoded) == list(doc["json"]), "field order differs"
    assert _as_json(decoded) == doc["json"]
    assert msgpack.packb(decoded, use_bin_type=True) == frame
