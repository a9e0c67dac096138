"""The mesh runner: turn a :class:`MeshConfig` into running agents on a bus.

State (keys, the trust file, the URL of a running mesh) lives in the mesh's state dir so that `accord up`,
`accord ask` and `accord agents` — separate processes — share identities. With no trust file configured the
mesh is its own operator: it creates an operator key once and certifies every agent and the local requester
with the residency and privacy classes of the mesh file.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from accord.backends import (
    Backend,
    LlamaCppBackend,
    LlamaCppConfig,
    OpenAIBackend,
    ReplayBackend,
    SimProfile,
    SimulatedBackend,
    load_outcome_log,
    smollm2_resources,
)
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.errors import AccordError
from accord.mesh.config import (
    AgentConfig,
    BackendConfig,
    LlamaCppBackendConfig,
    MeshConfig,
    MeshConfigError,
    OpenAIBackendConfig,
    ReplayBackendConfig,
    SimulatedBackendConfig,
    StrategyBackendConfig,
)
from accord.protocol.contractor import ContractorProfile
from accord.protocol.market import Ineligibility, rank
from accord.protocol.messages import Privacy, Task, Tier
from accord.protocol.pricing import ResourceModel
from accord.protocol.requester import RequesterMachine, TaskSpec
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester
from accord.runtime.timers import now_ns
from accord.security import (
    Certificate,
    Identity,
    KeyKind,
    SecurityError,
    TrustStore,
    load_identity,
    save_identity,
)
from accord.security.certs import sign_certificate
from accord.strategies import (
    Strategy,
    StrategyBackend,
    StrategyConfigError,
    build_strategy,
    parse_strategy_option,
)

__all__ = [
    "DISCOVERY_WAIT_MS",
    "REQUESTER_NAME",
    "MeshState",
    "NoAgentError",
    "RunningMesh",
    "await_candidates",
    "build_agent_parts",
    "bus_credentials",
    "connect_bus",
    "embedded_server",
    "load_trust",
    "run_mesh",
]

log = structlog.get_logger(__name__)

_YEAR_NS = 365 * 24 * 3600 * 10**9
_STOP_TIMEOUT_S = 5.0
REQUESTER_NAME = "requester"
_ADVERT_TTL_MS: int = next(f.default for f in msgspec.structs.fields(ContractorProfile) if f.name == "ttl_ms")
DISCOVERY_WAIT_MS = _ADVERT_TTL_MS // 3 + 1_000
"""How long a fresh requester waits for a suitable agent's advert by default: one heartbeat interval (agents
advertise every third of their TTL) plus a margin for connecting and verifying."""


@dataclass
class MeshState:
    """Keys and trust of one mesh, kept in its state dir."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def trust_file(self) -> Path:
        return self.directory / "trust.json"

    @property
    def url_file(self) -> Path:
        return self.directory / "nats.url"

    def identity(self, name: str, kind: KeyKind = KeyKind.USER) -> Identity:
        """The identity stored under ``name`` (created on first use, mode 0600)."""
        path = self.directory / "keys" / f"{name}.seed"
        if path.exists():
            return load_identity(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = Identity.generate(kind)
        save_identity(identity, path)
        return identity

    def certify_all(self, config: MeshConfig, identities: dict[str, Identity]) -> TrustStore:
        """Make this mesh the operator of its own agents: a trust file with one certificate per identity.

        An existing trust file in the state dir is reused as long as it certifies every identity exactly as the
        mesh file describes it (so that several ``accord up --only NAME`` processes of one mesh share it);
        otherwise every certificate is issued afresh and the file replaced.
        """
        operator = self.identity("operator", KeyKind.OPERATOR)
        now = time.time_ns()
        wanted = {name: self._describe(config, name, identity) for name, identity in identities.items()}
        if self.trust_file.exists():
            try:
                existing = TrustStore.load(self.trust_file)
                if _covers(existing, wanted, operator.id, now):
                    return existing
            except SecurityError as exc:
                log.warning("mesh.trust_file_replaced", file=str(self.trust_file), error=str(exc))
        trust = TrustStore([operator.id])
        for serial, (_name, cert) in enumerate(sorted(wanted.items()), start=1):
            cert = msgspec.structs.replace(
                cert,
                serial=int(now // 1000) + serial,
                not_before_ns=now - 3600 * 10**9,
                not_after_ns=now + _YEAR_NS,
                issuer=operator.id,
            )
            trust.add_certificate(sign_certificate(cert, operator))
        trust.save(self.trust_file)
        return trust

    @staticmethod
    def _describe(config: MeshConfig, name: str, identity: Identity) -> Certificate:
        """The certificate fields the mesh file implies for ``name`` (validity and issuer left to the caller)."""
        agent = next((a for a in config.agents if name in a.replica_names()), None)
        return Certificate(
            serial=0,
            agent_id=identity.id,
            name=name,
            tier=agent.tier if agent else Tier.EDGE,
            region=agent.region if agent else "local",
            residency=list(agent.residency) if agent else _all_residencies(config),
            privacy=list(agent.privacy) if agent else list(Privacy),
            not_before_ns=0,
            not_after_ns=0,
            issuer="",
        )


def _covers(trust: TrustStore, wanted: dict[str, Certificate], operator: str, now: int) -> bool:
    """True if ``trust`` certifies every wanted identity, by ``operator``, as described, for at least a day."""
    for want in wanted.values():
        try:
            cert = trust.check(want.agent_id, now)
        except SecurityError:
            return False
        if (
            cert.issuer != operator
            or cert.not_after_ns < now + 24 * 3600 * 10**9
            or (cert.name, cert.tier, cert.region, sorted(cert.residency), sorted(cert.privacy))
            != (want.name, want.tier, want.region, sorted(want.residency), sorted(want.privacy))
        ):
            return False
    return True


def _all_residencies(config: MeshConfig) -> list[str]:
    return sorted({r for a in config.agents for r in a.residency})[:16]


def load_trust(
    config: MeshConfig, state: MeshState, *, require: Iterable[str] = ()
) -> tuple[TrustStore, dict[str, Identity]]:
    """Identities of every agent replica and of the local requester, and the trust store that covers them.

    With a trust file configured, every identity named in ``require`` must be trusted by it now; otherwise
    MeshConfigError names the agent, its key and the reason (an unknown key would only be refused by every
    peer, silently).
    """
    identities: dict[str, Identity] = {}
    gateways: dict[str, str] = {}  # a gateway agent -> the identity name of its own requester
    for agent in config.agents:
        for name in agent.replica_names():
            identities[name] = load_identity(agent.key) if agent.key and agent.count == 1 else state.identity(name)
            if isinstance(agent.backend, StrategyBackendConfig):
                gateways[name] = gateway_requester_name(name)
                identities[gateways[name]] = state.identity(gateways[name])
    identities[REQUESTER_NAME] = state.identity(REQUESTER_NAME)
    require = [n for name in require for n in (name, gateways.get(name)) if n is not None]
    if config.trust.file is None:
        return state.certify_all(config, identities), identities
    trust = TrustStore.load(config.trust.file)
    now = time.time_ns()
    for name in require:
        identity = identities.get(name)
        if identity is None:
            raise MeshConfigError(f"no agent named {name!r} in the mesh file")
        try:
            trust.check(identity.id, now)
        except SecurityError as exc:
            raise MeshConfigError(
                f"agent {name}: its key {identity.id} is not trusted by {config.trust.file} "
                f"({exc.reason.value}); certify it with `accord keys issue` or fix the key file"
            ) from exc
    return trust, identities


# --- backends -------------------------------------------------------------------------------------------------
def build_backend(
    config: BackendConfig, overrides: dict[str, float | int | bool], seed: int
) -> tuple[Backend, ResourceModel]:
    """The backend an agent runs and the resource model it advertises (with the mesh file's overrides)."""
    if isinstance(config, SimulatedBackendConfig):
        profile = SimProfile(
            model=config.model,
            quality_mean=config.quality_mean,
            ttft_ms=config.ttft_ms,
            tokens_per_s=config.tokens_per_s,
            output_tokens=config.output_tokens,
            price_in_per_1k_micros=config.price_in_per_1k_micros,
            price_out_per_1k_micros=config.price_out_per_1k_micros,
            error_rate=config.error_rate,
            context_window=config.context_window,
        )
        backend: Backend = SimulatedBackend(profile, seed=config.seed + seed, realtime=config.realtime)
        resources = profile.resources()
    elif isinstance(config, LlamaCppBackendConfig):
        llama = LlamaCppConfig(
            model_path=config.model_path,
            threads=config.threads,
            n_ctx=config.n_ctx,
            max_tokens_cap=config.max_tokens_cap,
        )
        backend = LlamaCppBackend(llama)
        resources = smollm2_resources()
    elif isinstance(config, OpenAIBackendConfig):
        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if config.api_key_env and api_key is None:
            raise MeshConfigError(f"environment variable {config.api_key_env} (api_key_env) is not set")
        backend = OpenAIBackend(
            config.base_url,
            model=config.model,
            api_key=api_key,
            read_timeout_ms=config.read_timeout_ms,
            max_retries=config.max_retries,
        )
        resources = ResourceModel(model=config.model, tokens_per_s=50.0, context_window=8192)
    elif isinstance(config, ReplayBackendConfig):
        outcome_log = load_outcome_log(config.log)
        backend = ReplayBackend(outcome_log, model=config.model)
        resources = ResourceModel(model=backend.model, tokens_per_s=1000.0, context_window=128_000)
    else:  # pragma: no cover - exhaustive over BackendConfig
        raise MeshConfigError(f"unknown backend {config!r}")
    if overrides:
        try:
            resources = ResourceModel.from_mapping({**_resource_fields(resources), **overrides})
        except Exception as exc:
            raise MeshConfigError(f"resources: {exc}") from exc
    return backend, resources


def _resource_fields(resources: ResourceModel) -> dict[str, object]:
    return msgspec.structs.asdict(resources)


def gateway_requester_name(agent: str) -> str:
    """The identity under which a gateway agent's own requester runs its strategy's tasks."""
    return f"{agent}-requester"


def _gateway_resources(config: StrategyBackendConfig, overrides: dict[str, float | int | bool]) -> ResourceModel:
    kind = config.strategy.partition(":")[0]
    base = ResourceModel(model=f"strategy-{kind}", tokens_per_s=20.0, ttft_ms=2000, context_window=32_768)
    try:
        return ResourceModel.from_mapping({**_resource_fields(base), **overrides})
    except Exception as exc:
        raise MeshConfigError(f"resources: {exc}") from exc


def build_agent_parts(config: AgentConfig, name: str, seed: int) -> tuple[ContractorProfile, dict[str, Backend]]:
    """The agent's profile and backends by model name. A gateway's backend needs its requester's bus, so its
    dict is empty here; :func:`run_mesh` adds the StrategyBackend once that bus is up."""
    if isinstance(config.backend, StrategyBackendConfig):
        resources = _gateway_resources(config.backend, config.resources)
        backends: dict[str, Backend] = {}
    else:
        backend, resources = build_backend(config.backend, config.resources, seed)
        backends = {resources.offer().name: backend}
    offer = resources.offer()
    profile = ContractorProfile(
        name=name,
        tier=config.tier,
        region=config.region,
        models=(offer,),
        residency=tuple(config.residency),
        privacy=tuple(config.privacy),
        skills=tuple(config.skills),
        slots=config.slots if config.slots is not None else resources.slots,
        connectivity=resources.connectivity(),
        battery=resources.battery,
        shared_backend=True,
        bid_hold_ms=config.bid_hold_ms,
        overhead_ms=config.overhead_ms,
    )
    return profile, backends


# --- bus ------------------------------------------------------------------------------------------------------
@asynccontextmanager
async def embedded_server(store_dir: Path | None = None) -> AsyncIterator[NatsServer]:
    """A private nats-server on a free 127.0.0.1 port, stopped by PID on exit."""
    server = NatsServer(store_dir=store_dir) if store_dir is not None else NatsServer()
    await server.astart()
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True):  # stopped even when the body was cancelled (a signal, Ctrl-C)
            await server.astop()
            await server.acleanup()


def connect_bus(url: str, *, name: str, nkey_seed: str | None = None, creds: str | None = None) -> NatsBus:
    return NatsBus(url, name=name, nkey_seed=nkey_seed, credentials=creds)


def bus_credentials(config: MeshConfig) -> tuple[str | None, str | None]:
    """(nkey seed text, creds file) for connections of this mesh, from the ``[bus]`` section."""
    seed = None
    if config.bus.nkey_seed_file is not None:
        try:
            seed = Path(config.bus.nkey_seed_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MeshConfigError(f"bus.nkey_seed_file: cannot read {config.bus.nkey_seed_file}: {exc}") from exc
    return seed, config.bus.creds_file


async def _serve_agent(
    url: str,
    identity: Identity,
    profile: ContractorProfile,
    backends: dict[str, Backend],
    trust: TrustStore,
    credentials: tuple[str | None, str | None] = (None, None),
    gateway: Gateway | None = None,
    *,
    task_status: TaskStatus[Agent] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """One agent on its own bus connection, as on its own machine; closes its backends when it stops. A gateway
    also runs its own requester on that connection and answers with its strategy."""
    try:
        async with (
            connect_bus(url, name=profile.name, nkey_seed=credentials[0], creds=credentials[1]) as bus,
            anyio.create_task_group() as tg,
        ):
            if gateway is not None:
                requester = Requester(gateway.identity, bus=bus, trust=trust, service=False)
                await tg.start(requester.run)
                model = profile.models[0].name
                backends[model] = StrategyBackend(
                    requester,
                    gateway.strategy,
                    budget_micros=gateway.config.budget_micros,
                    form=gateway.config.form,
                )
            agent = Agent(identity, profile, backends, bus=bus, trust=trust, rng=random.Random())
            await tg.start(agent.run)
            task_status.started(agent)
            await agent.done.wait()
            tg.cancel_scope.cancel()  # a gateway's requester runs until its agent has left
    finally:
        with anyio.CancelScope(shield=True):
            for backend in backends.values():
                await backend.aclose()


@dataclass(frozen=True)
class Gateway:
    """What a gateway agent needs besides its profile: its requester's identity, its strategy and its budget."""

    identity: Identity
    strategy: Strategy
    config: StrategyBackendConfig


def _gateway(config: MeshConfig, agent: AgentConfig, identities: dict[str, Identity], name: str) -> Gateway | None:
    if not isinstance(agent.backend, StrategyBackendConfig):
        return None
    try:
        strategy = build_strategy(parse_strategy_option(agent.backend.strategy, config.strategies))
    except StrategyConfigError as exc:
        raise MeshConfigError(f"agent {name}: backend strategy: {exc}") from exc
    return Gateway(identities[gateway_requester_name(name)], strategy, agent.backend)


@dataclass
class RunningMesh:
    url: str
    agents: list[Agent]
    trust: TrustStore
    identities: dict[str, Identity]
    server: NatsServer | None

    def requester_identity(self) -> Identity:
        return self.identities[REQUESTER_NAME]


@asynccontextmanager
async def run_mesh(
    config: MeshConfig, *, only: Iterable[str] | None = None, url: str | None = None
) -> AsyncIterator[RunningMesh]:
    """Start the configured agents (all, or the replicas named in ``only``) and yield the running mesh.

    The bus is ``url`` if given, else the file's ``bus.url``, else an embedded nats-server for the mesh's
    lifetime. Agents get one NatsBus connection each, as they would on separate machines.
    """
    assert config.state_dir is not None, "load_mesh sets state_dir"
    state = MeshState(Path(config.state_dir))
    names = [n for a in config.agents for n in a.replica_names()]
    wanted = set(only) if only is not None else None
    if wanted is not None and wanted - set(names):
        known = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        missing = ", ".join(sorted(wanted - set(names)))
        raise MeshConfigError(f"--only: no agent named {missing} (the mesh has {known})")
    trust, identities = load_trust(config, state, require=[n for n in names if wanted is None or n in wanted])
    credentials = bus_credentials(config)
    async with AsyncExitStack() as stack:
        server: NatsServer | None = None
        url = url or config.bus.url
        if url is None:
            server = await stack.enter_async_context(embedded_server())
            url = server.url
        state.url_file.write_text(url + "\n", encoding="utf-8")
        agents: list[Agent] = []
        parts = []
        for agent_config in config.agents:
            for i, name in enumerate(agent_config.replica_names()):
                if wanted is not None and name not in wanted:
                    continue
                profile, backends = build_agent_parts(agent_config, name, seed=i)
                parts.append((name, profile, backends, _gateway(config, agent_config, identities, name)))
        tg = await stack.enter_async_context(anyio.create_task_group())
        try:
            for name, profile, backends, gateway in parts:
                agent = await tg.start(
                    _serve_agent, url, identities[name], profile, backends, trust, credentials, gateway
                )
                agents.append(agent)
            log.info("mesh.up", url=url, agents=len(agents))
            yield RunningMesh(url, agents, trust, identities, server)
        finally:
            # Graceful even when the body was cancelled (Ctrl-C): the agents' own tasks are still running
            # here, so each can fail its work with `shutdown` and send its Withdraw, within a bounded time.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_STOP_TIMEOUT_S):
                for agent in agents:
                    await agent.stop()
                for agent in agents:
                    await agent.done.wait()
            if state.url_file.exists() and server is not None:
                state.url_file.unlink()


# --- talking to a running mesh --------------------------------------------------------------------------------
class NoAgentError(AccordError):
    """No advertised agent could take the task within the wait; the message says what the registry saw."""


def _task_of(requester: Requester, spec: TaskSpec) -> Task:
    """The Task a requester would announce for ``spec`` (built by a throwaway machine: pure, sends nothing)."""
    machine = RequesterMachine(
        requester.id,
        spec,
        rng=random.Random(0),
        trusted=requester.trusted,
        verify_bid=lambda _bid, _digest: False,
    )
    return machine.task


def _candidates(requester: Requester, task: Task, now: int) -> tuple[list[str], str]:
    """(agents in the registry that could take ``task`` now, best first; why none could, if so)."""
    registry = requester.registry
    offers = registry.offers(task, now=now)
    ranking = rank(offers, task, now=now, trusted=requester.trusted, predictor=requester.predictor)
    eligible = [s.offer.agent_id for s in ranking.eligible]
    if eligible:
        return eligible, ""
    live = registry.count(now=now)
    if live == 0:
        return [], "no agent advertised on the mesh"
    agents = f"{live} agent{'s' if live != 1 else ''} advertised"
    if not offers:
        return [], f"{agents}, none with a free slot that takes kind {task.kind!r} and its prompt"
    reasons: Counter[str] = Counter()
    for offer, why in ranking.ineligible:
        if why is Ineligibility.UNTRUSTED:
            reasons[requester.distrust(offer.agent_id, task.constraints) or why.value] += 1
        else:
            reasons[why.value] += 1
    ruled = ", ".join(f"{why} x{n}" for why, n in reasons.most_common())
    return [], f"{agents}, all ruled out by the task's constraints: {ruled}"


async def await_candidates(
    requester: Requester, spec: TaskSpec, *, timeout_ms: int = DISCOVERY_WAIT_MS, poll_ms: int = 20
) -> list[str]:
    """Wait until ``requester``'s registry knows at least one agent that could take ``spec``; their ids.

    A fresh requester knows nobody: agents advertise once when they start, then every third of their advert TTL.
    So a command that asks one question right after connecting waits here (by default one heartbeat interval
    plus a margin) instead of announcing into an empty registry. "Could take" means: live, a free slot, the
    task's kind and context, trusted for its residency and privacy class, and within budget, deadline and
    quality by its price sheet (the rules of spec 6.1). Never waits past the task's deadline. Raises
    :class:`NoAgentError` saying what the registry saw when the time is up (``requester.run`` must be running,
    with ``watch_adverts``).
    """
    task = _task_of(requester, spec)
    left_ms = (spec.constraints.deadline_ns - now_ns()) // 1_000_000
    timeout_ms = max(0, min(timeout_ms, left_ms))  # never past the task's deadline
    with anyio.move_on_after(timeout_ms / 1000):
        while not _candidates(requester, task, now_ns())[0]:  # noqa: ASYNC110 - the registry has no event
            await anyio.sleep(poll_ms / 1000)
    found, why = _candidates(requester, task, now_ns())
    if found:
        return found
    raise NoAgentError(f"no agent could take the task after waiting {timeout_ms / 1000:.1f} s: {why}")
