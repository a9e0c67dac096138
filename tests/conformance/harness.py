"""Agents under test for the conformance kit: our own Agent (SimulatedBackend) and the negative fixtures.

Everything here runs over real NATS: each agent and each kit run gets its own NatsBus connection, as separate
processes on separate machines would. The kit's key and every agent's key are certified by one throwaway
operator (accord.security.testing.Pki), the way an operator certifies a kit in a real mesh's trust file.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Final, Protocol

import anyio
from anyio.abc import TaskStatus

from accord.backends.simulated import SIM_SMALL, SimulatedBackend
from accord.bus.nats import NatsBus
from accord.bus.server import NkeyUser
from accord.conformance import ConformanceReport, KitConfig, run_suite
from accord.conformance.fixtures import Fault, FixtureAgent
from accord.protocol.contractor import ContractorProfile
from accord.protocol.messages import ModelOffer, Tier
from accord.protocol.pricing import ResourceModel
from accord.runtime.agent import Agent
from accord.security import Identity
from accord.security.permissions import agent_permissions, inbox_prefix
from accord.security.testing import Pki

__all__ = [
    "KIT_TIMINGS",
    "MAX_PAYLOAD",
    "agent_profile",
    "certify_fixture",
    "certify_sim_agent",
    "fixture_profile",
    "kit_config",
    "nkey_user",
    "run_kits",
    "start_fixture",
    "start_sim_agent",
]

MAX_PAYLOAD: Final = 2 * 1024 * 1024
"""The test server carries frames over 1 MiB, so that the over-size case really reaches the agent."""
TTL_MS: Final = 1500
KIT_TIMINGS: Final = {"timeout_ms": 2000, "quiet_ms": 300, "bid_window_ms": 500, "ack_ms": 1000, "lease_ms": 3000}
"""Short but not flaky: every wait is one of these plus what the agent itself announces (its latency)."""


class _Runnable(Protocol):
    async def run(self, *, task_status: TaskStatus[None] = ...) -> None: ...

    async def stop(self) -> None: ...


def agent_profile(name: str) -> tuple[ContractorProfile, ModelOffer]:
    """Our Agent's profile: one priced simulated model (so every decline case applies), short heartbeats."""
    resources = SIM_SMALL.resources(price_in_per_1k_micros=100, price_out_per_1k_micros=400)
    offer = resources.offer()
    profile = ContractorProfile(
        name=name,
        tier=Tier.EDGE,
        region="eu-west",
        models=(resources,),
        residency=("eu",),
        skills=("chat",),
        slots=4,
        ttl_ms=TTL_MS,
    )
    return profile, offer


def fixture_profile(name: str) -> ContractorProfile:
    offer = ModelOffer(
        name="fixture-model",
        context_window=8192,
        tokens_per_s=100.0,
        price_in_per_1k_micros=100,
        price_out_per_1k_micros=400,
        quality=0.7,
        ttft_ms=20,
    )
    return ContractorProfile(
        name=name,
        tier=Tier.CLOUD,
        region="eu-central",
        models=(ResourceModel.from_offer(offer, slots=4),),
        residency=("eu",),
        skills=("chat",),
        slots=4,
        ttl_ms=TTL_MS,
    )


async def _serve(
    stack: AsyncExitStack, url: str, identity: Identity, auth: bool, build: Callable[[NatsBus], _Runnable]
) -> None:
    """Connect as ``identity`` (with ``auth``: its nkey and the inbox prefix 11.2 asks for), run, stop on exit."""
    name = identity.id[:12]
    if auth:
        bus = NatsBus(url, name=name, nkey_seed=identity.seed, inbox_prefix=inbox_prefix(identity.id))
    else:
        bus = NatsBus(url, name=name)
    await stack.enter_async_context(bus)
    agent = build(bus)
    tg = await stack.enter_async_context(anyio.create_task_group())
    await tg.start(agent.run)
    stack.push_async_callback(agent.stop)


def certify_sim_agent(pki: Pki, name: str = "sim-agent") -> Identity:
    profile, _ = agent_profile(name)
    return pki.agent(name, tier=profile.tier, region=profile.region, residency=profile.residency)


def certify_fixture(pki: Pki, fault: Fault) -> Identity:
    profile = fixture_profile(_fixture_name(fault))
    return pki.agent(profile.name, tier=profile.tier, region=profile.region, residency=profile.residency)


def _fixture_name(fault: Fault) -> str:
    return f"fixture-{fault.value.replace('_', '-')}"


async def start_sim_agent(
    stack: AsyncExitStack, url: str, pki: Pki, identity: Identity | None = None, *, auth: bool = False
) -> Identity:
    """Our own Agent with a realtime SimulatedBackend, until ``stack`` closes."""
    identity = identity or certify_sim_agent(pki)
    profile, offer = agent_profile("sim-agent")
    backend = SimulatedBackend(SIM_SMALL, realtime=True, seed=7)

    def build(bus: NatsBus) -> Agent:
        return Agent(identity, profile, {offer.name: backend}, bus=bus, trust=pki.trust, rng=random.Random(7))

    await _serve(stack, url, identity, auth, build)
    return identity


async def start_fixture(
    stack: AsyncExitStack,
    url: str,
    pki: Pki,
    fault: Fault,
    identity: Identity | None = None,
    *,
    auth: bool = False,
    profile: ContractorProfile | None = None,
) -> Identity:
    """One negative fixture (or the correct control, Fault.NONE), until ``stack`` closes."""
    profile = profile or fixture_profile(_fixture_name(fault))
    identity = identity or pki.agent(
        profile.name, tier=profile.tier, region=profile.region, residency=profile.residency
    )

    def build(bus: NatsBus) -> FixtureAgent:
        return FixtureAgent(identity, profile, bus=bus, trust=pki.trust, fault=fault)

    await _serve(stack, url, identity, auth, build)
    return identity


def nkey_user(identity: Identity, profile: ContractorProfile | None = None) -> NkeyUser:
    """The nats-server user of an agent (or of the kit, without a profile) under the 11.6 template."""
    if profile is None:
        return NkeyUser(identity.id, agent_permissions(identity.id))
    permissions = agent_permissions(
        identity.id, tier=profile.tier, residencies=profile.residency, skills=list(profile.skills)
    )
    return NkeyUser(identity.id, permissions)


def kit_config(pki: Pki, agent: Identity, **changes: object) -> KitConfig:
    kit = pki.agent(f"kit-{agent.id[1:9].lower()}")
    timings = {**KIT_TIMINGS, **changes}
    return KitConfig(agent_id=agent.id, identity=kit, trust=pki.trust, **timings)  # type: ignore[arg-type]


async def run_kits(
    url: str, configs: dict[str, KitConfig], *, stagger_ms: int = 200
) -> dict[str, ConformanceReport]:
    """Run one kit per config concurrently (each on its own connection); reports by name.

    Starts are staggered so that the kits' bursts (first probes, the 1 MiB frames) do not all land on the one
    event loop at the same moment, which would measure the test's own scheduling, not the agents.
    """
    reports: dict[str, ConformanceReport] = {}

    async def one(delay_ms: int, name: str, config: KitConfig) -> None:
        await anyio.sleep(delay_ms / 1000)
        async with NatsBus(url, name=f"kit-{name}") as bus:
            reports[name] = await run_suite(config, bus, url=url)

    async with anyio.create_task_group() as tg:
        for i, (name, config) in enumerate(configs.items()):
            tg.start_soon(one, i * stagger_ms, name, config)
    return reports
