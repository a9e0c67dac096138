"""JSON Schema (draft 2020-12) for the v1 messages and the outcome-log record, generated from the types. Pure:
builds data, writes nothing.

``accord spec schemas`` writes :func:`schema_files` into spec/schemas/; a golden test and ``accord spec check``
fail when the committed files differ from what this module generates.

The schemas describe the JSON form of a message. The msgpack wire form has the same structure: the same
field names and values, with ``bytes`` fields as msgpack bin instead of base64 strings (spec section 2).
``outcome.schema.json`` describes one line of an outcome log (JSON Lines of
:class:`~accord.routing.records.Outcome`, spec/OUTCOMES.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Final

import msgspec

from accord.protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, AnyMessage, Message, message_tag
from accord.routing.records import OUTCOME_VERSION, Outcome

__all__ = [
    "COMBINED_SCHEMA_FILE",
    "JSON_SCHEMA_DIALECT",
    "OUTCOME_SCHEMA_FILE",
    "JsonObject",
    "JsonValue",
    "message_schemas",
    "outcome_schema",
    "portable",
    "render_json",
    "schema_file_name",
    "schema_files",
]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]
JsonObject = dict[str, JsonValue]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
COMBINED_SCHEMA_FILE: Final = "messages.schema.json"
OUTCOME_SCHEMA_FILE: Final = "outcome.schema.json"
_REF_PREFIX: Final = "#/$defs/"
_COMMENT: Final = (
    "Generated from accord.protocol.messages by `accord spec schemas`; do not edit. Describes the JSON form; "
    "the msgpack wire form has the same structure with bytes as msgpack bin (spec/PROTOCOL.md section 2)."
)


def schema_file_name(type_: type[Message]) -> str:
    """``<tag>.schema.json``, e.g. ``award_ack.schema.json``."""
    return f"{message_tag(type_)}.schema.json"


def portable(node: JsonValue) -> JsonValue:
    """Rewrite Python-only regex syntax for ECMA-262 (JSON Schema's dialect): a final ``\\Z`` becomes ``$``."""
    if isinstance(node, dict):
        out: JsonObject = {}
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str) and value.endswith("\\Z"):
                out[key] = value[:-2] + "$"
            else:
                out[key] = portable(value)
        return out
    if isinstance(node, list):
        return [portable(item) for item in node]
    return node


def _refs(node: JsonValue) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF_PREFIX):
                yield value[len(_REF_PREFIX) :]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _reachable(root: JsonValue, components: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """The component definitions ``root`` refers to, transitively, sorted by name."""
    seen: set[str] = set()
    todo = list(_refs(root))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_refs(components[name]))
    return {name: components[name] for name in sorted(seen)}


def _as_json(value: object) -> JsonValue:
    """msgspec builds schemas from plain dicts, lists and scalars; round-trip to get the JsonValue type."""
    result: JsonValue = json.loads(json.dumps(value))
    return result


def message_schemas() -> dict[str, JsonObject]:
    """File name -> schema document: one per message type plus the combined :data:`COMBINED_SCHEMA_FILE`."""
    roots, raw_components = msgspec.json.schema_components(
        (AnyMessage, *MESSAGE_TYPES), ref_template=_REF_PREFIX + "{name}"
    )
    components_value = portable(_as_json(raw_components))
    if not isinstance(components_value, dict):  # pragma: no cover - msgspec returns a dict
        raise TypeError("schema components are not an object")
    components: dict[str, JsonValue] = components_value
    docs: dict[str, JsonObject] = {}

    combined = portable(_as_json(roots[0]))
    if not isinstance(combined, dict):  # pragma: no cover
        raise TypeError("schema root is not an object")
    docs[COMBINED_SCHEMA_FILE] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"Accord v{PROTOCOL_VERSION} message (any type, discriminated by `type`)",
        "$comment": _COMMENT,
        **combined,
        "$defs": _reachable(combined, components),
    }
    for type_, root_value in zip(MESSAGE_TYPES, roots[1:], strict=True):
        root = portable(_as_json(root_value))
        if not isinstance(root, dict):  # pragma: no cover
            raise TypeError("schema root is not an object")
        docs[schema_file_name(type_)] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": f'Accord v{PROTOCOL_VERSION} {type_.__name__} message (type "{message_tag(type_)}")',
            "$comment": _COMMENT,
            **root,
            "$defs": _reachable(root, components),
        }
    return docs


def outcome_schema() -> JsonObject:
    """The schema of one line of an outcome log (one :class:`~accord.routing.records.Outcome` as JSON)."""
    (root,), components = msgspec.json.schema_components((Outcome,), ref_template=_REF_PREFIX + "{name}")
    root_value = portable(_as_json(root))
    components_value = portable(_as_json(components))
    if not isinstance(root_value, dict) or not isinstance(components_value, dict):  # pragma: no cover
        raise TypeError("schema root is not an object")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"Accord outcome record v{OUTCOME_VERSION} (one line of an outcome log, spec/OUTCOMES.md)",
        "$comment": "Generated from accord.routing.records.Outcome by `accord spec schemas`; do not edit.",
        **root_value,
        "$defs": _reachable(root_value, components_value),
    }


def render_json(document: object) -> bytes:
    """The exact bytes of a generated JSON file: 2-space indent, UTF-8, key order kept, final newline."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def schema_files() -> dict[str, bytes]:
    """File name (relative to spec/schemas/) -> exact file bytes: every message's and the outcome record's."""
    documents = {**message_schemas(), OUTCOME_SCHEMA_FILE: outcome_schema()}
    return {name: render_json(doc) for name, doc in documents.items()}
