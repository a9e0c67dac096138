"""End to end on a real nats-server: five agents, each in its own `accord up` process, and 200 tasks.

One agent is SIGKILLed while it holds awards (its tasks are re-awarded), and the broker is restarted once on the
same port mid-run. Every task must end completed or explicitly failed, no task may have two accepted results,
and every accepted result's attestation must verify (checked again by the test, independently).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.mesh.config import load_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.protocol.messages import ChatMessage, Constraints, Policy, Role
from accord.protocol.requester import RequesterConfig, TaskSpec
from accord.runtime.requester import Requester
from tests.support.paths import REPO_ROOT
from tests.support.runtime_kit import History, wait_for, wait_registry

MESH = """
[[agents]]
name = "device"
tier = "device"
region = "eu-west"
residency = ["eu"]
count = 3
slots = 16
bid_hold_ms = 300
[agents.backend]
kind = "simulated"
model = "sim-small"
ttft_ms = 40.0
tokens_per_s = 200.0
output_tokens = 24
price_out_per_1k_micros = 100
quality_mean = 0.6
seed = 1

[[agents]]
name = "cloud"
tier = "cloud"
region = "us-east"
count = 2
slots = 16
bid_hold_ms = 300
[agents.backend]
kind = "simulated"
model = "sim-large"
ttft_ms = 80.0
tokens_per_s = 400.0
output_tokens = 24
price_out_per_1k_micros = 2000
quality_mean = 0.85
seed = 2
"""

TASKS = 200
CONCURRENCY = 24
KILL_AT = 50  # tasks ended when one agent is SIGKILLed
RESTART_AT = 120  # tasks ended when the broker restarts


def _spawn(name: str, mesh: Path, url: str, logs: Path) -> subprocess.Popen[bytes]:
    out = (logs / f"{name}.log").open("wb")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from accord.cli import main; main()",
                "up",
                str(mesh),
                "--only",
                name,
                "--nats",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            start_new_session=True,
        )
    finally:
        out.close()


def _stop(procs: dict[str, subprocess.Popen[bytes]], sig: signal.Signals, timeout_s: float) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            os.kill(proc.pid, sig)
    deadline = time.monotonic() + timeout_s
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _spec(i: int) -> TaskSpec:
    return TaskSpec(
        messages=[ChatMessage(role=Role.USER, content=f"Question {i}: what is {i} + {i}?")],
        constraints=Constraints(deadline_ns=time.time_ns() + 15_000_000_000, max_price_micros=1_000_000),
        max_output_tokens=24,
        est_input_tokens=16,
        bid_window_ms=50,
        policy=Policy(lambda_price=100.0),
    )


@pytest.mark.integration
@pytest.mark.asyncio
async def test_two_hundred_tasks_survive_a_killed_agent_and_a_broker_restart(tmp_path: Path) -> None:
    mesh_file = tmp_path / "mesh.toml"
    mesh_file.write_text(MESH, encoding="utf-8")
    config = load_mesh(mesh_file)
    assert config.state_dir is not None
    trust, identities = load_trust(config, MeshState(Path(config.state_dir)))  # keys and trust, once, shared
    names = [n for a in config.agents for n in a.replica_names()]
    name_of = {identities[n].id: n for n in names}
    logs = tmp_path / "logs"
    logs.mkdir()

    server = await NatsServer(name="accord-e2e", jetstream=False).astart()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    history = History(trust)
    killed: list[str] = []
    outstanding_at_kill: set[str] = set()
    try:
        async with NatsBus(server.url, name="e2e-requester", reconnect_wait_ms=100) as bus:
            req = Requester(
                identities[REQUESTER_NAME],
                bus=bus,
                trust=trust,
                max_in_flight=32,
                rng=random.Random(6),
                config=RequesterConfig(ack_timeout_ms=500, shortlist_k=3),
                observer=history.observer(identities[REQUESTER_NAME].id),
            )
            async with anyio.create_task_group() as tg:
                await tg.start(req.run)
                for name in names:
                    procs[name] = _spawn(name, mesh_file, server.url, logs)
                await wait_registry(req, [identities[n].id for n in names], timeout_s=60)

                limiter = anyio.CapacityLimiter(CONCURRENCY)

                async def one(i: int) -> None:
                    async with limiter:
                        await history.submit(req, _spec(i))

                def ended() -> int:
                    return sum(1 for r in history.by_task.values() if r.outcome is not None or r.error is not None)

                async def chaos() -> None:
                    await wait_for(lambda: ended() >= KILL_AT, timeout_s=120)
                    # the agent holding the most awards not yet answered
                    holding = Counter(
                        r.awards[-1].winner for r in history.by_task.values() if r.awards and r.ended_ns is None
                    )
                    victim_id = next((a for a, _ in holding.most_common() if name_of.get(a) in procs), None)
                    assert victim_id is not None, "no agent holds an award"
                    victim = name_of[victim_id]
                    outstanding_at_kill.update(
                        r.task_id
                        for r in history.by_task.values()
                        if r.awards and r.awards[-1].winner == victim_id and r.ended_ns is None
                    )
                    os.kill(procs[victim].pid, signal.SIGKILL)
                    killed.append(victim)
                    # one fault at a time: the broker restarts once the victim's tasks have all ended
                    await wait_for(
                        lambda: (
                            ended() >= RESTART_AT
                            and all(history.by_task[t].ended_ns is not None for t in outstanding_at_kill)
                        ),
                        timeout_s=120,
                    )
                    await server.arestart()

                async with anyio.create_task_group() as work:
                    work.start_soon(chaos)
                    for i in range(TASKS):
                        work.start_soon(one, i)

                # graceful stop of the survivors: they withdraw, and the requester sees it
                survivors = {n: p for n, p in procs.items() if n not in killed}
                await anyio.to_thread.run_sync(_stop, survivors, signal.SIGINT, 15.0)
                await wait_for(
                    lambda: all(req.registry.get(identities[n].id, now=time.time_ns()) is None for n in survivors),
                    timeout_s=10,
                )
                tg.cancel_scope.cancel()
            lateness = req.timer_lateness_ns
            stats = req.stats
            reconnects = bus.stats.reconnects
    finally:
        await anyio.to_thread.run_sync(_stop, procs, signal.SIGKILL, 5.0)
        await server.acleanup()

    counts = history.counts()
    reawarded_from_victim = [
        t for t in outstanding_at_kill if (o := history.by_task[t].outcome) is not None and o.attempt > 1
    ]
    print(
        f"\ne2e: {counts} killed={killed} tasks held by it={len(outstanding_at_kill)} "
        f"re-awarded and completed={len(reawarded_from_victim)} broker reconnects={reconnects} "
        f"timer lateness={lateness / 1e6:.1f} ms requester={stats.as_dict()}"
    )
    for name, proc in procs.items():
        if name in killed:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 0, (name, proc.returncode, (logs / f"{name}.log").read_text()[-2000:])
    assert counts["tasks"] == TASKS
    assert history.violations(lateness_ns=lateness) == []
    assert counts["completed"] + sum(counts["failed"].values()) == TASKS  # type: ignore[union-attr]
    assert stats.completed == counts["completed"] and stats.submitted == TASKS
    assert len(killed) == 1 and outstanding_at_kill
    assert reawarded_from_victim, "the killed agent's tasks were not re-awarded"
    assert all(history.by_task[t].ended_ns is not None for t in outstanding_at_kill)
    assert reconnects >= 1 and stats.reawards >= len(reawarded_from_victim)
    assert int(counts["completed"]) >= TASKS * 3 // 4  # type: ignore[call-overload]
