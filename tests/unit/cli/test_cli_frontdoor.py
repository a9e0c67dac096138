"""The command line for scripts (issue 17): usage errors exit 2 before anything connects (A9), `accord verify`
tells a refusal (1) from a check that could not be made (2) (A12), `--version`, `$NATS_URL` and `$ACCORD_MESH`
(A13), one-line errors for a replay log that is missing (A8) and for unknown `resources` keys (A9), and a library
that logs nothing on stdout when its user configured nothing (A11). Commands run as subprocesses, all at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from accord.bus.server import free_port
from tests.support.cli import cli_env, run_all
from tests.support.paths import REPO_ROOT

MESH = """
[[agents]]
name = "a"
tier = "device"
backend = { kind = "simulated" }
"""
VEC = REPO_ROOT / "spec" / "vectors" / "security"
VEC_NOW = "1750000000000000000"


def test_usage_errors_and_one_line_failures(tmp_path: Path) -> None:
    closed = f"nats://127.0.0.1:{free_port()}"  # nothing listens: a command that gets this far fails otherwise
    (tmp_path / "mesh.toml").write_text(MESH, encoding="utf-8")
    (tmp_path / "other.toml").write_text(MESH.replace('"device"', '"cloud"'), encoding="utf-8")
    (tmp_path / "typo.toml").write_text(MESH + "resources = { price_out_per_1k = 5 }\n", encoding="utf-8")
    (tmp_path / "replay.toml").write_text(
        MESH.replace('{ kind = "simulated" }', '{ kind = "replay", log = "missing.jsonl" }'), encoding="utf-8"
    )
    ask = ["ask", "--mesh", "mesh.toml", "--nats", closed]
    typo_env = {"ACCORD_MESH": str(tmp_path / "typo.toml")}
    verify = ["verify", str(VEC / "attestation.dsse.json"), "--trust"]
    results = run_all(
        {
            "empty_question": ([*ask, ""], tmp_path, None),
            "blank_question": ([*ask, "   "], tmp_path, None),
            "bad_form": ([*ask, "q", "--form", "essay"], tmp_path, None),
            "zero_tokens": ([*ask, "q", "--max-tokens", "0"], tmp_path, None),
            "negative_budget": ([*ask, "q", "--budget-micros", "-1"], tmp_path, None),
            "context_without_split": ([*ask, "q", "--context-file", "mesh.toml"], tmp_path, None),
            "unknown_resource": (["up", "typo.toml", "--nats", closed], tmp_path, None),
            "missing_replay_log": (["up", "replay.toml"], tmp_path, None),  # with an embedded nats-server
            "version": (["--version"], tmp_path, None),
            "nats_url_env": (["ask", "q", "--mesh", "mesh.toml"], tmp_path, {"NATS_URL": closed}),
            "accord_mesh_env": (["ask", "q", "--nats", closed], tmp_path, typo_env),
            "verify_ok": ([*verify, str(VEC / "trust.json"), "--at-ns", VEC_NOW], tmp_path, None),
            "verify_no_trust_file": ([*verify, "missing-trust.json"], tmp_path, None),
            "verify_refused": ([*verify, str(VEC / "trust.json"), "--output", "mesh.toml"], tmp_path, None),
        },
    )
    for name, (_, text) in results.items():
        assert "Traceback" not in text and "ExceptionGroup" not in text, (name, text)
    for name in ("empty_question", "blank_question"):
        assert results[name] == (2, "error: the question is empty"), results[name]
    for name, option in (("bad_form", "--form"), ("zero_tokens", "--max-tokens"), ("negative_budget", "--budget")):
        code, text = results[name]
        assert code == 2 and option in text and "Invalid value" in text, (name, text)
    code, text = results["context_without_split"]
    assert code == 2 and "split strategy only" in text, text
    code, text = results["unknown_resource"]
    assert code == 2 and "unknown key price_out_per_1k" in text and "price_out_per_1k_micros" in text, text
    code, text = results["missing_replay_log"]
    assert code == 1 and "cannot read the log" in text and "missing.jsonl" in text, text
    assert len(text) < 300, text  # one line, not a traceback of a task group
    assert results["version"] == (0, "accord 0.1.0")
    code, text = results["nats_url_env"]  # the URL came from $NATS_URL (no running mesh otherwise)
    assert code == 1 and "cannot connect" in text and closed in text, text
    code, text = results["accord_mesh_env"]  # the mesh file came from $ACCORD_MESH
    assert code == 2 and "typo.toml" in text and "unknown key" in text, text
    assert results["verify_ok"][0] == 0, results["verify_ok"]
    code, text = results["verify_no_trust_file"]
    assert code == 2 and "cannot check" in text and "missing-trust.json" in text, text
    code, text = results["verify_refused"]
    assert code == 1 and "output_mismatch" in text, text


LIBRARY_USER = """
import random, time
import anyio
from accord.bus.memory import MemoryBroker
from accord.protocol.messages import ChatMessage, Constraints, Role
from accord.protocol.requester import TaskSpec
from accord.runtime import Agent, Requester
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, make_agent

async def main() -> None:
    pki, broker = Pki(random.Random(1)), MemoryBroker()
    agent = make_agent(pki, broker.bus(), AgentSpec("worker"))
    requester = Requester(pki.agent("me"), bus=broker.bus(), trust=pki.trust)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await tg.start(requester.run)
        await requester.submit(TaskSpec(
            messages=[ChatMessage(role=Role.USER, content="2+2?")],
            constraints=Constraints(deadline_ns=time.time_ns() + 5_000_000_000, max_price_micros=10_000),
        ))
        await broker.bus().publish("accord.v1.adv.cloud.r.U" + "A" * 55, b"garbage")  # a refused frame: a warning
        await anyio.sleep(0.1)
        await agent.stop()
        tg.cancel_scope.cancel()

anyio.run(main)
"""


def test_the_library_prints_nothing_unless_configured(tmp_path: Path) -> None:
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(LIBRARY_USER), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)], cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "", out.stdout  # structlog's defaults would print every event here
    assert out.stderr == "", out.stderr
