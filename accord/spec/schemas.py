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
    "as_json",
    "message_schemas",
    "outcome_schema",
    "portable",
    "render_json",
    "schema_components",
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


def as_json(value: object) -> JsonValue:
    """msgspec builds schemas from plain dicts, lists and scalars; round-trip to get the JsonValue type."""
    result: JsonValue = json.loads(json.dumps(value))
    return result


def _struct_types(node: object, found: dict[str, msgspec.inspect.StructType]) -> None:
    """Every Struct type reachable from an inspected type, by class name (msgspec's component names)."""
    if isinstance(node, msgspec.inspect.StructType):
        if node.cls.__name__ not in found:
            found[node.cls.__name__] = node
            for f in node.fields:
                _struct_types(f.type, found)
    elif isinstance(node, msgspec.inspect.Type):
        for name in node.__struct_fields__:
            _struct_types(getattr(node, name), found)
    elif isinstance(node, tuple):
        for item in node:
            _struct_types(item, found)


def _object(value: JsonValue) -> JsonObject:
    if not isinstance(value, dict):  # pragma: no cover - msgspec describes every schema as an object
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _add_factory_defaults(components: JsonObject, types: tuple[object, ...]) -> None:
    """Give every field whose default comes from a ``default_factory`` its ``default``: msgspec's generator writes
    one only for the builtin empty containers, so ``Advertise.protocol_versions`` lost its ``[1]``."""
    found: dict[str, msgspec.inspect.StructType] = {}
    _struct_types(msgspec.inspect.multi_type_info(types), found)
    for name, struct in found.items():
        properties = _object(_object(components[name])["properties"])
        for f in struct.fields:
            prop = _object(properties[f.encode_name])
            if f.default_factory is not msgspec.NODEFAULT and "default" not in prop:
                prop["default"] = as_json(msgspec.to_builtins(f.default_factory()))


def schema_components(types: tuple[object, ...], ref_template: str) -> tuple[list[JsonObject], JsonObject]:
    """``msgspec.json.schema_components`` as portable JSON (ECMA-262 patterns), with every default."""
    raw_roots, raw_components = msgspec.json.schema_components(types, ref_template=ref_template)
    components = _object(as_json(raw_components))
    _add_factory_defaults(components, types)
    return [_object(portable(as_json(root))) for root in raw_roots], _object(portable(components))


def message_schemas() -> dict[str, JsonObject]:
    """File name -> schema document: one per message type plus the combined :data:`COMBINED_SCHEMA_FILE`."""
    roots, components = schema_components((AnyMessage, *MESSAGE_TYPES), _REF_PREFIX + "{name}")
    combined = roots[0]
    docs: dict[str, JsonObject] = {
        COMBINED_SCHEMA_FILE: {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": f"Accord v{PROTOCOL_VERSION} message (any type, discriminated by `type`)",
            "$comment": _COMMENT,
            **combined,
            "$defs": _reachable(combined, components),
        }
    }
    for type_, root in zip(MESSAGE_TYPES, roots[1:], strict=True):
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
    (root,), components = schema_components((Outcome,), _REF_PREFIX + "{name}")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"Accord outcome record v{OUTCOME_VERSION} (one line of an outcome log, spec/OUTCOMES.md)",
        "$comment": "Generated from accord.routing.records.Outcome by `accord spec schemas`; do not edit.",
        **root,
        "$defs": _reachable(root, components),
    }


def render_json(document: object) -> bytes:
    """The exact bytes of a generated JSON file: 2-space indent, UTF-8, key order kept, final newline."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def schema_files() -> dict[str, bytes]:
    """File name (relative to spec/schemas/) -> exact file bytes: every message's and the outcome record's."""
    documents = {**message_schemas(), OUTCOME_SCHEMA_FILE: outcome_schema()}
    return {name: render_json(doc) for name, doc in documents.items()}
