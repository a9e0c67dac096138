"""Reputation survives the process: an agent that failed to deliver in one `accord ask` loses the next one.

A mesh of two agents at the same price (zero) and speed: ``flaky`` claims quality 0.95 and fails every task
(a replay backend with no record of the question), ``steady`` claims 0.7 and answers. The first `accord ask`
awards the flaky agent (its claim wins), which fails; the task is re-awarded to the steady one. The outcome store
in the mesh's state dir records the failure. A second `accord ask`, a new process that never saw the failure
itself, awards the steady agent at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from accord.bus.server import NatsServer
from accord.mesh.config import load_mesh
from accord.mesh.state import MeshState, load_trust
from accord.routing.store import OutcomeStore
from tests.support.cli import poll, spawn, stop

MESH = """
[[agents]]
name = "flaky"
tier = "cloud"
region = "eu-west"
backend = { kind = "replay", log = "flaky.jsonl", model = "flaky-model" }
resources = { price_in_per_1k_micros = 0, price_out_per_1k_micros = 0, quality = 0.95, tokens_per_s = 1000.0 }

[[agents]]
name = "steady"
tier = "cloud"
region = "eu-west"
backend = { kind = "simulated", model = "sim-small", tokens_per_s = 1000.0, ttft_ms = 0.0, realtime = false }
resources = { price_in_per_1k_micros = 0, price_out_per_1k_micros = 0, quality = 0.7 }
"""


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_failure_to_deliver_is_remembered_by_the_next_ask_process(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(MESH, encoding="utf-8")
    record = {"prompt": "something else entirely", "model": "flaky-model", "response": "x", "correct": True}
    (tmp_path / "flaky.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    config = load_mesh(tmp_path / "mesh.toml")
    assert config.state_dir is not None
    state = MeshState(Path(config.state_dir))
    _, identities = load_trust(config, state)
    flaky, steady = identities["flaky"].id, identities["steady"].id
    server = await NatsServer(name="accord-evidence", jetstream=False).astart()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["up"] = spawn(["up", "mesh.toml", "--nats", server.url], tmp_path, tmp_path / "up.log")
        up_log = tmp_path / "up.log"
        await poll(lambda: "mesh up on" in up_log.read_text(errors="replace"), timeout_s=60, what="mesh up")
        for n in (1, 2):
            ask = ["ask", f"Question {n}: what is 2+2?", "--mesh", "mesh.toml", "--nats", server.url]
            procs[f"ask{n}"] = spawn(ask, tmp_path, tmp_path / f"ask{n}.log")
            await anyio.to_thread.run_sync(procs[f"ask{n}"].wait, 90)
        procs["up"].send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(procs["up"].wait, 30)
    finally:
        for proc in procs.values():
            stop(proc, signal.SIGKILL, 5)  # reaps what a failure left running
        await server.acleanup()
    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in procs}
    assert procs["ask1"].returncode == 0 and procs["ask2"].returncode == 0, logs
    with OutcomeStore(state.outcomes_file) as store:
        rows = [(r.first_user_prompt()[:10], r.agent, r.attempt, r.delivered) for r in store.rows()]
    assert rows == [
        ("Question 1", flaky, 1, False),
        ("Question 1", steady, 2, True),
        ("Question 2", steady, 1, True),  # the new process knew: the flaky agent was not awarded again
    ], (rows, logs)
