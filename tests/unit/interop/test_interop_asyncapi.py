"""spec/asyncapi.yaml: generated from the types and subject scheme, valid AsyncAPI 3.0, and not stale."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.protocol import codec, subjects
from accord.protocol.messages import MESSAGE_TYPES, Advertise, Message, Tier, message_tag
from accord.security.envelope import PAYLOAD_TYPE_FRAME
from accord.spec.asyncapi import (
    ASYNCAPI_VERSION,
    CHANNEL_MESSAGES,
    WIRE_CONTENT_TYPE,
    asyncapi_document,
    asyncapi_yaml,
    render_yaml,
)
from tests.support import hypothesis_strategies as acst
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
SPEC_FILE = ROOT / "spec" / "asyncapi.yaml"
VENDOR = ROOT / "spec" / "vendor" / "asyncapi"


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # loading only: libyaml is much faster where present


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


@pytest.fixture(scope="module")
def generated_yaml() -> str:
    return asyncapi_yaml()


@pytest.fixture(scope="module")
def committed_yaml() -> str:
    assert SPEC_FILE.exists(), "spec/asyncapi.yaml is missing: run `accord interop asyncapi`"
    return SPEC_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((VENDOR / "3.0.0.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_committed_file_is_not_stale(committed_yaml: str, generated_yaml: str) -> None:
    assert committed_yaml == generated_yaml, "spec/asyncapi.yaml is stale: run `accord interop asyncapi`"


def test_yaml_is_deterministic_and_loads_back(document: dict[str, Any], generated_yaml: str) -> None:
    assert generated_yaml == render_yaml(asyncapi_document())  # a fresh build, not the cached text
    assert yaml.load(generated_yaml, Loader=_Loader) == document


def test_vendored_schema_is_the_asyncapi_3_0_0_schema() -> None:
    schema = json.loads((VENDOR / "3.0.0.json").read_text(encoding="utf-8"))
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    assert schema["properties"]["asyncapi"]["const"] == ASYNCAPI_VERSION
    assert "Apache License" in (VENDOR / "LICENSE").read_text(encoding="utf-8")
    assert (VENDOR / "NOTICE").exists()


def test_document_validates_against_the_published_asyncapi_schema(
    document: dict[str, Any], asyncapi_validator: jsonschema.Draft7Validator, committed_yaml: str
) -> None:
    errors = [f"{e.json_path}: {e.message[:200]}" for e in asyncapi_validator.iter_errors(document)]
    assert errors == []
    # ... and the committed YAML (what tools read) too.
    committed = yaml.load(committed_yaml, Loader=_Loader)
    assert list(asyncapi_validator.iter_errors(committed)) == []


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d["info"].pop("version"), id="no-info-version"),
        pytest.param(lambda d: d["channels"]["direct"].update(address=5), id="address-not-string"),
        pytest.param(lambda d: d["components"]["messages"]["Bid"].update(payload=[]), id="payload-not-schema"),
        pytest.param(lambda d: d["operations"]["agentAdvertise"].update(action="publish"), id="v2-action"),
        pytest.param(
            lambda d: d["components"]["parameters"]["announceTier"].update(pattern="^x$"), id="param-pattern"
        ),
        pytest.param(
            lambda d: d["operations"]["agentAdvertise"]["bindings"]["nats"].update(queue=1), id="nats-binding"
        ),
    ],
)
def test_the_schema_check_can_fail(
    document: dict[str, Any], asyncapi_validator: jsonschema.Draft7Validator, mutate: Any
) -> None:
    broken = copy.deepcopy(document)
    mutate(broken)
    assert next(asyncapi_validator.iter_errors(broken), None) is not None


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_internal_reference_resolves(document: dict[str, Any]) -> None:
    refs = list(_refs(document))
    assert len(refs) > 50
    for ref in refs:
        _resolve(document, ref)


_ADDRESSES: dict[str, str] = {key: value["address"] for key, value in asyncapi_document()["channels"].items()}


def _fill(address: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], address)


@given(
    tier=st.sampled_from(Tier),
    region=acst.tokens(),
    residency=acst.tokens().filter(lambda t: t != subjects.ANY),
    skill=acst.tokens(),
    kind=acst.tokens(),
    a=acst.agent_ids(),
    b=acst.agent_ids(),
)
@settings(max_examples=25)
def test_channel_addresses_are_the_subject_scheme(
    tier: Tier, region: str, residency: str, skill: str, kind: str, a: str, b: str
) -> None:
    addr = _ADDRESSES
    assert _fill(addr["advertise"], {"tier": tier.value, "region": region, "agent": a}) == subjects.advertise(
        tier, region, a
    )
    assert _fill(
        addr["announce"], {"tier": tier.value, "residency": residency, "skill": skill, "requester": a}
    ) == subjects.announce(tier, residency, skill, a)
    assert _fill(addr["direct"], {"recipient": a, "sender": b}) == subjects.direct(a, b)
    assert _fill(addr["log"], {"kind": kind, "agent": a}) == subjects.log(kind, a)


def test_channel_parameters_match_the_addresses(document: dict[str, Any]) -> None:
    for key, channel in document["channels"].items():
        in_address = re.findall(r"\{(\w+)\}", channel["address"])
        assert list(channel["parameters"]) == in_address, key
    params = document["components"]["parameters"]
    assert params["advertiseTier"]["enum"] == [t.value for t in Tier]
    assert params["announceTier"]["enum"] == [*(t.value for t in Tier), subjects.ANY]
    token = re.compile(params["announceSkill"]["x-accord-pattern"])
    agent = re.compile(params["directSender"]["x-accord-pattern"])
    assert token.search("chat") and not token.search("a.b") and not token.search("*")
    assert agent.search(params["directSender"]["examples"][0]) and not agent.search("UABC")


def test_every_message_type_has_a_message_and_a_channel(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    assert set(messages) == {t.__name__ for t in MESSAGE_TYPES}
    on_channels = {t for types in CHANNEL_MESSAGES.values() for t in types}
    assert on_channels == set(MESSAGE_TYPES)
    for t in MESSAGE_TYPES:
        message = messages[t.__name__]
        assert message["name"] == message_tag(t)
        assert message["contentType"] == WIRE_CONTENT_TYPE
        assert message["payload"] == {"$ref": f"#/components/schemas/{t.__name__}"}
    assert document["defaultContentType"] == WIRE_CONTENT_TYPE
    envelope = document["components"]["schemas"]["Envelope"]
    assert set(envelope["required"]) == {"v", "payload_type", "payload", "key_id", "sig"}
    assert PAYLOAD_TYPE_FRAME in document["info"]["description"]


def test_operations_send_and_receive_what_their_channel_carries(document: dict[str, Any]) -> None:
    operations = document["operations"]
    assert {op["action"] for op in operations.values()} == {"send", "receive"}
    for key, op in operations.items():
        channel_ref = op["channel"]["$ref"]
        channel = _resolve(document, channel_ref)
        for ref in (m["$ref"] for m in op["messages"]):
            assert ref.startswith(channel_ref + "/messages/"), (key, ref)
            assert _resolve(document, ref) in channel["messages"].values()
        assert op["bindings"]["nats"]["bindingVersion"] == "0.1.0"
    # Each message an agent sends on the direct channel is one a requester receives there, and vice versa.
    assert operations["agentSendDirect"]["messages"] == operations["requesterReceiveDirect"]["messages"]
    assert operations["requesterSendDirect"]["messages"] == operations["agentReceiveDirect"]["messages"]


@pytest.fixture(scope="module")
def payload_validators(document: dict[str, Any]) -> dict[type[Message], jsonschema.Draft7Validator]:
    return {
        t: jsonschema.Draft7Validator(
            {"$ref": f"#/components/schemas/{t.__name__}", "components": document["components"]}
        )
        for t in MESSAGE_TYPES
    }


@given(message=acst.messages())
@settings(max_examples=60)
def test_payload_schemas_accept_real_messages(
    message: Message, payload_validators: dict[type[Message], jsonschema.Draft7Validator]
) -> None:
    decoded = json.loads(codec.encode_json(message))
    errors = [e.message[:200] for e in payload_validators[type(message)].iter_errors(decoded)]
    assert errors == []


def test_payload_schemas_refuse_bad_messages(
    payload_validators: dict[type[Message], jsonschema.Draft7Validator],
) -> None:
    validator = payload_validators[Advertise]
    good = {
        "type": "advertise",
        "id": "0" * 32,
        "sender": "U" + "A" * 55,
        "ts": 1,
        "name": "a",
        "tier": "edge",
        "region": "eu",
        "models": [{"name": "m", "context_window": 1, "tokens_per_s": 1.0}],
    }
    assert list(validator.iter_errors(good)) == []
    for bad in (
        {**good, "tier": "moon"},
        {**good, "region": "eu.west"},
        {**good, "sender": "not-a-key"},
        {**good, "models": []},
        {k: v for k, v in good.items() if k != "name"},
    ):
        assert list(validator.iter_errors(bad)) != [], bad
