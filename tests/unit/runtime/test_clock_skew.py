"""Clocks that disagree (spec 9.3): a mesh whose agents' clocks are off by +-3 s completes its tasks, and so does
a requester whose own clock is 3 s off. Every party runs on an injected clock; MemoryBus, one process."""

from __future__ import annotations

import random
import time

import anyio
import msgspec
import pytest

from accord.bus.memory import MemoryBroker
from accord.protocol.messages import Tier
from accord.runtime.requester import Requester, TaskOutcome
from accord.runtime.timers import Clock
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, make_agent, spec, wait_registry

pytestmark = pytest.mark.asyncio

S = 1_000_000_000


def skewed(offset_s: float) -> Clock:
    offset = int(offset_s * S)
    return lambda: time.time_ns() + offset


@pytest.mark.parametrize(("requester_s", "agents_s"), [(0.0, (3.0, -3.0)), (3.0, (0.0, 0.0)), (-3.0, (0.0, 0.0))])
async def test_a_mesh_with_clocks_three_seconds_apart_completes_its_tasks(
    requester_s: float, agents_s: tuple[float, float]
) -> None:
    broker = MemoryBroker(seed=1)
    pki = Pki(random.Random(1))
    agents = [
        make_agent(pki, broker.bus(), AgentSpec(f"a{i}", tier=tier), clock=skewed(offset))
        for i, (tier, offset) in enumerate(zip((Tier.EDGE, Tier.CLOUD), agents_s, strict=True))
    ]
    requester = Requester(
        pki.agent("req"), bus=broker.bus(), trust=pki.trust, rng=random.Random(2), clock=skewed(requester_s)
    )
    outcomes: list[TaskOutcome] = []
    async with anyio.create_task_group() as tg:
        await tg.start(requester.run)
        for agent in agents:
            await tg.start(agent.run)
        await wait_registry(requester, agents)
        for i in range(6):
            tier = (Tier.EDGE, Tier.CLOUD)[i % 2]  # each agent, each clock, in turn
            task = spec(f"question {i}", preferred_tiers=[tier])
            deadline = requester.clock() + 4 * S  # a deadline on the requester's own clock
            constraints = msgspec.structs.replace(task.constraints, deadline_ns=deadline)
            outcomes.append(await requester.submit(msgspec.structs.replace(task, constraints=constraints)))
        tg.cancel_scope.cancel()
    assert [o.agent_id for o in outcomes] == [agents[i % 2].id for i in range(6)]
    assert all(o.attempt == 1 for o in outcomes)
    assert requester.stats.refused_frames == 0 and sum(a.stats.refused for a in agents) == 0
