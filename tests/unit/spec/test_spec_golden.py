"""spec/schemas and spec/vectors/messages against the code (the cryptography pattern: tests parametrised over
the committed vector files), plus `accord spec check` / `schemas` / `vectors` end to end."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from typer.testing import CliRunner

from accord.bench.data.synthetic import synthetic_outcomes
from accord.bench.data.synthetic_models import synthetic_world
from accord.cli import app
from accord.cli import spec as spec_cli
from accord.errors import RemoteProtocolError
from accord.protocol import codec
from accord.protocol.messages import (
    ALLOWED_REASONS,
    MESSAGE_TYPES,
    ChatMessage,
    Connectivity,
    Constraints,
    ModelOffer,
    Policy,
    ReasonCode,
    Timings,
    Usage,
    message_tag,
)
from accord.routing.records import Outcome
from accord.spec.decoder_vectors import ACCEPT_DIR, INVALID_DIR, JSON_DIR, frame_of
from accord.spec.message_vectors import vector_files
from accord.spec.schemas import COMBINED_SCHEMA_FILE, OUTCOME_SCHEMA_FILE, schema_files
from tests.support.paths import SPEC_DIR

SPEC = SPEC_DIR
SCHEMAS = SPEC / "schemas"
VECTORS = SPEC / "vectors" / "messages"
VALID_FILES = sorted(VECTORS.glob("*.json"))
INVALID_FILES = sorted((VECTORS / INVALID_DIR).glob("*.json"))
ACCEPT_FILES = sorted((VECTORS / ACCEPT_DIR).glob("*.json"))
JSON_FILES = sorted((VECTORS / JSON_DIR).glob("*.json"))


def _load(path: Path, keys: set[str] | None = None, optional: set[str] | None = None) -> dict[str, Any]:
    """A vector document; with ``keys``, check that it has exactly these (and maybe some of ``optional``)."""
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert keys is None or set(doc) - (optional or set()) == keys, (path.name, sorted(doc))
    return doc


# --- golden files ---------------------------------------------------------------------------------------------
def test_committed_schemas_match_the_code() -> None:
    expected = schema_files()
    committed = {p.name: p.read_bytes() for p in SCHEMAS.glob("*.json")}
    assert set(committed) == set(expected), "schema files added or missing: run `accord spec schemas`"
    stale = sorted(name for name in expected if committed[name] != expected[name])
    assert not stale, f"{stale} differ from the message types: run `accord spec schemas` and commit the result"


def test_committed_vectors_match_the_code() -> None:
    expected = vector_files()
    committed = {p.relative_to(VECTORS).as_posix(): p.read_bytes() for p in VECTORS.rglob("*.json")}
    assert set(committed) == set(expected), "vector files added or missing: run `accord spec vectors`"
    stale = sorted(name for name in expected if committed[name] != expected[name])
    assert not stale, (
        f"{stale} differ from accord.spec.message_vectors: run `accord spec vectors` and commit the result"
    )


def test_one_vector_and_one_schema_per_message_type() -> None:
    tags = {message_tag(t) for t in MESSAGE_TYPES}
    assert {p.stem for p in VALID_FILES} == tags
    assert {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")} == tags | {
        "messages",
        "outcome",
    }
    assert len(INVALID_FILES) >= 10


def test_outcome_schema_accepts_logged_records_and_refuses_broken_ones() -> None:
    schema = json.loads((SCHEMAS / OUTCOME_SCHEMA_FILE).read_text(encoding="utf-8"))
    records = [*synthetic_outcomes(3, seed=0), *synthetic_world(2, seed=0).outcomes(2, seed=1)]
    records.append(Outcome(query_id="q", prompt="p", model="m", score=7.5, score_max=10.0, turn=2, latency_ms=5))
    for record in records:
        jsonschema.validate(json.loads(msgspec.json.encode(record)), schema)
    for broken in (
        {"query_id": "q", "model": "m"},
        {"query_id": "q", "prompt": "p", "model": "m", "cost_micros": -1},
        {"query_id": "q", "prompt": "p", "model": "m", "correct": "yes"},
        {"query_id": "q", "prompt": "p", "model": "m", "turn": 0},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


# --- every vector, as an implementer in another language would use it ------------------------------------------
@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.stem)
def test_vector_decodes_matches_its_json_and_reencodes_byte_for_byte(path: Path) -> None:
    doc = _load(path, {"type", "description", "msgpack_hex", "json"})
    frame = bytes.fromhex(doc["msgpack_hex"])
    message = codec.decode(frame)
    assert message_tag(type(message)) == doc["type"] == doc["json"]["type"] == path.stem
    assert codec.decode_json(json.dumps(doc["json"])) == message
    assert codec.encode(message) == frame
    assert json.loads(codec.encode_json(message)) == doc["json"]


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_vector_is_refused_with_its_reason(path: Path) -> None:
    doc = _load(path, {"name", "description", "msgpack_hex", "reason"}, {"padded_length"})
    assert doc["reason"] in codec.DECODE_ERROR_REASONS
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(frame_of(doc))
    assert info.value.reason == doc["reason"]


def test_every_decode_reason_has_an_invalid_vector() -> None:
    reasons = {_load(p)["reason"] for p in INVALID_FILES}
    assert reasons == codec.DECODE_ERROR_REASONS


@pytest.mark.parametrize("path", ACCEPT_FILES, ids=lambda p: p.stem)
def test_accept_vector_decodes_to_its_message_and_reencodes_canonically(path: Path) -> None:
    doc = _load(path, {"name", "description", "msgpack_hex", "json", "canonical_hex"}, {"may_refuse"})
    assert doc.get("may_refuse", "malformed") in codec.DECODE_ERROR_REASONS
    message = codec.decode(frame_of(doc))
    assert message == codec.decode_json(json.dumps(doc["json"]))
    assert codec.encode(message).hex() == doc["canonical_hex"]
    assert json.loads(codec.encode_json(message)) == doc["json"]


def test_accept_vectors_are_not_canonical_but_for_the_reserved_residency() -> None:
    canonical = {p.stem for p in ACCEPT_FILES if (d := _load(p))["msgpack_hex"] == d["canonical_hex"]}
    assert canonical == {"residency_any"}
    assert len(ACCEPT_FILES) >= 30


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.stem)
def test_json_vector_reads_as_its_message(path: Path) -> None:
    doc = _load(path, {"name", "description", "json_text", "msgpack_hex"})
    message = codec.decode_json(doc["json_text"])
    assert codec.decode(bytes.fromhex(doc["msgpack_hex"])) == message
    assert codec.encode(message).hex() == doc["msgpack_hex"]


# --- the schemas describe the JSON form ---------------------------------------------------------------------
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.stem)
def test_schemas_accept_every_vector(path: Path) -> None:
    doc = _load(path)
    _validator(f"{doc['type']}.schema.json").validate(doc["json"])
    _validator(COMBINED_SCHEMA_FILE).validate(doc["json"])


def test_schemas_carry_every_default() -> None:
    """Every field with a default (a value or a default_factory, e.g. Advertise.protocol_versions = [1]) has it."""
    defs = json.loads((SCHEMAS / COMBINED_SCHEMA_FILE).read_text(encoding="utf-8"))["$defs"]
    checked = 0
    for type_ in (*MESSAGE_TYPES, *RECORD_TYPES):
        properties = defs[type_.__name__]["properties"]
        for f in msgspec.structs.fields(type_):
            if f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT:
                default = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
                assert properties[f.encode_name].get("default") == msgspec.to_builtins(default), (type_, f.name)
                checked += 1
    assert defs["Advertise"]["properties"]["protocol_versions"]["default"] == [1]
    assert checked > 40


def test_schemas_refuse_what_the_decoder_refuses() -> None:
    bid = json.loads((VECTORS / "bid.json").read_text(encoding="utf-8"))["json"]
    validator = _validator("bid.schema.json")
    for bad in (
        {**bid, "quality": 1.5},
        # Not {"region": "eu\n"}: the schema's "$" means end of input in ECMA-262, but the Python jsonschema
        # package matches with re.search, where "$" also matches before a final newline (the decoder refuses it).
        {**bid, "region": "eu.central"},
        {**bid, "id": bid["id"].upper()},
        {**bid, "tier": "satellite"},
        {**bid, "type": "task"},
        {k: v for k, v in bid.items() if k != "price_micros"},
    ):
        assert not validator.is_valid(bad), bad
        with pytest.raises(RemoteProtocolError):
            codec.decode_json(json.dumps(bad))
    assert validator.is_valid({**bid, "added_in_v1_1": 1})  # unknown fields are allowed, as in the decoder


# --- the CLI --------------------------------------------------------------------------------------------------
runner = CliRunner()


def test_spec_check_passes_on_the_committed_spec() -> None:
    result = runner.invoke(app, ["spec", "check", "--spec-dir", str(SPEC)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "all" in result.output and "checks passed" in result.output
    assert "bid.json" in result.output and "bid.schema.json" in result.output


def test_run_checks_reports_every_kind_of_mismatch(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    shutil.copytree(SCHEMAS, spec / "schemas")
    shutil.copytree(SPEC / "vectors" / "messages", spec / "vectors" / "messages")
    shutil.copytree(SPEC / "vectors" / "security", spec / "vectors" / "security")
    shutil.copy(SPEC / "asyncapi.yaml", spec / "asyncapi.yaml")
    assert all(r.ok for r in spec_cli.run_checks(spec))

    bid = spec / "vectors" / "messages" / "bid.json"
    doc = json.loads(bid.read_text(encoding="utf-8"))
    doc["json"]["price_micros"] += 1
    bid.write_text(json.dumps(doc), encoding="utf-8")
    (spec / "schemas" / "task.schema.json").unlink()
    (spec / "schemas" / "old.schema.json").write_text("{}", encoding="utf-8")
    (spec / "vectors" / "messages" / INVALID_DIR / "truncated.json").write_text(
        json.dumps({"name": "x", "description": "", "msgpack_hex": vector_hex("award"), "reason": "malformed"}),
        encoding="utf-8",
    )
    accept = spec / "vectors" / "messages" / ACCEPT_DIR / "keys_reversed.json"
    doc = json.loads(accept.read_text(encoding="utf-8"))
    accept.write_text(json.dumps({**doc, "canonical_hex": vector_hex("award")}), encoding="utf-8")
    (spec / "vectors" / "messages" / "other").mkdir()
    (spec / "vectors" / "messages" / "other" / "x.json").write_text("{}", encoding="utf-8")
    failed = {(r.item, r.detail.split(";")[0]) for r in spec_cli.run_checks(spec) if not r.ok}
    assert (
        "vectors/messages/accept/keys_reversed.json",
        "the canonical re-encoding is not canonical_hex",
    ) in failed
    assert ("vectors/messages/other/x.json", "unknown kind 'other'") in failed
    assert ("vectors/messages/bid.json", "differs from the code") in failed
    assert ("vectors/messages/bid.json", "msgpack and JSON forms decode to different messages") in failed
    assert ("schemas/task.schema.json", "missing") in failed
    assert ("schemas/old.schema.json", "stale (not generated)") in failed
    assert ("vectors/messages/invalid/truncated.json", "decoded, but every decoder must refuse it") in failed

    result = runner.invoke(app, ["spec", "check", "--spec-dir", str(spec)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "FAIL" in result.output and "checks failed" in result.output


def vector_hex(tag: str) -> str:
    return str(json.loads((VECTORS / f"{tag}.json").read_text(encoding="utf-8"))["msgpack_hex"])


def test_a_check_that_raises_is_reported_not_fatal(tmp_path: Path) -> None:
    def broken(spec_dir: Path) -> list[spec_cli.CheckResult]:
        raise RuntimeError("boom")

    results = spec_cli.run_checks(tmp_path, [broken, spec_cli.check_message_vectors])
    assert [r.ok for r in results] == [False, False]
    assert "RuntimeError: boom" in results[0].detail and results[1].detail == "no vectors found"


def test_spec_schemas_and_vectors_write_what_check_expects(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    (spec / "vectors" / "messages").mkdir(parents=True)
    (spec / "vectors" / "messages" / "stale.json").write_text("{}", encoding="utf-8")
    for command in ("schemas", "vectors"):
        result = runner.invoke(app, ["spec", command, "--spec-dir", str(spec)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
    assert not (spec / "vectors" / "messages" / "stale.json").exists()
    assert all(r.ok for r in spec_cli.run_checks(spec, [spec_cli.check_artifacts, spec_cli.check_message_vectors]))
    result = runner.invoke(app, ["spec", "vectors", "--spec-dir", str(spec)], env={"COLUMNS": "200"})
    assert "unchanged" in result.output and "created" not in result.output


def test_spec_check_without_a_spec_dir_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["spec", "check", "--spec-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2


# --- spec/PROTOCOL.md sections 3 and 12 against the types ---------------------------------------------------
PROTOCOL = SPEC / "PROTOCOL.md"
HEADER_FIELDS = ("v", "id", "sender", "ts", "expires_ns")
RECORD_TYPES = (ModelOffer, Connectivity, ChatMessage, Constraints, Policy, Usage, Timings)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    ends = [i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i != -1]
    return text[start : min(ends)] if ends else text[start:]


def _table_keys(section: str) -> list[str]:
    return [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]


def test_section_3_lists_every_field_of_every_type_in_wire_order() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    assert _table_keys(_section(text, "### 3.1 Header fields")) == ["type", *HEADER_FIELDS]
    types: list[type] = [*MESSAGE_TYPES, *RECORD_TYPES]
    for type_ in types:
        match = re.search(rf"^### 3\.\d+ {type_.__name__} \(", text, re.MULTILINE)
        assert match is not None, f"spec/PROTOCOL.md section 3 has no heading for {type_.__name__}"
        fields = [f for f in type_.__struct_fields__ if f not in HEADER_FIELDS or type_ not in MESSAGE_TYPES]
        assert _table_keys(_section(text, match.group(0))) == fields, type_.__name__


def test_section_12_table_is_allowed_reasons() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    columns = ["withdraw", "decline", "award_reject", "cancel", "failure"]
    table: dict[str, set[str]] = {c: set() for c in columns}
    codes = []
    for line in _section(text, "## 12. Reason codes").splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            code = cells[0].strip("`")
            codes.append(code)
            for column, cell in zip(columns, cells[2:], strict=True):
                if cell == "x":
                    table[column].add(code)
    assert sorted(codes) == sorted(c.value for c in ReasonCode)
    assert table == {tag: {c.value for c in ALLOWED_REASONS[tag]} for tag in columns}
