"""The command line for scripts and operations, against real meshes (issue 17):

- A1: a mesh whose trust file was made with `accord keys`: `ask` with an uncertified key says so and how to fix
  it; `--key` with a certified requester key works.
- A2: stdout is the answer's exact text (the attestation saved with `--save-attestation` verifies against it);
  `--json` gives answer, agent, model, price and attestation. A10: `ask -` reads stdin; 5 MB fails as
  payload_too_large at once. A7: a 500 ms deadline with the agents up is enough (it counts from the announce).
  A13/A11: `accord agents` finds the agents by service PING and shows their whole ids.
- A5/A11: a lock per mesh (a second `up` fails, `ps` lists, `down` stops), Ctrl-C in `ask` exits 130, a stale
  URL file is ignored, `--log-json` writes JSON lines only.
- A3: a backend that cannot serve fails `up` with its cause; one that breaks later withdraws its agent and the
  asker sees the cause.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from accord.bus.server import NatsServer, free_port
from accord.cli import app
from accord.httpapi import serve_http
from accord.mesh.auth import connect_as
from accord.mesh.config import parse_mesh, resolve_paths
from accord.mesh.discovery import await_candidates
from accord.mesh.run import run_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState
from accord.protocol.messages import ReasonCode
from accord.runtime.requester import Requester, TaskFailed
from tests.support.cli import ACCORD, alive, cli_env, poll, spawn, stop, wait_for_text
from tests.support.runtime_kit import spec

pytestmark = pytest.mark.integration

AGENTS = """
[[agents]]
name = "dev-a"
tier = "device"
region = "eu-west"
residency = ["eu"]
key = "a.seed"
backend = { kind = "simulated", model = "sim-small", output_tokens = 90, tokens_per_s = 2000, ttft_ms = 5 }

[[agents]]
name = "dev-b"
tier = "device"
region = "eu-west"
residency = ["eu"]
key = "b.seed"
backend = { kind = "simulated", model = "sim-small", output_tokens = 90, tokens_per_s = 2000, seed = 3 }
"""


def _keys(d: Path) -> dict[str, str]:
    """An operator, two agents and a requester, certified in trust.json with `accord keys` (the README's way)."""
    runner = CliRunner()
    ids = {}
    assert runner.invoke(app, ["keys", "new-operator", str(d / "op.seed")]).exit_code == 0
    for name, seed in (("dev-a", "a.seed"), ("dev-b", "b.seed"), ("me", "me.seed")):
        made = runner.invoke(app, ["keys", "new-agent", str(d / seed)])
        assert made.exit_code == 0, made.output
        ids[name] = made.stdout.strip().split()[-1]
        issued = runner.invoke(
            app,
            [
                *("keys", "issue", "--operator-key", str(d / "op.seed"), "--agent", str(d / seed), "--name", name),
                *(
                    "--tier",
                    "device",
                    "--region",
                    "eu-west",
                    "--residency",
                    "eu",
                    "--trust",
                    str(d / "trust.json"),
                ),
            ],
        )
        assert issued.exit_code == 0, issued.output
    return ids


def _run(argv: list[str], cwd: Path, *, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*ACCORD, *argv], cwd=cwd, env=cli_env(), input=stdin, capture_output=True, timeout=120)


@pytest.mark.asyncio
async def test_ask_and_agents_for_scripts_on_a_keys_made_mesh(tmp_path: Path) -> None:
    ids = _keys(tmp_path)
    (tmp_path / "mesh.toml").write_text('[trust]\nfile = "trust.json"\n' + AGENTS, encoding="utf-8")
    server = await NatsServer(name="accord-scripts", jetstream=False).astart()
    up = spawn(["up", "mesh.toml", "--nats", server.url], tmp_path, tmp_path / "up.log")
    try:
        await anyio.to_thread.run_sync(wait_for_text, tmp_path / "up.log", "mesh up on")
        ask = ["ask", "--nats", server.url]
        keyed = [*ask, "--key", "me.seed"]
        cases = {
            "nokey": ([*ask, "What is 2+2?"], b""),
            "plain": ([*keyed, "What is 2+2?", "--deadline-ms", "500", "--save-attestation", "att.json"], b""),
            "json": ([*keyed, "Name a colour.", "--json"], b""),
            "stdin": ([*keyed, "-"], b"What is the capital of France?\n"),
            "huge": ([*keyed, "-"], b"x" * 5_000_000),
            "agents": (["agents", "--nats", server.url], b""),
        }
        done: dict[str, subprocess.CompletedProcess[bytes]] = {}

        async def one(name: str) -> None:
            argv, stdin = cases[name]
            done[name] = await anyio.to_thread.run_sync(lambda: _run(argv, tmp_path, stdin=stdin))

        async with anyio.create_task_group() as tg:
            for name in cases:
                tg.start_soon(one, name)
    finally:
        assert stop(up) == 0, (tmp_path / "up.log").read_text()
        await server.acleanup()
    text = {name: (p.stdout + p.stderr).decode(errors="replace") for name, p in done.items()}
    assert all("Traceback" not in t for t in text.values()), text

    assert done["nokey"].returncode == 1, text["nokey"]  # before: no_bids, agents logging unknown_key
    assert "is not certified by" in text["nokey"] and "--key" in text["nokey"], text["nokey"]

    plain = done["plain"]
    assert plain.returncode == 0, text["plain"]  # 500 ms suffice: the wait for agents is not in the deadline
    answer = plain.stdout.decode()
    assert "[sim-small simulated answer]" in answer and "--" not in answer  # the answer only, unwrapped
    assert "\n" not in answer.strip() and len(answer) > 100  # one long line, as the model wrote it
    assert "-- answer: dev-" in plain.stderr.decode()  # who answered: on stderr
    (tmp_path / "answer.txt").write_bytes(plain.stdout)
    verified = _run(["verify", "att.json", "--trust", "trust.json", "--output", "answer.txt"], tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    record = json.loads(done["json"].stdout)
    assert {"answer", "agent", "agent_name", "model", "price_micros", "attestation"} <= set(record)
    assert record["agent"] in (ids["dev-a"], ids["dev-b"]) and record["model"] == "sim-small"
    assert record["attestation"]["payloadType"] == "application/vnd.in-toto+json"

    assert done["stdin"].returncode == 0 and b"simulated answer" in done["stdin"].stdout, text["stdin"]
    assert done["huge"].returncode == 1 and "payload_too_large" in text["huge"], text["huge"]
    assert "no_bids" not in text["huge"]

    assert done["agents"].returncode == 0, text["agents"]
    assert ids["dev-a"] in text["agents"] and ids["dev-b"] in text["agents"]  # whole ids, not 12 characters


MESH = """
[[agents]]
name = "sim"
tier = "device"
backend = { kind = "simulated", model = "sim-small" }
"""


@pytest.mark.asyncio
async def test_one_mesh_one_process_ps_down_interrupt_and_json_logs(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(MESH, encoding="utf-8")
    url_file = tmp_path / ".accord" / "nats.url"
    first = spawn(
        ["up", "mesh.toml", "--log-json", "--log-level", "info"],
        tmp_path,
        tmp_path / "up.out",
        stderr_to=tmp_path / "up.err",
    )
    asking = None
    try:
        await poll(lambda: "mesh.ready" in (tmp_path / "up.err").read_text(), timeout_s=60, what="mesh.ready")
        url = url_file.read_text().strip()
        second = _run(["up", "mesh.toml", "--log-json"], tmp_path)
        assert second.returncode == 1, second.stderr
        (failed,) = [json.loads(line) for line in second.stderr.decode().splitlines()]  # JSON, even the error
        assert f"already runs in another process (pid {first.pid})" in failed["error"], failed
        assert url_file.read_text().strip() == url  # the first mesh's URL stands
        ps = _run(["ps", "mesh.toml"], tmp_path)
        assert ps.returncode == 0 and str(first.pid) in ps.stdout.decode() and url in ps.stdout.decode()

        # Ctrl-C while `ask` waits for an agent that could take the question: exit 130
        asking = spawn(
            ["ask", "q", "--residency", "nowhere", "--wait-ms", "60000"], tmp_path, tmp_path / "ask.log"
        )
        requester = MeshState(tmp_path / ".accord").identity(REQUESTER_NAME)
        async with connect_as(url, requester, name="probe") as bus:  # the mesh admits certified keys only

            async def ask_is_up() -> None:
                while True:  # the waiting requester answers the service protocol once it runs
                    try:
                        await bus.request("$SRV.PING.accord-requester", b"", timeout_ms=200)
                        return
                    except Exception:
                        await anyio.sleep(0.05)

            with anyio.fail_after(30):
                await ask_is_up()
        assert stop(asking, signal.SIGINT) == 130, (tmp_path / "ask.log").read_text()
        assert "Traceback" not in (tmp_path / "ask.log").read_text()

        down = _run(["down", "mesh.toml"], tmp_path)
        assert down.returncode == 0, down.stderr
        assert first.wait(30) == 0
    finally:  # SIGTERM: a failure here must not orphan the embedded nats-server, as a SIGKILL of `up` would
        for proc in (first, asking):
            if proc is not None:
                stop(proc, signal.SIGTERM)
    assert not url_file.exists()
    assert _run(["ps", "mesh.toml"], tmp_path).returncode == 1  # nothing runs
    url_file.write_text(f"nats://127.0.0.1:{free_port()}\n")  # a stale pointer, as a crash leaves it
    stale = _run(["ask", "q"], tmp_path)
    assert stale.returncode == 2 and "no running mesh" in stale.stderr.decode(), stale.stderr
    assert (tmp_path / "up.out").read_text() == ""
    lines = (tmp_path / "up.err").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is JSON, nothing else
    assert {"mesh.ready", "agent.online", "mesh.stopping", "mesh.stopped"} <= {e["event"] for e in events}
    assert not alive(first.pid)


class _FakeOpenAI:
    """An OpenAI-compatible endpoint that lists its models but whose key was revoked for completions."""

    def __init__(self) -> None:
        self.models_status = 200

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]}, self.models_status)

        async def chat(request: Request) -> Response:
            return JSONResponse({"error": {"message": "key revoked", "type": "invalid_request_error"}}, 401)

        return Starlette(
            routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])]
        )


OPENAI_AGENT = """
[[agents]]
name = "cloud"
tier = "cloud"
backend = {{ kind = "openai", base_url = "{url}", model = "m", max_retries = 0 }}
"""


@pytest.mark.asyncio
async def test_broken_backends_fail_up_or_withdraw_their_agent(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    (tmp_path / "closed.toml").write_text(OPENAI_AGENT.format(url=closed), encoding="utf-8")
    refused = _run(["up", "closed.toml"], tmp_path)  # before: exit 0, advertised, every ask a bare backend_error
    text = refused.stderr.decode()
    assert refused.returncode == 1 and "agent cloud: backend openai: unreachable" in text, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1
    assert not (tmp_path / ".accord" / "nats.url").exists()

    fake = _FakeOpenAI()
    async with anyio.create_task_group() as tg:
        base = await tg.start(lambda task_status: serve_http(fake.app(), port=0, task_status=task_status))
        fake.models_status = 401
        config = resolve_paths(parse_mesh(OPENAI_AGENT.format(url=base)), tmp_path)
        with pytest.raises(Exception, match=r"agent cloud: backend openai: auth \(HTTP 401\)"):
            async with run_mesh(config):
                pass
        fake.models_status = 200  # the check passes; completions are refused later
        async with (
            run_mesh(config) as mesh,
            mesh.connect(mesh.requester_identity(), name="asker") as bus,
            anyio.create_task_group() as inner,
        ):
            requester = Requester(mesh.requester_identity(), bus=bus, trust=mesh.trust, rng=random.Random(2))
            await inner.start(requester.run)
            await await_candidates(requester, spec(), timeout_ms=10_000)
            with pytest.raises(TaskFailed) as failed:
                await requester.submit(spec(deadline_ms=10_000))
            (agent,) = mesh.agents
            with anyio.fail_after(10):
                await agent.done.wait()  # it left the market instead of winning more tasks
            inner.cancel_scope.cancel()
        tg.cancel_scope.cancel()
    assert failed.value.reason is ReasonCode.BACKEND_ERROR
    assert re.search(r"auth \(HTTP 401\)", failed.value.detail), failed.value.detail  # the asker sees the cause
    assert "auth (HTTP 401)" in agent.left_because
