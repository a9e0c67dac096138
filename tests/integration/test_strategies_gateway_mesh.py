"""A gateway agent from the mesh file (``backend = { kind = "strategy", ... }``): it wins a task like any agent
and answers it by running an ensemble over two device agents with a requester of its own."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from accord.mesh.config import MeshConfigError, parse_mesh, resolve_paths
from accord.mesh.run import run_mesh
from accord.mesh.state import gateway_requester_name
from accord.protocol.messages import ChatMessage, Constraints, Role, Tier
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import Requester
from tests.support.runtime_kit import wait_registry

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

MESH = """
[[agents]]
name = "phone"
tier = "device"
count = 2
backend = { kind = "simulated", model = "sim-small", realtime = false }
resources = { price_out_per_1k_micros = 100 }

[[agents]]
name = "panel"
tier = "edge"
backend = { kind = "strategy", strategy = "STRATEGY", budget_micros = 2000 }
resources = { price_out_per_1k_micros = 20000 }
"""


async def test_a_gateway_agent_answers_with_an_ensemble_of_two_devices(tmp_path: Path) -> None:
    config = resolve_paths(parse_mesh(MESH.replace("STRATEGY", "ensemble:k=2,tiers=device")), tmp_path)
    async with run_mesh(config) as mesh:
        phones = [a for a in mesh.agents if a.profile.tier is Tier.DEVICE]
        (panel,) = [a for a in mesh.agents if a.profile.tier is Tier.EDGE]
        async with mesh.connect(mesh.requester_identity(), name="test-requester") as bus:
            requester = Requester(mesh.requester_identity(), bus=bus, trust=mesh.trust)
            async with anyio.create_task_group() as tg:
                await tg.start(requester.run)
                await wait_registry(requester, mesh.agents)
                outcome = await requester.submit(
                    TaskSpec(
                        messages=[ChatMessage(role=Role.USER, content="What is 6*7?")],
                        constraints=Constraints(
                            deadline_ns=time.time_ns() + 20_000_000_000,
                            max_price_micros=100_000,
                            preferred_tiers=[Tier.EDGE],
                        ),
                        max_output_tokens=32,
                    )
                )
                tg.cancel_scope.cancel()
        assert outcome.agent_id == panel.id and outcome.model == "strategy-ensemble"
        assert outcome.attestation.output_checked and outcome.answer.startswith("[sim-small simulated answer]")
        assert [p.stats.awards for p in phones] == [1, 1]  # the ensemble went to both devices, once each
    gateway_id = mesh.identities[gateway_requester_name("panel")].id
    assert mesh.trust.check(gateway_id, time.time_ns()).name == gateway_requester_name("panel")


async def test_a_gateway_with_an_unknown_strategy_is_a_config_error(tmp_path: Path) -> None:
    config = resolve_paths(parse_mesh(MESH.replace("STRATEGY", "bogus")), tmp_path)
    with pytest.raises(MeshConfigError, match="agent panel: backend strategy: unknown strategy 'bogus'"):
        async with run_mesh(config):
            pass
