"""The command line: bad input gives a clear message and a non-zero exit, never a traceback (the commands run
as subprocesses, as a user runs them, all at once to keep the wall time down); and `accord ask`'s wait for an
agent that could take the question (:func:`accord.mesh.discovery.await_candidates`, over MemoryBus).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import anyio
import pytest

from accord.bus.memory import MemoryBroker
from accord.bus.server import free_port
from accord.mesh.discovery import DISCOVERY_WAIT_MS, NoAgentError, await_candidates
from accord.protocol.messages import Privacy, Tier
from accord.runtime.requester import Requester
from accord.security import Identity, save_identity
from accord.security.testing import Pki
from tests.support.cli import run_all
from tests.support.runtime_kit import AgentSpec, make_agent, spec, wait_for

GOOD_AGENT = """
[[agents]]
name = "a"
tier = "device"
backend = { kind = "simulated" }
"""


def test_bad_input_gives_a_clear_message_and_a_non_zero_exit(tmp_path: Path) -> None:
    closed = f"nats://127.0.0.1:{free_port()}"
    (tmp_path / "mesh.toml").write_text(GOOD_AGENT, encoding="utf-8")
    (tmp_path / "bad.toml").write_text("[[agents]\nname = ", encoding="utf-8")
    (tmp_path / "badfield.toml").write_text(GOOD_AGENT.replace('"device"', '"phone"'), encoding="utf-8")
    (tmp_path / "nokey.toml").write_text(GOOD_AGENT + 'key = "keys/missing.seed"\n', encoding="utf-8")
    # a trust file from an operator that never certified this agent's key
    pki = Pki(random.Random(3))
    pki.agent("someone-else")
    pki.trust.save(tmp_path / "trust.json")
    stranger = Identity.generate()
    save_identity(stranger, tmp_path / "stranger.seed")
    (tmp_path / "untrusted.toml").write_text(
        '[trust]\nfile = "trust.json"\n' + GOOD_AGENT + 'key = "stranger.seed"\n', encoding="utf-8"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    results = run_all(
        {
            "unreachable": (["ask", "hello", "--mesh", "mesh.toml", "--nats", closed], tmp_path),
            "malformed": (["up", "bad.toml"], tmp_path),
            "bad_field": (["up", "badfield.toml", "--nats", closed], tmp_path),
            "missing_key": (["up", str(tmp_path / "nokey.toml"), "--nats", closed], elsewhere),
            "unknown_key": (["up", "untrusted.toml", "--nats", closed], tmp_path),
            "unknown_agent": (["up", "mesh.toml", "--only", "zed", "--nats", closed], tmp_path),
            "no_mesh_running": (["ask", "hello", "--mesh", "mesh.toml"], tmp_path),
        }
    )
    for name, (code, text) in results.items():
        assert code != 0, (name, text)
        assert "Traceback" not in text, (name, text)

    code, text = results["unreachable"]
    assert code == 1 and "bus error" in text and "cannot connect" in text and closed in text, text
    code, text = results["malformed"]
    assert code == 2 and "bad.toml" in text and "not valid TOML" in text, text
    code, text = results["bad_field"]
    assert code == 2 and "$.agents[0].tier" in text and "phone" in text, text
    code, text = results["missing_key"]  # a key path relative to the mesh file, run from another directory
    assert code == 1 and "key_file_missing" in text and "missing.seed" in text, text
    code, text = results["unknown_key"]
    assert code == 1 and stranger.id in text and "not trusted" in text and "unknown_key" in text, text
    code, text = results["unknown_agent"]
    assert code == 1 and "zed" in text and "no agent named" in text, text
    code, text = results["no_mesh_running"]
    assert code == 2 and "no running mesh" in text, text


def test_the_default_wait_covers_one_heartbeat_interval() -> None:
    from accord.protocol.contractor import ContractorProfile

    ttl_ms = ContractorProfile(name="x", tier=Tier.CLOUD, region="r", models=()).ttl_ms
    assert ttl_ms // 3 < DISCOVERY_WAIT_MS <= ttl_ms // 3 + 2_000


@pytest.mark.asyncio
async def test_ask_waits_for_an_agent_that_could_take_the_question() -> None:
    broker = MemoryBroker(seed=5)
    pki = Pki(random.Random(5))
    requester = Requester(pki.agent("req"), bus=broker.bus(), trust=pki.trust, rng=random.Random(1))
    agent = make_agent(pki, broker.bus(), AgentSpec("late", price=100))  # certified for residency eu only
    found: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(requester.run)
        with pytest.raises(NoAgentError) as short:
            await await_candidates(requester, spec(deadline_ms=200), timeout_ms=300)

        async def ask() -> None:
            # the deadline counts from the announce: a wait longer than it does not use it up (A7)
            found.extend(await await_candidates(requester, spec(deadline_ms=300), timeout_ms=30_000))

        tg.start_soon(ask)
        await anyio.sleep(0.3)
        assert found == []  # still waiting: nobody has advertised
        await tg.start(agent.run)  # advertises once at start
        with anyio.fail_after(10):
            while not found:  # noqa: ASYNC110 - polling a list filled by the other task
                await anyio.sleep(0.01)
        assert found == [agent.id]

        # the registry knows the agent, but it cannot take these: a clear reason, no candidates
        with pytest.raises(NoAgentError) as residency:
            await await_candidates(requester, spec(residency="us"), timeout_ms=100)
        with pytest.raises(NoAgentError) as privacy:
            await await_candidates(requester, spec(privacy=Privacy.CONFIDENTIAL), timeout_ms=100)
        with pytest.raises(NoAgentError) as budget:
            await await_candidates(requester, spec(max_price_micros=0, max_output_tokens=1000), timeout_ms=100)
        assert await await_candidates(requester, spec(), timeout_ms=0) == [agent.id]
        await agent.stop()  # withdraws: the registry forgets it at once
        await agent.done.wait()
        await wait_for(lambda: requester.registry.count(now=time.time_ns()) == 0, what="withdraw")
        with pytest.raises(NoAgentError) as gone:
            await await_candidates(requester, spec(), timeout_ms=100)
        tg.cancel_scope.cancel()

    assert "1 agent advertised" in str(residency.value) and "not certified for residency us x1" in str(
        residency.value
    )
    assert "not certified for privacy confidential x1" in str(privacy.value)
    assert "budget x1" in str(budget.value)
    assert "after waiting 0.1 s: no agent advertised on the mesh" in str(gone.value)
    assert "after waiting 0.3 s: no agent advertised" in str(short.value)
