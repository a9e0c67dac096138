"""A2A interop: exported cards are valid A2A cards (checked with the a2a-sdk types); imports are sound or refuse.

There is no registry package that ships A2A's JSON Schema, so validity is checked with the PyPI package
``a2a-sdk``: its v0.3 pydantic ``AgentCard`` (generated from A2A's v0.3 JSON Schema), its A2A 1.0 protobuf
``AgentCard`` (strict JSON parsing: an unknown field fails) and its client's card parser.
"""

from __future__ import annotations

import copy
import json
import tomllib
from typing import Any

import msgspec
import pytest
from a2a.client.card_resolver import parse_agent_card
from a2a.compat.v0_3 import types as a2a_v03
from a2a.types import a2a_pb2
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.errors import AccordError
from accord.interop import (
    ACCORD_NATS_BINDING,
    RESOURCES_EXTENSION_URI,
    InteropError,
    UnsoundMappingError,
    advertise_to_card,
    card_to_agent_config,
)
from accord.interop.toml import dumps as toml_dumps
from accord.protocol.messages import Advertise, Connectivity, ModelOffer, Tier
from accord.security.nkeys import encode_public
from tests.support import hypothesis_strategies as acst

GATEWAY = "https://gateway.example.com/a2a/v1"


def _advertise(**overrides: Any) -> Advertise:
    fields: dict[str, Any] = {
        "id": "0" * 32,
        "sender": encode_public(bytes(range(32))),
        "ts": 1_700_000_000_000_000_000,
        "name": "edge-box-1",
        "tier": Tier.EDGE,
        "region": "eu-west",
        "residency": ["eu"],
        "skills": ["chat", "summarize"],
        "models": [
            ModelOffer(
                name="llama-3.1-8b-instruct",
                context_window=8192,
                tokens_per_s=42.5,
                price_in_per_1k_micros=100,
                price_out_per_1k_micros=300,
                quality=0.62,
                ttft_ms=120,
            ),
            ModelOffer(name="qwen2.5:0.5b", context_window=32768, tokens_per_s=110.0),
        ],
        "slots": 4,
        "connectivity": Connectivity(metered=True, rtt_ms=35, bandwidth_kbps=20_000),
        "battery": 0.8,
    }
    return Advertise(**{**fields, **overrides})


def _valid_v03(card: dict[str, Any]) -> None:
    """Valid for the v0.3 pydantic model, with nothing in it that the model does not know (it drops extras)."""
    model = a2a_v03.AgentCard.model_validate(card)
    assert model.model_dump(mode="json", by_alias=True, exclude_none=True) == card


def _valid_v10(card: dict[str, Any]) -> a2a_pb2.AgentCard:
    """Valid A2A 1.0 JSON: the protobuf JSON parser refuses unknown fields and wrong types."""
    return json_format.ParseDict(copy.deepcopy(card), a2a_pb2.AgentCard())


def _sound_fields(advertise: Advertise) -> dict[str, Any]:
    return {
        "name": advertise.name,
        "tier": advertise.tier.value,
        "region": advertise.region,
        "residency": list(advertise.residency),
        "skills": list(advertise.skills),
        "slots": advertise.slots,
        "resources": {k: v for k, v in msgspec.to_builtins(advertise.models[0]).items() if k != "name"},
    }


# --- export ----------------------------------------------------------------------------------------------------
def test_exported_card_fields() -> None:
    adv = _advertise()
    card = advertise_to_card(adv, url=GATEWAY, bearer_auth=True)
    _valid_v03(card)
    assert card["protocolVersion"] == "0.3.0"
    assert (card["name"], card["url"], card["preferredTransport"]) == ("edge-box-1", GATEWAY, "JSONRPC")
    assert card["capabilities"]["streaming"] is True
    assert card["defaultInputModes"] == card["defaultOutputModes"] == ["text/plain"]
    assert [s["id"] for s in card["skills"]] == [
        "model:llama-3.1-8b-instruct",
        "model:qwen2.5:0.5b",
        "skill:chat",
        "skill:summarize",
    ]
    first = card["skills"][0]
    assert {"tier:edge", "region:eu-west", "residency:eu", "model:llama-3.1-8b-instruct"} <= set(first["tags"])
    assert "$0.0001 per 1k input tokens" in first["description"]
    assert "$0.0003 per 1k output tokens" in first["description"]
    (ext,) = card["capabilities"]["extensions"]
    assert ext["uri"] == RESOURCES_EXTENSION_URI and ext["required"] is False
    params = ext["params"]
    assert params["agent_id"] == adv.sender
    assert params["models"][0]["price_in_per_1k_micros"] == 100
    assert params["models"][0]["tokens_per_s"] == 42.5
    assert params["models"][0]["context_window"] == 8192
    assert params["connectivity"] == {
        "metered": True,
        "intermittent": False,
        "rtt_ms": 35,
        "bandwidth_kbps": 20_000,
    }
    assert (params["tier"], params["region"], params["residency"], params["slots"]) == (
        "edge",
        "eu-west",
        ["eu"],
        4,
    )
    assert params["battery"] == 0.8
    assert card["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert card["security"] == [{"bearer": []}]


def test_a2a_1_0_clients_read_the_v03_card() -> None:
    card = advertise_to_card(_advertise(), url=GATEWAY, bearer_auth=True)
    core = parse_agent_card(copy.deepcopy(card))  # the a2a-sdk 1.x client's card parser
    assert [(i.url, i.protocol_binding) for i in core.supported_interfaces] == [(GATEWAY, "JSONRPC")]
    assert core.capabilities.streaming
    assert [e.uri for e in core.capabilities.extensions] == [RESOURCES_EXTENSION_URI]
    assert list(core.security_requirements[0].schemes) == ["bearer"]
    assert len(core.skills) == 4


def test_a2a_1_0_form() -> None:
    card = advertise_to_card(_advertise(), url=GATEWAY, binding="HTTP+JSON", bearer_auth=True, a2a_version="1.0")
    core = _valid_v10(card)
    assert "url" not in card and "protocolVersion" not in card
    assert [(i.url, i.protocol_binding, i.protocol_version) for i in core.supported_interfaces] == [
        (GATEWAY, "HTTP+JSON", "1.0")
    ]
    assert core.security_schemes["bearer"].http_auth_security_scheme.scheme == "bearer"
    assert list(core.security_requirements[0].schemes) == ["bearer"]
    assert core.capabilities.extensions[0].params["tier"] == "edge"


@given(adv=acst.advertises(), version=st.sampled_from(["0.3", "1.0"]), bearer=st.booleans())
@settings(max_examples=40)
def test_exported_cards_validate_and_round_trip(adv: Advertise, version: Any, bearer: bool) -> None:
    card = advertise_to_card(adv, url=GATEWAY, bearer_auth=bearer, a2a_version=version)
    if version == "0.3":
        _valid_v03(card)
    else:
        _valid_v10(card)
    assert len({s["id"] for s in card["skills"]}) == len(card["skills"])
    config = card_to_agent_config(json.loads(json.dumps(card)))
    assert {k: config[k] for k in _sound_fields(adv)} == _sound_fields(adv)
    assert config["backend"]["kind"] == "a2a" and config["backend"]["url"] == GATEWAY
    assert ("api_key_env" in config["backend"]) is bearer
    assert tomllib.loads(toml_dumps({"agents": [config]})) == {"agents": [config]}


def test_round_trip_through_the_protobuf_form() -> None:
    """A 1.0 SDK re-serialises extension params through protobuf Struct (numbers become doubles)."""
    adv = _advertise()
    card = advertise_to_card(adv, url=GATEWAY, a2a_version="1.0")
    reserialised = json_format.MessageToDict(_valid_v10(card))
    assert reserialised["capabilities"]["extensions"][0]["params"]["slots"] == 4.0
    config = card_to_agent_config(reserialised)
    assert {k: config[k] for k in _sound_fields(adv)} == _sound_fields(adv)


def test_openai_compatible_endpoint() -> None:
    adv = _advertise()
    card = advertise_to_card(adv, url=GATEWAY, openai_base_url="http://127.0.0.1:8000/v1")
    _valid_v03(card)
    config = card_to_agent_config(card)
    assert config["backend"] == {
        "kind": "openai",
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "llama-3.1-8b-instruct",
    }
    # A third-party card that declares an OPENAI interface and names its model in a skill.
    third = {
        "name": "vLLM box",
        "description": "x",
        "url": "http://10.0.0.5:8000/v1",
        "preferredTransport": "OPENAI",
        "version": "1",
        "capabilities": {},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "gen", "name": "gen", "description": "d", "tags": ["model:mistral-7b"]}],
    }
    config = card_to_agent_config(third)
    assert config["backend"] == {"kind": "openai", "base_url": "http://10.0.0.5:8000/v1", "model": "mistral-7b"}
    assert config["name"] == "vLLM-box"


def test_nats_card_for_accord_aware_clients() -> None:
    card = advertise_to_card(_advertise(), url="nats://127.0.0.1:4222", binding=ACCORD_NATS_BINDING)
    _valid_v03(card)
    with pytest.raises(UnsoundMappingError) as info:
        card_to_agent_config(card)
    assert info.value.reason == "accord_native"


@pytest.mark.parametrize(
    ("url", "binding"),
    [
        ("ftp://x/y", "JSONRPC"),
        ("/relative", "JSONRPC"),
        ("https://x", "NATS?"),
        ("https://x", ACCORD_NATS_BINDING),
    ],
)
def test_export_refuses_bad_urls(url: str, binding: str) -> None:
    with pytest.raises(InteropError) as info:
        advertise_to_card(_advertise(), url=url, binding=binding)
    assert info.value.reason in {"invalid_url", "invalid_binding"}
    assert isinstance(info.value, AccordError)


# --- import of third-party cards -------------------------------------------------------------------------------
def _third_party(**overrides: Any) -> dict[str, Any]:
    """A card as an A2A v0.3 SDK agent publishes it (built with the SDK's own model)."""
    card = a2a_v03.AgentCard(
        name="Recipe Agent",
        description="Agent that helps users with recipes and cooking.",
        url="https://recipes.example.com/a2a",
        version="1.0.0",
        capabilities=a2a_v03.AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            a2a_v03.AgentSkill(id="recipe-search", name="Recipe search", description="d", tags=["cooking"]),
            a2a_v03.AgentSkill(id="meal plan", name="Meal plan", description="d", tags=["cooking"]),
        ],
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    card.update(overrides)
    return card


def test_import_third_party_card() -> None:
    config = card_to_agent_config(_third_party())
    assert config == {
        "name": "Recipe-Agent",
        "tier": "cloud",
        "region": "unknown",
        "residency": [],
        "skills": ["chat", "recipe-search"],
        "slots": 1,
        "backend": {"kind": "a2a", "url": "https://recipes.example.com/a2a", "binding": "JSONRPC"},
    }
    assert "resources" not in config  # no prices without the resources extension: nothing is invented
    overridden = card_to_agent_config(_third_party(), tier=Tier.EDGE, region="home")
    assert (overridden["tier"], overridden["region"]) == ("edge", "home")


def test_import_picks_a_callable_interface() -> None:
    card = _third_party(
        url="https://recipes.example.com/grpc",
        preferredTransport="GRPC",
        additionalInterfaces=[
            {"url": "https://recipes.example.com/grpc", "transport": "GRPC"},
            {"url": "https://recipes.example.com/rest", "transport": "HTTP+JSON"},
        ],
    )
    _valid_v03(card)
    assert card_to_agent_config(card)["backend"] == {
        "kind": "a2a",
        "url": "https://recipes.example.com/rest",
        "binding": "HTTP+JSON",
    }


def test_import_maps_header_api_keys() -> None:
    card = _third_party(
        securitySchemes={"key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        security=[{"key": []}],
    )
    _valid_v03(card)
    backend = card_to_agent_config(card)["backend"]
    assert backend["api_key_header"] == "X-API-Key"
    assert backend["api_key_env"] == "RECIPE_AGENT_API_KEY"


_OAUTH = {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": "https://a/t", "scopes": {}}}}


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        pytest.param({"description": "no name", "url": GATEWAY}, "invalid_card", id="no-name"),
        pytest.param(_third_party(capabilities=[]), "invalid_card", id="capabilities-not-object"),
        pytest.param(_third_party(name="???"), "invalid_name", id="name-without-letters"),
        pytest.param(_third_party(url="https://x/grpc", preferredTransport="GRPC"), "no_endpoint", id="grpc-only"),
        pytest.param(_third_party(url="ws://x/a2a"), "no_endpoint", id="not-http"),
        pytest.param({k: v for k, v in _third_party().items() if k != "url"}, "no_endpoint", id="no-url"),
        pytest.param(
            _third_party(capabilities={"extensions": [{"uri": "https://example.com/ext/pay", "required": True}]}),
            "required_extension",
            id="required-extension",
        ),
        pytest.param(
            _third_party(securitySchemes={"oauth": _OAUTH}, security=[{"oauth": ["read"]}]),
            "unsupported_security",
            id="oauth2-only",
        ),
        pytest.param(
            _third_party(securitySchemes={"m": {"type": "mutualTLS"}}, security=[{"m": []}]),
            "unsupported_security",
            id="mtls-only",
        ),
        pytest.param(
            _third_party(
                securitySchemes={
                    "b": {"type": "http", "scheme": "bearer"},
                    "k": {"type": "apiKey", "in": "query"},
                },
                security=[{"b": [], "k": []}],
            ),
            "unsupported_security",
            id="two-credentials-at-once",
        ),
        pytest.param(_third_party(preferredTransport="OPENAI"), "no_model", id="openai-without-model"),
    ],
)
def test_unsound_cards_are_refused(card: dict[str, Any], reason: str) -> None:
    with pytest.raises(UnsoundMappingError) as info:
        card_to_agent_config(card)
    assert info.value.reason == reason, str(info.value)


def test_a_required_unknown_extension_is_refused_even_after_ours() -> None:
    card = advertise_to_card(_advertise(), url=GATEWAY)
    card["capabilities"]["extensions"].append({"uri": "https://example.com/ext/pay", "required": True})
    with pytest.raises(UnsoundMappingError) as info:
        card_to_agent_config(card)
    assert info.value.reason == "required_extension"


def _with_params(**changes: Any) -> dict[str, Any]:
    card = advertise_to_card(_advertise(), url=GATEWAY)
    card["capabilities"]["extensions"][0]["params"].update(changes)
    return card


@pytest.mark.parametrize(
    "changes",
    [
        {"tier": "moon"},
        {"region": "eu.west"},
        {"models": []},
        {"models": [{"name": "m", "context_window": 1, "tokens_per_s": 1.0, "price_in_per_1k_micros": -5}]},
        {"agent_id": "not-a-key"},
        {"slots": 0.5},
        {"openai_base_url": "file:///etc/passwd"},
    ],
)
def test_malformed_resources_extension_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(UnsoundMappingError) as info:
        card_to_agent_config(_with_params(**changes))
    assert info.value.reason == "invalid_extension"


def test_optional_unknown_extensions_and_anonymous_alternatives_are_fine() -> None:
    card = _third_party(
        capabilities={"extensions": [{"uri": "https://example.com/ext/x", "required": False}]},
        securitySchemes={"oauth": _OAUTH},
        security=[{"oauth": []}, {}],
    )
    assert card_to_agent_config(card)["backend"] == {
        "kind": "a2a",
        "url": "https://recipes.example.com/a2a",
        "binding": "JSONRPC",
    }


def test_toml_writer_round_trips_awkward_values() -> None:
    doc = {
        "agents": [
            {
                "name": 'quote " backslash \\ tab \t newline \n del \x7f é 🦜',
                "dotted.key": 1,
                "n": -3,
                "f": 1e-05,
                "big": 2**62,
                "flag": False,
                "none": None,
                "list": [1.5, 2.0],
                "inline": [{"a": 1, "b": [True]}, {"c": "d"}],
                "table": {"x": {"y": "z"}, "k": "v"},
            }
        ]
    }
    expected = copy.deepcopy(doc)
    del expected["agents"][0]["none"]
    assert tomllib.loads(toml_dumps(doc)) == expected
