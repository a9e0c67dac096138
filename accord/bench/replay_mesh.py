"""A live mesh of replay agents for benchmarks: a real nats-server, an in-memory PKI, one tier of agents per
recorded model, and a requester that submits tasks to a chosen tier.

What :func:`replay_mesh` starts, all in this process except the server:

- a private nats-server on a free 127.0.0.1 port with a temporary directory, stopped by PID on exit;
- an operator key made in memory for this run (never written anywhere) that certifies every agent and the
  requester, so every frame is signed and verified as in any mesh;
- per :class:`TierAgents`, ``replicas`` agents of that tier on their own bus connections, each answering with
  :class:`~accord.backends.replay.ReplayBackend` from the shared outcome log as the tier's model, and
  advertising the tier's price sheet (so bids, awards and payments are market numbers). Timings are simulated and
  not real time: the backend reports the latency its resource model predicts and answers at once;
- a :class:`~accord.runtime.requester.Requester` on its own connection.

Use (the strategies and the routing benchmark drive it the same way)::

    tiers = [TierAgents(Tier.DEVICE, weak, 600, 600), TierAgents(Tier.CLOUD, strong, 10_000, 30_000)]
    async with replay_mesh(log, tiers, kinds=("math",)) as mesh:
        outcome = await mesh.ask([ChatMessage(role=Role.USER, content=prompt)], tier=Tier.DEVICE, kind="math")
        outcome.model, outcome.price_micros, outcome.attestation.output_checked

``ask`` submits one task preferring one tier and returns the verified :class:`TaskOutcome` (or raises
:class:`~accord.runtime.requester.TaskFailed`); at most ``concurrency`` tasks run at once and each task's deadline
starts when it gets its slot.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from accord.backends.replay import OutcomeLog, ReplayBackend
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.errors import AccordError
from accord.logs import get_logger
from accord.mesh.run import embedded_server
from accord.protocol.contractor import ContractorProfile
from accord.protocol.market import QualityPredictor
from accord.protocol.messages import ChatMessage, Constraints, Policy, Tier
from accord.protocol.pricing import ResourceModel, estimate_prompt_tokens
from accord.protocol.requester import RequesterConfig, TaskSpec
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester, TaskOutcome
from accord.runtime.timers import now_ns
from accord.security import Certificate, Identity, KeyKind, TrustStore, sign_certificate

__all__ = ["BENCH_REQUESTER_CONFIG", "MeshCounters", "ReplayMesh", "TierAgents", "replay_mesh"]

_log = get_logger(__name__)

_HOUR_NS = 3600 * 10**9
_DAY_NS = 24 * _HOUR_NS
_STOP_TIMEOUT_S = 5.0

BENCH_REQUESTER_CONFIG = RequesterConfig(ack_timeout_ms=10_000, lease_margin_ms=10_000)
"""Timeouts with room for a busy process: a benchmark runs every agent and the requester in one event loop, so with
``concurrency`` tasks in flight each frame waits behind the others (about ``concurrency / tasks per second``:
over a second on a loaded two-core machine); the defaults (200 ms) assume agents on machines of their own."""


@dataclass(frozen=True)
class TierAgents:
    """The agents of one tier: how many, which recorded model they replay, and the price sheet and (simulated)
    speed they advertise. Prices in micro-USD per 1,000 tokens."""

    tier: Tier
    model: str
    price_in_per_1k_micros: int
    price_out_per_1k_micros: int
    replicas: int = 1
    tokens_per_s: float = 50.0
    ttft_ms: int = 200
    prefill_tokens_per_s: float = 100_000.0
    """High on purpose: the bid's latency estimate counts output tokens only, and the lease follows it."""
    quality: float = 0.5
    slots: int = 1024
    bid_hold_ms: int = 5_000
    """Generous: a loaded event loop must not let bids lapse before their award arrives."""
    name: str = ""
    """Base name of the agents (default: the tier's name); replicas get ``-1``, ``-2``, ..."""

    def resources(self) -> ResourceModel:
        return ResourceModel(
            model=self.model,
            tokens_per_s=self.tokens_per_s,
            prefill_tokens_per_s=self.prefill_tokens_per_s,
            context_window=1_000_000,
            ttft_ms=self.ttft_ms,
            slots=self.slots,
            price_in_per_1k_micros=self.price_in_per_1k_micros,
            price_out_per_1k_micros=self.price_out_per_1k_micros,
            quality=self.quality,
        )

    def names(self) -> list[str]:
        base = self.name or self.tier.value
        return [base] if self.replicas == 1 else [f"{base}-{i}" for i in range(1, self.replicas + 1)]


@dataclass
class MeshCounters:
    """Tasks this mesh's ``ask`` submitted, completed and failed (by reason), and the micro-USD paid."""

    submitted: int = 0
    completed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    paid_micros: int = 0


class _Pki:
    """An operator key made in memory for one run, and the trust store of its certificates."""

    def __init__(self) -> None:
        self.operator = Identity.generate(KeyKind.OPERATOR)
        self.trust = TrustStore([self.operator.id])
        self._serial = 0

    def identity(self, name: str, tier: Tier) -> Identity:
        identity = Identity.generate()
        now = time.time_ns()
        self._serial += 1
        cert = Certificate(
            serial=self._serial,
            agent_id=identity.id,
            name=name,
            tier=tier,
            region="local",
            not_before_ns=now - _HOUR_NS,
            not_after_ns=now + _DAY_NS,
            issuer=self.operator.id,
        )
        self.trust.add_certificate(sign_certificate(cert, self.operator))
        return identity


class ReplayMesh:
    """A running replay mesh (see the module docstring). Build it with :func:`replay_mesh`."""

    def __init__(
        self,
        *,
        server: NatsServer,
        requester: Requester,
        agents: list[Agent],
        tiers: Sequence[TierAgents],
        trust: TrustStore,
        concurrency: int,
    ) -> None:
        self.server = server
        self.requester = requester
        self.agents = agents
        self.tiers = list(tiers)
        self.trust = trust
        self.counters = MeshCounters()
        self._limit = anyio.CapacityLimiter(concurrency)

    @property
    def url(self) -> str:
        return self.server.url

    def model_of(self, tier: Tier) -> str:
        """The model the agents of ``tier`` replay."""
        for spec in self.tiers:
            if spec.tier is tier:
                return spec.model
        raise AccordError(f"the mesh has no {tier.value} tier")

    def spec(
        self,
        messages: Sequence[ChatMessage],
        *,
        tier: Tier | None,
        kind: str = "chat",
        est_input_tokens: int | None = None,
        max_output_tokens: int = 256,
        deadline_ms: int = 120_000,
        max_price_micros: int = 10**9,
        bid_window_ms: int = 2_000,
        policy: Policy | None = None,
    ) -> TaskSpec:
        """The TaskSpec ``ask`` submits (its deadline counted from now). ``tier`` None: any tier.

        The bid window is long because the call is targeted: it closes as soon as every invited agent has bid or
        declined, and the window only bounds how long a bid delayed by a busy event loop is still counted."""
        return TaskSpec(
            messages=list(messages),
            kind=kind,
            constraints=Constraints(
                deadline_ns=now_ns() + deadline_ms * 1_000_000,
                max_price_micros=max_price_micros,
                preferred_tiers=[tier] if tier is not None else [],
            ),
            est_input_tokens=(
                est_input_tokens if est_input_tokens is not None else estimate_prompt_tokens(list(messages))
            ),
            max_output_tokens=max_output_tokens,
            policy=policy if policy is not None else Policy(),
            bid_window_ms=bid_window_ms,
        )

    async def ask(
        self,
        messages: Sequence[ChatMessage],
        *,
        tier: Tier | None,
        kind: str = "chat",
        est_input_tokens: int | None = None,
        max_output_tokens: int = 256,
        deadline_ms: int = 120_000,
        max_price_micros: int = 10**9,
        bid_window_ms: int = 2_000,
        policy: Policy | None = None,
    ) -> TaskOutcome:
        """Submit one task to ``tier`` through the market; the verified outcome, or raises ``TaskFailed``.

        ``est_input_tokens`` (default: estimated from ``messages``) and ``max_output_tokens`` are what the bids are
        priced at: the price paid is the winning bid's, ``price_in * est_input_tokens + price_out *
        max_output_tokens`` per 1,000 tokens. ``policy``: the ranking's weights (default ``Policy()``).
        """
        async with self._limit:
            spec = self.spec(
                messages,
                tier=tier,
                kind=kind,
                est_input_tokens=est_input_tokens,
                max_output_tokens=max_output_tokens,
                deadline_ms=deadline_ms,
                max_price_micros=max_price_micros,
                bid_window_ms=bid_window_ms,
                policy=policy,
            )
            self.counters.submitted += 1
            try:
                outcome = await self.requester.submit(spec)
            except AccordError as exc:
                reason = getattr(exc, "reason", None)
                key = str(getattr(reason, "value", reason) or type(exc).__name__)
                self.counters.failed[key] = self.counters.failed.get(key, 0) + 1
                raise
            self.counters.completed += 1
            self.counters.paid_micros += outcome.price_micros
            return outcome


async def _serve_agent(
    url: str,
    identity: Identity,
    profile: ContractorProfile,
    backend: ReplayBackend,
    trust: TrustStore,
    seed: int,
    *,
    task_status: TaskStatus[Agent] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """One agent on its own bus connection, as on its own machine."""
    async with NatsBus(url, name=profile.name) as bus:
        agent = Agent(
            identity,
            profile,
            {backend.model: backend},
            bus=bus,
            trust=trust,
            rng=random.Random(seed),
            stream_progress=False,
            service=False,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            task_status.started(agent)


async def _serve_requester(
    url: str,
    identity: Identity,
    trust: TrustStore,
    concurrency: int,
    seed: int,
    config: RequesterConfig,
    predictor: QualityPredictor | None,
    *,
    task_status: TaskStatus[Requester] = anyio.TASK_STATUS_IGNORED,
) -> None:
    async with NatsBus(url, name="bench-requester") as bus:
        requester = Requester(
            identity,
            bus=bus,
            trust=trust,
            config=config,
            predictor=predictor,
            max_in_flight=concurrency,
            rng=random.Random(seed),
            service=False,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(requester.run)
            task_status.started(requester)


async def _wait_adverts(requester: Requester, agents: Sequence[Agent], timeout_s: float) -> None:
    with anyio.fail_after(timeout_s):
        while not all(requester.registry.get(a.id, now=time.time_ns()) is not None for a in agents):  # noqa: ASYNC110
            await anyio.sleep(0.02)


@asynccontextmanager
async def replay_mesh(
    log: OutcomeLog,
    tiers: Sequence[TierAgents],
    *,
    concurrency: int = 64,
    kinds: Sequence[str] = ("chat",),
    seed: int = 0,
    requester_config: RequesterConfig = BENCH_REQUESTER_CONFIG,
    ready_timeout_s: float = 20.0,
    predictor: QualityPredictor | None = None,
) -> AsyncIterator[ReplayMesh]:
    """Start the mesh (see the module docstring), yield it once every agent's advert has reached the requester,
    and stop everything on exit: agents gracefully (Withdraw), then the requester, then the server by PID.
    ``predictor``: how the requester predicts offers' quality (default: the requester's reputation)."""
    if concurrency < 1:
        raise AccordError("concurrency must be >= 1")
    pki = _Pki()
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(embedded_server())
        tg = await stack.enter_async_context(anyio.create_task_group())
        agents: list[Agent] = []
        try:
            requester_identity = pki.identity("requester", Tier.EDGE)
            requester = await tg.start(
                _serve_requester,
                server.url,
                requester_identity,
                pki.trust,
                concurrency,
                seed,
                requester_config,
                predictor,
            )
            n = 0
            for spec in tiers:
                backend_resources = spec.resources()
                for name in spec.names():
                    n += 1
                    profile = ContractorProfile(
                        name=name,
                        tier=spec.tier,
                        region="local",
                        models=(backend_resources,),
                        skills=tuple(kinds),
                        slots=spec.slots,
                        bid_hold_ms=spec.bid_hold_ms,
                    )
                    backend = ReplayBackend(log, name="replay", model=spec.model, resources=backend_resources)
                    agent = await tg.start(
                        _serve_agent,
                        server.url,
                        pki.identity(name, spec.tier),
                        profile,
                        backend,
                        pki.trust,
                        seed + n,
                    )
                    agents.append(agent)
            await _wait_adverts(requester, agents, ready_timeout_s)
            _log.info("replay_mesh.up", url=server.url, agents=len(agents), pid=server.pid)
            yield ReplayMesh(
                server=server,
                requester=requester,
                agents=agents,
                tiers=tiers,
                trust=pki.trust,
                concurrency=concurrency,
            )
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_STOP_TIMEOUT_S):
                for agent in agents:
                    await agent.stop()
                for agent in agents:
                    await agent.done.wait()
            tg.cancel_scope.cancel()
