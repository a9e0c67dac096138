"""A2A interop: export an Accord Advertise as an A2A Agent Card, import an A2A card as an Accord agent config.

spec/A2A.md documents the mapping field by field and what does not map. Pure: no I/O.

Export (:func:`advertise_to_card`) writes an A2A v0.3.0 Agent Card (the JSON served at
``/.well-known/agent-card.json``) or, with ``a2a_version="1.0"``, the A2A 1.0 JSON form (``supportedInterfaces``,
``securityRequirements``). Accord's cost and resource fields travel in the card's
``capabilities.extensions`` under :data:`RESOURCES_EXTENSION_URI`, whose ``params`` are :class:`ResourcesParams`
in Accord's JSON form.

Import (:func:`card_to_agent_config`) reads either form and returns a plain dict for the mesh config: an agent
whose backend is the card's A2A endpoint (``{kind = "a2a", url, binding}``) or, when the card points to one, an
OpenAI-compatible endpoint (``{kind = "openai", base_url, model}``). Where the card does not say enough for a
sound mapping it raises :class:`~accord.interop.errors.UnsoundMappingError` instead of guessing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct, field

from accord.interop.errors import InteropError, UnsoundMappingError
from accord.protocol.messages import (
    PROTOCOL_VERSION,
    Advertise,
    AgentId,
    Connectivity,
    ModelOffer,
    ResidencyClasses,
    Skills,
    Tier,
    Token,
    Unit,
    Version,
)

__all__ = [
    "A2A_BINDINGS",
    "A2A_V0_3",
    "A2A_V1_0",
    "ACCORD_NATS_BINDING",
    "OPENAI_BINDING",
    "RESOURCES_EXTENSION_URI",
    "TEXT_MODES",
    "A2AVersion",
    "ResourcesParams",
    "advertise_to_card",
    "card_to_agent_config",
    "resources_params",
]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]
JsonObject = dict[str, JsonValue]
A2AVersion = Literal["0.3", "1.0"]

A2A_V0_3: Final = "0.3.0"
"""``protocolVersion`` of the cards :func:`advertise_to_card` writes by default."""
A2A_V1_0: Final = "1.0"
"""``supportedInterfaces[].protocolVersion`` of the A2A 1.0 form."""
RESOURCES_EXTENSION_URI: Final = "urn:accord:a2a-extension:resources:v1"
"""The A2A extension that carries an Accord agent's costs and resources (params: :class:`ResourcesParams`)."""
A2A_BINDINGS: Final = ("JSONRPC", "HTTP+JSON", "GRPC")
"""The transports (A2A 1.0: protocol bindings) the A2A specification defines."""
ACCORD_NATS_BINDING: Final = "ACCORD+NATS"
"""Accord's own binding name, for a card whose URL is the NATS server of an Accord agent (no A2A gateway)."""
OPENAI_BINDING: Final = "OPENAI"
"""Accord's name for an interface that is an OpenAI-compatible HTTP API (``/v1/chat/completions``)."""
TEXT_MODES: Final = ("text/plain",)
"""Accord tasks take and return text."""

_CALLABLE_BINDINGS: Final = ("JSONRPC", "HTTP+JSON")  # what an Accord a2a backend can speak over httpx
_NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")
_HTTP_SCHEMES: Final = ("http", "https")
_DEFAULT_TIER: Final = Tier.CLOUD
_DEFAULT_REGION: Final = "unknown"
_DEFAULT_SKILL: Final = "chat"
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ResourcesParams(Struct, frozen=True, kw_only=True):
    """``params`` of the resources extension: an Advertise's cost and resource fields, in Accord's JSON form.

    Field names and units are those of :class:`~accord.protocol.messages.Advertise` (money in integer
    micro-USD per 1k tokens, durations in ms). Dynamic heartbeat fields (``load``, ``seq``, ``ts``) are left out:
    a card is a snapshot that outlives a heartbeat. Integers stay below 2**53 so JSON readers that use doubles
    (and protobuf's Struct in A2A 1.0 SDKs) keep them exact.
    """

    agent_id: AgentId
    tier: Tier
    region: Token
    residency: ResidencyClasses = []
    skills: Skills = []
    models: Annotated[list[ModelOffer], Meta(min_length=1, max_length=16)]
    slots: Annotated[int, Meta(ge=1, le=100_000)] = 1
    connectivity: Connectivity = Connectivity()
    battery: Unit | None = None
    protocol_versions: Annotated[list[Version], Meta(min_length=1, max_length=8)] = field(
        default_factory=lambda: [PROTOCOL_VERSION]
    )
    openai_base_url: Annotated[str, Meta(max_length=2048)] | None = None
    """Where the agent's OpenAI-compatible API is, when its operator chooses to publish it; None: not public."""


# --- export ----------------------------------------------------------------------------------------------------
def _check_url(url: str, schemes: Sequence[str], what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes or not parts.netloc:
        raise InteropError("invalid_url", f"{what} must be an absolute {'/'.join(schemes)} URL: {url!r}")
    return url


def _usd(micros: int) -> str:
    """Micro-USD as a plain decimal dollar amount: 1500 -> ``"$0.0015"``."""
    whole, frac = divmod(micros, 1_000_000)
    return f"${whole}.{frac:06d}".rstrip("0").rstrip(".")


def _place_tags(advertise: Advertise) -> list[str]:
    tags = [f"tier:{advertise.tier.value}", f"region:{advertise.region}"]
    tags.extend(f"residency:{r}" for r in advertise.residency)
    return tags


def _model_skill(advertise: Advertise, model: ModelOffer) -> JsonObject:
    return {
        "id": f"model:{model.name}",
        "name": model.name,
        "description": (
            f"Text generation with {model.name}: context window {model.context_window} tokens, about "
            f"{model.tokens_per_s:g} tokens/s, {_usd(model.price_in_per_1k_micros)} per 1k input tokens and "
            f"{_usd(model.price_out_per_1k_micros)} per 1k output tokens."
        ),
        "tags": ["accord", "llm", f"model:{model.name}", *_place_tags(advertise)],
    }


def _task_skill(advertise: Advertise, skill: str) -> JsonObject:
    models = ", ".join(m.name for m in advertise.models)
    return {
        "id": f"skill:{skill}",
        "name": skill,
        "description": f"Accord tasks of kind '{skill}', served with {models}.",
        "tags": ["accord", "skill", f"skill:{skill}", *_place_tags(advertise)],
    }


def _description(advertise: Advertise) -> str:
    text = (
        f"Accord {advertise.tier.value} agent in region {advertise.region}, serving "
        f"{', '.join(m.name for m in advertise.models)}"
    )
    if advertise.residency:
        text += f" (residency classes: {', '.join(advertise.residency)})"
    return (
        text + ". It bids for tasks in Accord's signed contract-net protocol over NATS; prices, capacity and "
        f"placement are in the {RESOURCES_EXTENSION_URI} extension."
    )


def resources_params(advertise: Advertise, *, openai_base_url: str | None = None) -> ResourcesParams:
    """The resources extension's params for an Advertise."""
    return ResourcesParams(
        agent_id=advertise.sender,
        tier=advertise.tier,
        region=advertise.region,
        residency=list(advertise.residency),
        skills=list(advertise.skills),
        models=list(advertise.models),
        slots=advertise.slots,
        connectivity=advertise.connectivity,
        battery=advertise.battery,
        protocol_versions=list(advertise.protocol_versions),
        openai_base_url=openai_base_url,
    )


def advertise_to_card(
    advertise: Advertise,
    *,
    url: str,
    binding: str = "JSONRPC",
    version: str | None = None,
    description: str | None = None,
    bearer_auth: bool = False,
    openai_base_url: str | None = None,
    a2a_version: A2AVersion = "0.3",
) -> JsonObject:
    """The A2A Agent Card (JSON-ready dict) of an Accord agent, as its Advertise describes it.

    ``url`` and ``binding`` say where A2A clients reach the agent: an A2A gateway in front of it (``JSONRPC``,
    ``HTTP+JSON`` or ``GRPC`` at an http(s) URL), or its NATS server with :data:`ACCORD_NATS_BINDING` for
    Accord-aware clients. ``bearer_auth`` declares that the endpoint wants an HTTP bearer token.
    ``openai_base_url`` publishes the agent's OpenAI-compatible API in the resources extension.
    Raises :class:`InteropError` (``invalid_url``) for a URL that does not fit its binding.
    """
    if binding == ACCORD_NATS_BINDING:
        _check_url(url, _NATS_SCHEMES, "an Accord NATS URL")
    elif binding in A2A_BINDINGS or binding == OPENAI_BINDING:
        _check_url(url, _HTTP_SCHEMES, f"a {binding} URL")
    else:
        raise InteropError("invalid_binding", f"unknown binding {binding!r}")
    if openai_base_url is not None:
        _check_url(openai_base_url, _HTTP_SCHEMES, "the OpenAI-compatible base URL")

    built = msgspec.to_builtins(resources_params(advertise, openai_base_url=openai_base_url))
    assert isinstance(built, dict)
    params: JsonObject = {k: v for k, v in built.items() if v is not None}  # battery, openai_base_url
    extension: JsonObject = {
        "uri": RESOURCES_EXTENSION_URI,
        "description": "Accord costs and resources: price per 1k tokens (micro-USD), tokens/s, context window, "
        "tier, region, residency classes, slots, connectivity, battery.",
        "required": False,
        "params": params,
    }
    first_offers: dict[str, ModelOffer] = {}
    for offer in advertise.models:
        first_offers.setdefault(offer.name, offer)  # one skill per model name: skill ids are unique
    skills = [_model_skill(advertise, m) for m in first_offers.values()]
    skills.extend(_task_skill(advertise, s) for s in dict.fromkeys(advertise.skills))
    capabilities: JsonObject = {"streaming": True, "pushNotifications": False, "extensions": [extension]}

    card: JsonObject
    common_head: JsonObject = {
        "name": advertise.name,
        "description": description if description is not None else _description(advertise),
    }
    card_version = version if version is not None else f"accord-v{max(advertise.protocol_versions)}"
    if a2a_version == "0.3":
        card = {
            "protocolVersion": A2A_V0_3,
            **common_head,
            "url": url,
            "preferredTransport": binding,
            "version": card_version,
            "capabilities": capabilities,
        }
        if bearer_auth:
            card["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            card["security"] = [{"bearer": []}]
    elif a2a_version == "1.0":
        card = {
            **common_head,
            "supportedInterfaces": [{"url": url, "protocolBinding": binding, "protocolVersion": A2A_V1_0}],
            "version": card_version,
            "capabilities": capabilities,
        }
        if bearer_auth:
            card["securitySchemes"] = {"bearer": {"httpAuthSecurityScheme": {"scheme": "bearer"}}}
            card["securityRequirements"] = [{"schemes": {"bearer": {"list": []}}}]
    else:
        raise InteropError("invalid_version", f"unknown A2A version {a2a_version!r} (use '0.3' or '1.0')")
    card["defaultInputModes"] = list(TEXT_MODES)
    card["defaultOutputModes"] = list(TEXT_MODES)
    card["skills"] = list(skills)
    return card


# --- import ----------------------------------------------------------------------------------------------------
class _Extension(Struct, frozen=True, kw_only=True):
    uri: str
    required: bool = False
    params: dict[str, object] | None = None


class _Capabilities(Struct, frozen=True, kw_only=True):
    extensions: list[_Extension] | None = None


class _Skill(Struct, frozen=True, kw_only=True):
    id: str
    tags: list[str] | None = None


class _InterfaceV03(Struct, frozen=True, kw_only=True):
    url: str
    transport: str


class _InterfaceV10(Struct, frozen=True, kw_only=True, rename="camel"):
    url: str
    protocol_binding: str


class _Card(Struct, frozen=True, kw_only=True, rename="camel"):
    """The parts of an A2A card (v0.3 or 1.0) the import reads; everything else is ignored."""

    name: str
    url: str | None = None
    preferred_transport: str | None = None
    additional_interfaces: list[_InterfaceV03] | None = None
    supported_interfaces: list[_InterfaceV10] | None = None
    capabilities: _Capabilities = _Capabilities()
    skills: list[_Skill] | None = None
    security_schemes: dict[str, dict[str, object]] | None = None
    security: list[dict[str, list[str]]] | None = None
    security_requirements: list[dict[str, dict[str, dict[str, list[str]]]]] | None = None


def _integral_floats_to_int(node: object) -> object:
    """JSON readers built on doubles (protobuf Struct) turn 500 into 500.0; undo that before strict decoding."""
    if isinstance(node, float) and node.is_integer() and abs(node) < 2**53:
        return int(node)
    if isinstance(node, dict):
        return {k: _integral_floats_to_int(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_integral_floats_to_int(v) for v in node]
    return node


def _parse_card(card: Mapping[str, object]) -> _Card:
    if not isinstance(card, Mapping):
        raise UnsoundMappingError("invalid_card", "an Agent Card is a JSON object")
    try:
        return msgspec.convert(dict(card), _Card)
    except msgspec.ValidationError as exc:
        raise UnsoundMappingError("invalid_card", str(exc)) from exc


def _resources(parsed: _Card) -> ResourcesParams | None:
    """The resources extension's params, if present; refuses a card that requires an extension we lack."""
    extensions = parsed.capabilities.extensions or []
    for ext in extensions:
        if ext.required and ext.uri != RESOURCES_EXTENSION_URI:
            raise UnsoundMappingError(
                "required_extension", f"the card requires extension {ext.uri!r}, which Accord does not implement"
            )
    for ext in extensions:
        if ext.uri == RESOURCES_EXTENSION_URI:
            try:
                return msgspec.convert(_integral_floats_to_int(ext.params or {}), ResourcesParams)
            except msgspec.ValidationError as exc:
                raise UnsoundMappingError("invalid_extension", f"{RESOURCES_EXTENSION_URI}: {exc}") from exc
    return None


def _interfaces(parsed: _Card) -> list[tuple[str, str]]:
    """(url, binding) pairs in the card's order of preference (bindings upper-cased)."""
    if parsed.supported_interfaces:
        return [(i.url, i.protocol_binding.upper()) for i in parsed.supported_interfaces]
    pairs: list[tuple[str, str]] = []
    if parsed.url:
        pairs.append((parsed.url, (parsed.preferred_transport or "JSONRPC").upper()))
    pairs.extend((i.url, i.transport.upper()) for i in parsed.additional_interfaces or [])
    return pairs


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in _HTTP_SCHEMES and bool(parts.netloc)


def _slug(name: str) -> str:
    """The name itself if it is a subject token, else a token made from it (ASCII, other runs become '-')."""
    if _TOKEN.fullmatch(name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_name).strip("-")[:64].strip("-")


def _normalised_schemes(parsed: _Card) -> dict[str, tuple[str, str]]:
    """Scheme name -> (kind, detail): ``("bearer", "")``, ``("header", header name)`` or ``("other", type)``."""
    out: dict[str, tuple[str, str]] = {}
    for name, scheme in (parsed.security_schemes or {}).items():
        kind = scheme.get("type")
        body: Mapping[str, object] = scheme
        if kind is None:  # A2A 1.0: {"httpAuthSecurityScheme": {...}} and the like
            wrapped = {"httpAuthSecurityScheme": "http", "apiKeySecurityScheme": "apiKey"}
            for key, value in scheme.items():
                kind = wrapped.get(key, key)
                body = value if isinstance(value, Mapping) else {}
                break
        if kind == "http" and str(body.get("scheme", "")).lower() == "bearer":
            out[name] = ("bearer", "")
        elif kind == "apiKey" and (body.get("in") or body.get("location")) == "header" and body.get("name"):
            out[name] = ("header", str(body["name"]))
        else:
            out[name] = ("other", str(kind))
    return out


def _alternatives(parsed: _Card) -> list[list[str]] | None:
    """The card's security requirements as alternatives (OR) of scheme-name sets (AND); None: none stated."""
    if parsed.security_requirements is not None:
        return [list(req.get("schemes", {})) for req in parsed.security_requirements]
    if parsed.security is not None:
        return [list(req) for req in parsed.security]
    return None


def _auth(parsed: _Card, env_prefix: str) -> JsonObject:
    """Backend keys for the credentials the card asks for; UnsoundMappingError if Accord cannot present any."""
    schemes = _normalised_schemes(parsed)

    def usable(alternative: list[str]) -> bool:
        return len(alternative) == 1 and schemes.get(alternative[0], ("other", ""))[0] != "other"

    alternatives = _alternatives(parsed)
    if alternatives is None:
        # No requirement stated: the schemes (if any) are offered, not demanded. Use one Accord can present.
        alternatives = [[name] for name in schemes if usable([name])]
        if not alternatives:
            return {}
    elif not alternatives or any(not alt for alt in alternatives):
        return {}  # no requirement, or an empty alternative: anonymous access is allowed
    for alternative in alternatives:
        if usable(alternative):
            kind, header = schemes[alternative[0]]
            auth: JsonObject = {"api_key_env": f"{env_prefix}_API_KEY"}
            if kind == "header":
                auth["api_key_header"] = header
            return auth

    def label(name: str) -> str:
        kind, detail = schemes.get(name, ("other", "undefined"))
        return f"{name} ({detail if kind == 'other' else kind})"

    offered = " or ".join(" + ".join(label(n) for n in alt) for alt in alternatives)
    raise UnsoundMappingError(
        "unsupported_security",
        f"the card accepts only credentials Accord's backends cannot present: {offered}; supported: an HTTP "
        "bearer token or an API key in a header, alone",
    )


def _openai_model(parsed: _Card, resources: ResourcesParams | None) -> str:
    if resources is not None:
        return resources.models[0].name
    for skill in parsed.skills or []:
        for label in [skill.id, *(skill.tags or [])]:
            if label.startswith("model:") and len(label) > len("model:"):
                return label[len("model:") :]
    raise UnsoundMappingError(
        "no_model",
        "the card points to an OpenAI-compatible API but names no model (no 'model:<name>' skill or tag)",
    )


def _backend(parsed: _Card, resources: ResourcesParams | None) -> JsonObject:
    interfaces = _interfaces(parsed)
    openai_url = resources.openai_base_url if resources is not None else None
    if openai_url is None:
        openai_url = next((u for u, b in interfaces if b == OPENAI_BINDING and _is_http(u)), None)
    if openai_url is not None:
        if not _is_http(openai_url):
            raise UnsoundMappingError("invalid_extension", f"openai_base_url is not http(s): {openai_url!r}")
        return {"kind": "openai", "base_url": openai_url, "model": _openai_model(parsed, resources)}
    for url, binding in interfaces:
        if binding in _CALLABLE_BINDINGS and _is_http(url):
            return {"kind": "a2a", "url": url, "binding": binding}
    if any(b == ACCORD_NATS_BINDING for _, b in interfaces):
        raise UnsoundMappingError(
            "accord_native",
            "the card describes an Accord agent reachable over NATS; add its key to the trust store instead of "
            "wrapping it in another agent",
        )
    found = ", ".join(f"{b} at {u}" for u, b in interfaces) or "none"
    raise UnsoundMappingError(
        "no_endpoint",
        f"no interface Accord can call (JSONRPC or HTTP+JSON at an http(s) URL, or an OpenAI-compatible API); "
        f"found: {found}",
    )


def _skills(parsed: _Card, resources: ResourcesParams | None) -> list[JsonValue]:
    if resources is not None:
        return list(resources.skills)
    skills: list[str] = [_DEFAULT_SKILL]
    for skill in parsed.skills or []:
        if _TOKEN.fullmatch(skill.id) and skill.id not in skills and len(skills) < 32:
            skills.append(skill.id)
    return list(skills)


def card_to_agent_config(
    card: Mapping[str, object], *, tier: Tier | None = None, region: str | None = None
) -> JsonObject:
    """An Accord agent config (JSON-ready dict for the mesh config) that serves tasks through the card's endpoint.

    Keys: ``name``, ``tier``, ``region``, ``residency``, ``skills``, ``slots``, ``backend`` and, when the card
    carries the resources extension, ``resources`` (the first model's prices, context window, tokens/s, quality
    and time to first token): exactly what a mesh file's ``[[agents]]`` entry takes, so ``accord up`` runs it.
    ``tier`` and ``region`` override the extension's values; without either they default to ``cloud`` and
    ``unknown``. Raises :class:`UnsoundMappingError` where the card does not support a sound mapping.
    """
    parsed = _parse_card(card)
    resources = _resources(parsed)
    name = _slug(parsed.name)
    if not name:
        raise UnsoundMappingError("invalid_name", f"no usable agent name in {parsed.name!r}")
    if region is not None and not _TOKEN.fullmatch(region):
        raise InteropError("invalid_region", f"not a subject token: {region!r}")
    backend = _backend(parsed, resources)
    backend.update(_auth(parsed, name.upper().replace("-", "_")))
    config: JsonObject = {
        "name": name,
        "tier": (tier if tier is not None else resources.tier if resources else _DEFAULT_TIER).value,
        "region": region or (resources.region if resources else _DEFAULT_REGION),
        "residency": list(resources.residency) if resources else [],
        "skills": _skills(parsed, resources),
        "slots": resources.slots if resources else 1,
        "backend": backend,
    }
    if resources is not None:
        first = msgspec.to_builtins(resources.models[0])
        assert isinstance(first, dict)
        if backend["kind"] == "a2a":
            backend["model"] = first["name"]
        config["resources"] = {k: v for k, v in first.items() if k != "name"}
    return config
