"""A13 and A7: a fresh requester finds the agents of a running mesh by a NATS service PING (they answer and
re-advertise at once) instead of waiting for a heartbeat, and a task's deadline counts from its announce."""

from __future__ import annotations

import random

import anyio
import pytest

from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.mesh.discovery import await_candidates, discover
from accord.runtime.requester import Requester
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, make_agent, spec, wait_registry

pytestmark = pytest.mark.integration


@pytest.mark.asyncio
async def test_a_fresh_requester_finds_running_agents_at_once_by_service_ping() -> None:
    pki = Pki(random.Random(17))
    async with await NatsServer(name="accord-discovery", jetstream=False).astart() as server:
        buses = [NatsBus(server.url, name=f"b{i}") for i in range(4)]
        async with buses[0], buses[1], buses[2], buses[3], anyio.create_task_group() as tg:
            agents = [make_agent(pki, buses[i], AgentSpec(f"agent-{i}")) for i in (0, 1)]
            watcher = Requester(pki.agent("watcher"), bus=buses[2], trust=pki.trust)
            await tg.start(watcher.run)
            for agent in agents:
                await tg.start(agent.run)
            await wait_registry(watcher, agents)  # their start-up adverts are gone by now
            fresh = Requester(pki.agent("fresh"), bus=buses[3], trust=pki.trust)
            await tg.start(fresh.run)
            # a heartbeat is 3.3 s away: only the PING can bring the adverts within this wait
            found = await await_candidates(fresh, spec(deadline_ms=500), timeout_ms=1_500)
            assert sorted(found) == sorted(a.id for a in agents)
            later = Requester(pki.agent("later"), bus=buses[3], trust=pki.trust)
            await tg.start(later.run)
            assert await discover(later, timeout_ms=1_500) == {a.id for a in agents}
            outcome = await fresh.submit(spec(deadline_ms=2_000))
            assert outcome.agent_id in found
            for agent in agents:
                await agent.stop()
            tg.cancel_scope.cancel()
