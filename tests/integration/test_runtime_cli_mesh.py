"""`accord up` and `accord ask` as a user runs them (subprocesses) against a real nats-server.

- `accord up` ends gracefully on SIGTERM and SIGINT, also when the signal arrives during start-up: every agent
  sends its Withdraw, the embedded nats-server is stopped (its process is gone), the exit code is 0.
- `accord ask`, started before any agent is up, waits for the advert of an agent that could take the question
  instead of announcing into an empty registry; with nobody able to take it, it fails with a clear message and
  exit code 1. With ``--strategy ensemble:k=2`` two different agents answer; an unknown strategy exits 2.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.mesh.config import load_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.protocol import subjects
from accord.protocol.messages import Advertise, Withdraw
from accord.security import Identity, inbox_prefix, peek
from tests.support.cli import alive, poll, spawn, stop

MESH = """
[[agents]]
name = "sim"
tier = "device"
region = "eu-west"
residency = ["eu"]
count = 2
backend = { kind = "simulated", model = "sim-small" }
"""


@dataclass
class _Mesh:
    """One `accord up` process on its own mesh file and state dir."""

    dir: Path
    watcher: Identity
    """The mesh's requester key: its server admits certified keys only."""
    ids: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    adverts: set[str] = field(default_factory=set)
    withdrawn: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, base: Path, name: str) -> _Mesh:
        d = base / name
        d.mkdir()
        (d / "mesh.toml").write_text(MESH, encoding="utf-8")
        config = load_mesh(d / "mesh.toml")
        assert config.state_dir is not None
        _, identities = load_trust(config, MeshState(Path(config.state_dir)))  # keys once, shared with `up`
        return cls(d, identities[REQUESTER_NAME], {n: identities[n].id for n in ("sim-1", "sim-2")})

    @property
    def url_file(self) -> Path:
        return self.dir / ".accord" / "nats.url"

    @property
    def log(self) -> Path:
        return self.dir / "up.log"

    def start(self) -> None:
        self.proc = spawn(["up", "mesh.toml"], self.dir, self.log)

    def server_pid(self) -> int | None:
        found = re.search(r"nats-server pid (\d+)", self.log.read_text(errors="replace"))
        return int(found.group(1)) if found else None

    async def watch(self, bus: NatsBus) -> None:
        async with await bus.subscribe(subjects.advertise_filter()) as sub:
            async for msg in sub:
                message = peek(msg.data, trust=None).message
                if isinstance(message, Advertise):
                    self.adverts.add(message.sender)
                elif isinstance(message, Withdraw):
                    self.withdrawn.add(message.sender)

    def kill(self) -> None:
        """Leave nothing behind if the test failed half-way (the process and the nats-server it started)."""
        pid = self.server_pid() if self.log.exists() else None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def meshes(tmp_path: Path) -> Iterator[dict[str, _Mesh]]:
    made = {name: _Mesh.create(tmp_path, name) for name in ("term", "int", "early")}
    try:
        yield made
    finally:
        for mesh in made.values():
            mesh.kill()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_up_stops_gracefully_on_sigterm_and_sigint(meshes: dict[str, _Mesh]) -> None:
    for mesh in meshes.values():
        mesh.start()
    sig = {"term": signal.SIGTERM, "int": signal.SIGINT}

    async def during_start_up(mesh: _Mesh) -> None:
        # the url file is written as soon as the embedded server is ready, before the agents start
        await poll(mesh.url_file.exists, timeout_s=60, what="url file")
        assert mesh.proc is not None
        mesh.proc.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(mesh.proc.wait, 30)

    async def when_advertised(mesh: _Mesh, signum: signal.Signals) -> None:
        await poll(mesh.url_file.exists, timeout_s=60, what="url file")
        url = mesh.url_file.read_text().strip()
        async with (
            NatsBus(
                url,
                name="watcher",
                nkey_seed=mesh.watcher.seed,
                inbox_prefix=inbox_prefix(mesh.watcher.id),
                reconnect_wait_ms=50,
                max_reconnect_attempts=2,
            ) as bus,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(mesh.watch, bus)
            await poll(lambda: mesh.adverts >= set(mesh.ids.values()), timeout_s=30, what="adverts")
            await poll(mesh.server_pid, timeout_s=10, what="the mesh-up line")
            assert mesh.proc is not None
            mesh.proc.send_signal(signum)
            await poll(lambda: mesh.withdrawn >= set(mesh.ids.values()), timeout_s=15, what="withdraws")
            tg.cancel_scope.cancel()
        assert mesh.proc is not None
        await anyio.to_thread.run_sync(mesh.proc.wait, 30)

    async with anyio.create_task_group() as tg:
        tg.start_soon(during_start_up, meshes["early"])
        for name, signum in sig.items():
            tg.start_soon(when_advertised, meshes[name], signum)

    for name, mesh in meshes.items():
        assert mesh.proc is not None
        text = mesh.log.read_text(errors="replace")
        assert mesh.proc.returncode == 0, (name, text[-3000:])
        assert "Traceback" not in text, (name, text[-3000:])
        assert "stopping the mesh" in text and "mesh stopped after" in text, (name, text[-3000:])
        pid = mesh.server_pid()
        assert pid is not None, (name, text[-3000:])
        assert not alive(pid), f"{name}: nats-server {pid} still running"
        assert not mesh.url_file.exists(), name  # no stale pointer to a mesh that is gone
    for name in sig:
        assert meshes[name].withdrawn == set(meshes[name].ids.values()), name
    assert "SIGINT" in meshes["int"].log.read_text() and "SIGTERM" in meshes["term"].log.read_text()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_ask_waits_for_an_agent_and_fails_clearly_without_one(tmp_path: Path) -> None:
    mesh = _Mesh.create(tmp_path, "ask")
    server = await NatsServer(name="accord-ask", jetstream=False).astart()
    ask = ["ask", "What is 2+2?", "--mesh", "mesh.toml", "--nats", server.url]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        # the question is asked first; the agents start after it (as `accord up ... & accord ask ...` would)
        procs["fresh"] = spawn([*ask, "--wait-ms", "60000"], mesh.dir, tmp_path / "fresh.log")
        # meanwhile, with nobody there at all, a short wait ends in a clear error
        procs["empty"] = spawn([*ask, "--wait-ms", "300"], mesh.dir, tmp_path / "empty.log")
        await anyio.to_thread.run_sync(procs["empty"].wait, 60)
        procs["up"] = spawn(["up", "mesh.toml", "--nats", server.url], mesh.dir, tmp_path / "up.log")
        # none of the agents is certified for this residency class: told why, after the default wait (which
        # spans a heartbeat interval, so it sees both agents once they are up)
        up_log = tmp_path / "up.log"
        await poll(lambda: "mesh up on" in up_log.read_text(errors="replace"), timeout_s=60, what="mesh up")
        procs["ruled_out"] = spawn([*ask, "--residency", "us"], mesh.dir, tmp_path / "ruled_out.log")
        # a strategy: two different agents answer, the run's calls and totals are listed
        procs["ensemble"] = spawn([*ask, "--strategy", "ensemble:k=2"], mesh.dir, tmp_path / "ensemble.log")
        procs["bad_strategy"] = spawn([*ask, "--strategy", "bogus"], mesh.dir, tmp_path / "bad_strategy.log")
        # one named agent, by its certified name or its id: a direct award from its price sheet
        procs["by_name"] = spawn([*ask, "--agent", "sim-1"], mesh.dir, tmp_path / "by_name.log")
        procs["by_id"] = spawn([*ask, "--agent", mesh.ids["sim-2"]], mesh.dir, tmp_path / "by_id.log")
        procs["nobody"] = spawn([*ask, "--agent", "nobody"], mesh.dir, tmp_path / "nobody.log")
        procs["agent_strategy"] = spawn(
            [*ask, "--agent", "sim-1", "--strategy", "ensemble"], mesh.dir, tmp_path / "agent_strategy.log"
        )
        for name in (
            "fresh",
            "ruled_out",
            "ensemble",
            "bad_strategy",
            "by_name",
            "by_id",
            "nobody",
            "agent_strategy",
        ):
            await anyio.to_thread.run_sync(procs[name].wait, 90)
        procs["up"].send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(procs["up"].wait, 30)
    finally:
        for proc in procs.values():
            stop(proc, signal.SIGKILL, 5)  # reaps what a failure left running
        await server.acleanup()

    out = {name: " ".join((tmp_path / f"{name}.log").read_text(errors="replace").split()) for name in procs}
    assert all("Traceback" not in text for text in out.values()), out
    assert procs["empty"].returncode == 1, out["empty"]
    assert "no agent could take the task after waiting 0.3 s: no agent advertised on the mesh" in out["empty"]
    assert procs["fresh"].returncode == 0, out["fresh"]
    assert "[sim-small simulated answer]" in out["fresh"]  # the answer, printed as text (not rich markup)
    assert re.search(
        r"-- answer: sim-\d \(device, eu-west\), model sim-small, .* attestation verified", out["fresh"]
    )
    assert procs["ensemble"].returncode == 0, out["ensemble"]
    assert {"sim-1", "sim-2"} == set(re.findall(r"-- answer: (sim-\d) \(device", out["ensemble"])), out["ensemble"]
    assert "-- ensemble: 2 calls" in out["ensemble"], out["ensemble"]
    assert procs["bad_strategy"].returncode == 2, out["bad_strategy"]
    assert "unknown strategy 'bogus'" in out["bad_strategy"], out["bad_strategy"]
    assert procs["ruled_out"].returncode == 1, out["ruled_out"]
    assert "2 agents advertised, all ruled out by the task's constraints" in out["ruled_out"], out["ruled_out"]
    assert "not certified for residency us x2" in out["ruled_out"], out["ruled_out"]
    for name, agent in (("by_name", "sim-1"), ("by_id", "sim-2")):
        assert procs[name].returncode == 0, out[name]
        assert re.search(rf"-- answer: {agent} \(device, eu-west\), model sim-small", out[name]), out[name]
    assert procs["nobody"].returncode == 2, out["nobody"]
    assert "--agent nobody: no agent of that name or id is certified" in out["nobody"], out["nobody"]
    assert procs["agent_strategy"].returncode == 2, out["agent_strategy"]
    assert "--agent asks one agent" in out["agent_strategy"], out["agent_strategy"]
    assert procs["up"].returncode == 0, out["up"]
