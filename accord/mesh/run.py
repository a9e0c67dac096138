"""Running a mesh: its agents on a bus (an embedded nats-server unless the mesh file names one)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from accord.backends import Backend, BackendError, check_backend
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer, NkeyUser
from accord.errors import AccordError
from accord.files import FileRefusedError
from accord.logs import get_logger
from accord.mesh.auth import connect_as, mesh_users
from accord.mesh.build import Gateway, build_agent_parts, gateway_of
from accord.mesh.config import MeshConfig, MeshConfigError
from accord.mesh.lock import BUS_LOCK, MeshBusyError, MeshLocks
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.protocol.contractor import ContractorProfile
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester
from accord.runtime.timers import now_ns
from accord.security import Identity, KeyKind, SecurityError, TrustStore, check_creds_for, load_identity
from accord.security.keyfile import check_private
from accord.strategies import StrategyBackend

__all__ = [
    "BackendUnavailable",
    "TRUST_FOLLOW_MS",
    "RunningMesh",
    "agent_creds",
    "check_creds_keys",
    "bus_credentials",
    "check_backends",
    "embedded_server",
    "follow_trust_file",
    "run_mesh",
    "trust_stamp",
]

log = get_logger(__name__)

_STOP_TIMEOUT_S = 5.0

TRUST_FOLLOW_MS = 250
"""How often a running mesh looks at its trust file for added certificates."""


class BackendUnavailable(AccordError):
    """A backend cannot serve (checked before its agent advertises); the message names the agent and the
    cause."""


@asynccontextmanager
async def embedded_server(
    store_dir: Path | None = None, users: Sequence[NkeyUser] = ()
) -> AsyncIterator[NatsServer]:
    """A private nats-server on a free 127.0.0.1 port, stopped by PID on exit; with ``users``, only they may
    connect (:func:`accord.mesh.auth.mesh_users`)."""
    server = NatsServer(store_dir=store_dir, users=users) if store_dir is not None else NatsServer(users=users)
    await server.astart()
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True):  # stopped even when the body was cancelled (a signal, Ctrl-C)
            await server.astop()
            await server.acleanup()


def bus_credentials(config: MeshConfig) -> tuple[str | None, str | None]:
    """(nkey seed text, creds file) for connections of this mesh, from the ``[bus]`` section.

    Both hold a secret, so both are key files (spec 10.6): the seed is read like every seed
    (:func:`~accord.security.load_identity`, a user seed in an owner-only regular file), and the creds file, which
    nats-py reads at each connect, is checked the same way first. MeshConfigError naming the field otherwise."""
    bus = config.bus
    try:
        seed = None if bus.nkey_seed_file is None else load_identity(bus.nkey_seed_file, kind=KeyKind.USER).seed
    except (SecurityError, FileRefusedError) as exc:
        raise MeshConfigError(f"bus.nkey_seed_file: {exc}") from exc
    try:
        if bus.creds_file is not None:
            check_private(Path(bus.creds_file))
    except (SecurityError, FileRefusedError) as exc:
        raise MeshConfigError(f"bus.creds_file: {exc}") from exc
    return seed, bus.creds_file


def agent_creds(
    config: MeshConfig, names: Iterable[str] | None = None, *, url: str | None = None
) -> dict[str, str]:
    """The ``.creds`` file of each agent (of those in ``names``) that names its own (``[[agents]] creds_file``),
    by agent name, each checked as a key file (owner-only, spec 10.6) like the ``[bus]`` credentials.
    MeshConfigError naming the agent and the field when a file cannot be used, or when there is no server to use
    it on: neither ``url`` nor ``[bus] url`` (the embedded server knows each agent by its own key, not by JWT)."""
    wanted = None if names is None else set(names)
    out: dict[str, str] = {}
    for agent in config.agents:
        if agent.creds_file is None or (wanted is not None and agent.name not in wanted):
            continue
        try:
            check_private(Path(agent.creds_file))
        except (SecurityError, FileRefusedError) as exc:
            raise MeshConfigError(f"agent {agent.name!r}: creds_file: {exc}") from exc
        out[agent.name] = agent.creds_file
    if out and (url or config.bus.url) is None:
        raise MeshConfigError(
            f"agent {', '.join(repr(n) for n in sorted(out))}: creds_file needs [bus] url, a server with "
            "decentralised auth (the embedded server authenticates each agent by its own key)"
        )
    return out


def check_creds_keys(creds: Mapping[str, str], identities: Mapping[str, Identity]) -> None:
    """Each agent's own ``.creds`` file (``creds`` by agent name) must connect as the agent's own key
    (:func:`~accord.security.check_creds_for`); MeshConfigError naming the agent otherwise."""
    for name, path in sorted(creds.items()):
        try:
            check_creds_for(path, identities[name].id)
        except (SecurityError, FileRefusedError) as exc:
            raise MeshConfigError(f"agent {name!r}: creds_file: {exc}") from exc


async def _serve_agent(
    url: str,
    identity: Identity,
    profile: ContractorProfile,
    backends: dict[str, Backend],
    trust: TrustStore,
    credentials: tuple[str | None, str | None] = (None, None),
    gateway: Gateway | None = None,
    authenticated: bool = False,
    own_creds: str | None = None,
    warm_up: bool = False,
    *,
    task_status: TaskStatus[Agent] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """One agent on its own bus connection (as its own key, or as the JWT user of its own ``own_creds``), as on
    its own machine; closes its backends when it stops. A gateway also runs its own requester, on a connection
    of its own (with the mesh's credentials), and answers with its strategy."""
    seed, creds = credentials
    try:
        async with AsyncExitStack() as stack:
            bus = await stack.enter_async_context(
                connect_as(url, identity, name=profile.name, nkey_seed=seed, creds=creds, own_creds=own_creds)
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            if gateway is not None:
                own = await stack.enter_async_context(
                    connect_as(
                        url, gateway.identity, name=f"{profile.name}-requester", nkey_seed=seed, creds=creds
                    )
                )
                requester = Requester(
                    gateway.identity, bus=own, trust=trust, service=False, authenticated_bus=authenticated
                )
                await tg.start(requester.run)
                model = profile.models[0].name
                backends[model] = StrategyBackend(
                    requester,
                    gateway.strategy,
                    budget_micros=gateway.config.budget_micros,
                    form=gateway.config.form,
                )
            agent = Agent(
                identity,
                profile,
                backends,
                bus=bus,
                trust=trust,
                rng=random.Random(),
                authenticated_bus=authenticated,
                warm_up=warm_up,
            )
            await tg.start(agent.run)
            task_status.started(agent)
            await agent.done.wait()
            tg.cancel_scope.cancel()  # a gateway's requester runs until its agent has left
    finally:
        with anyio.CancelScope(shield=True):
            for backend in backends.values():
                await backend.aclose()


@dataclass
class RunningMesh:
    url: str
    agents: list[Agent]
    trust: TrustStore
    identities: dict[str, Identity]
    server: NatsServer | None
    authenticated: bool = False
    """The bus authenticates every party as its own key (the embedded server does)."""

    def connect(self, identity: Identity, *, name: str) -> NatsBus:
        """A connection to this mesh's bus for ``identity`` (as its own key)."""
        return connect_as(self.url, identity, name=name)

    def requester_identity(self) -> Identity:
        return self.identities[REQUESTER_NAME]


@asynccontextmanager
async def run_mesh(
    config: MeshConfig,
    *,
    only: Iterable[str] | None = None,
    url: str | None = None,
    credentials: tuple[str | None, str | None] | None = None,
) -> AsyncIterator[RunningMesh]:
    """Start the configured agents (all, or the replicas named in ``only``) and yield the running mesh.

    The bus is ``url`` if given, else the file's ``bus.url``, else an embedded nats-server for the mesh's
    lifetime. Agents get one NatsBus connection each, as they would on separate machines, with ``credentials``
    (default: :func:`bus_credentials` of ``config``).
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
    revoked = [n for n in names if (wanted is None or n in wanted) and trust.is_revoked(identities[n].id)]
    if revoked:
        raise MeshConfigError(
            f"agent {', '.join(revoked)}: key revoked (a revocation sticks; delete the agent's seed file under "
            f"{state.directory / 'keys'} to give it a new key)"
        )
    credentials = bus_credentials(config) if credentials is None else credentials
    own_creds = agent_creds(config, wanted, url=url)
    check_creds_keys(own_creds, identities)
    locks = MeshLocks(state.directory)
    async with AsyncExitStack() as stack:
        for name in (n for n in names if wanted is None or n in wanted):
            if not locks.acquire(stack, f"agent-{name}"):
                holder = locks.holder(f"agent-{name}")
                pid = f" (pid {holder.pid})" if holder is not None else ""
                raise MeshBusyError(
                    f"agent {name} of this mesh already runs in another process{pid}: `accord ps` lists what "
                    "runs, `accord down` stops it"
                )
        parts: list[_AgentParts] = []
        stack.push_async_callback(_close_backends, parts)  # until each agent owns its backends
        for agent_config in config.agents:
            for i, name in enumerate(agent_config.replica_names()):
                if wanted is not None and name not in wanted:
                    continue
                profile, backends = build_agent_parts(agent_config, name, seed=i)
                gateway = gateway_of(config, agent_config, identities, name)
                parts.append(_AgentParts(name, profile, backends, gateway, agent_config.warms_up()))
        await check_backends([(p.name, p.backends) for p in parts])
        server: NatsServer | None = None
        url = url or config.bus.url
        authenticated = config.bus.authenticated
        if url is None:  # our own server: nobody connects but the mesh's certified keys, each as itself
            server = await stack.enter_async_context(embedded_server(users=mesh_users(trust, now_ns())))
            url = server.url
            authenticated = True
        if locks.acquire(stack, BUS_LOCK, url=url):  # this process publishes the mesh's URL
            state.url_file.write_text(url + "\n", encoding="utf-8")
            stack.callback(state.url_file.unlink, missing_ok=True)
        agents: list[Agent] = []
        tg = await stack.enter_async_context(anyio.create_task_group())
        following = anyio.CancelScope()
        tg.start_soon(
            _follow, following, trust, Path(config.trust.file) if config.trust.file else state.trust_file, server
        )
        try:
            while parts:
                part = parts.pop(0)
                agent = await tg.start(
                    _serve_agent,
                    url,
                    identities[part.name],
                    part.profile,
                    part.backends,
                    trust,
                    credentials,
                    part.gateway,
                    authenticated,
                    own_creds.get(part.name),
                    part.warm_up,
                )
                agents.append(agent)
            log.info("mesh.up", url=url, agents=len(agents))
            yield RunningMesh(url, agents, trust, identities, server, authenticated)
        finally:
            # Graceful even when the body was cancelled (Ctrl-C): the agents' own tasks are still running
            # here, so each can fail its work with `shutdown` and send its Withdraw, within a bounded time.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_STOP_TIMEOUT_S):
                for agent in agents:
                    await agent.stop()
                for agent in agents:
                    await agent.done.wait()
            following.cancel()


async def _follow(scope: anyio.CancelScope, trust: TrustStore, path: Path, server: NatsServer | None) -> None:
    def reload_users() -> None:  # a key certified or revoked: the server's users follow the trust store
        if server is not None:
            server.reload_users(mesh_users(trust, now_ns()))

    with scope:
        await follow_trust_file(trust, path, on_change=reload_users)


def trust_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


async def follow_trust_file(
    trust: TrustStore,
    path: Path,
    *,
    every_s: float = TRUST_FOLLOW_MS / 1000,
    on_change: Callable[[], None] | None = None,
) -> None:
    """Merge what is added to the trust file into ``trust`` while the mesh runs (a requester or a kit certified
    after ``accord up``, the HTTP API's callers, a revocation), checking the file every ``every_s``, and call
    ``on_change`` when the store changed. Certificates are verified against the operators as always; nothing is
    ever removed (revocation lists only grow: a revocation sticks)."""
    seen = trust_stamp(path)
    while True:
        await anyio.sleep(every_s)
        stamp = trust_stamp(path)
        if stamp == seen or stamp is None:
            continue
        seen = stamp
        before = trust.to_json()
        try:
            added = trust.merge(TrustStore.load(path))
        except (SecurityError, FileRefusedError) as exc:
            log.warning("trust.reload_failed", file=str(path), error=str(exc))
            continue
        if trust.to_json() != before:
            log.info("trust.reloaded", file=str(path), certificates=added)
            if on_change is not None:
                on_change()


@dataclass
class _AgentParts:
    """What one agent of the mesh file starts with."""

    name: str
    profile: ContractorProfile
    backends: dict[str, Backend]
    gateway: Gateway | None
    warm_up: bool


async def _close_backends(parts: list[_AgentParts]) -> None:
    """Close the backends of agents that never started (a failed start-up)."""
    with anyio.CancelScope(shield=True):
        for part in parts:
            for backend in part.backends.values():
                await backend.aclose()


async def check_backends(backends: list[tuple[str, dict[str, Backend]]], *, timeout_s: float = 120.0) -> None:
    """Check that every backend can serve (a model file that loads, an endpoint that answers and takes the
    key), all at once; BackendUnavailable naming each agent that cannot, with the cause."""
    failures: list[str] = []

    async def one(name: str, backend: Backend) -> None:
        try:
            with anyio.fail_after(timeout_s):
                await check_backend(backend)
        except BackendError as exc:
            failures.append(f"agent {name}: backend {exc}")
        except TimeoutError:
            failures.append(f"agent {name}: backend {backend.name} did not answer its check in {timeout_s:.0f} s")

    async with anyio.create_task_group() as tg:
        for name, by_model in backends:
            for backend in by_model.values():
                tg.start_soon(one, name, backend)
    if failures:
        raise BackendUnavailable("; ".join(sorted(failures)))
