"""A6: `accord conformance` reports one clear precondition error, not a table of "no Bid" failures, when the
agent is not on the mesh or does not trust the kit's key (certified after the agent loaded its trust)."""

from __future__ import annotations

import random
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from accord.bus.server import NatsServer
from accord.security import TrustStore, save_identity
from accord.security.testing import Pki
from tests.conformance.harness import certify_sim_agent, start_sim_agent

pytestmark = pytest.mark.integration

TIMINGS = ["--timeout-ms", "1500", "--bid-window-ms", "300", "--advert-timeout-ms", "3000"]


class _View:
    """What start_sim_agent reads of a Pki: its trust store (here a copy taken before the kit was certified)."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust


async def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-c", "from accord.cli import main; main()", "conformance", *args]
    return await anyio.run_process(command, check=False)


@pytest.mark.asyncio
async def test_one_precondition_error_instead_of_failed_checks(tmp_path: Path) -> None:
    pki = Pki(random.Random(6))
    agent = certify_sim_agent(pki)
    agent_trust = TrustStore.from_json(pki.trust.to_json())  # what the agent loaded at its start
    absent = pki.agent("absent")  # certified, never started
    kit = pki.agent("conformance-kit")  # certified after the agent started
    key, trust = tmp_path / "kit.seed", tmp_path / "trust.json"
    save_identity(kit, key)
    pki.trust.save(trust)
    async with (
        await NatsServer(name="accord-conformance-pre", jetstream=False).astart() as server,
        AsyncExitStack() as stack,
    ):
        await start_sim_agent(stack, server.url, cast(Any, _View(agent_trust)), agent)
        common = ["--nats", server.url, "--trust", str(trust), "--key", str(key), *TIMINGS]
        refused = await _cli("--agent", agent.id, *common, "--json", str(tmp_path / "refused.json"))
        missing = await _cli("--agent", absent.id, *common)
    out = {name: (p.stdout + p.stderr).decode() for name, p in (("refused", refused), ("missing", missing))}
    assert refused.returncode == 2, out["refused"]
    assert "ignores the kit's Tasks" in out["refused"] and kit.id in out["refused"], out["refused"]
    assert "no Bid" not in out["refused"] and "FAILED" not in out["refused"]
    assert (tmp_path / "refused.json").read_text().count('"id"') == 1  # one result: the precondition
    assert missing.returncode == 2, out["missing"]
    assert "is not on the mesh" in out["missing"] and "no Bid" not in out["missing"], out["missing"]
