"""``accord conformance`` as a user runs it: a subprocess against live agents started by the test."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from accord.bus.server import NatsServer, free_port
from accord.conformance import CHECK_IDS
from accord.conformance.fixtures import Fault
from accord.security import save_identity
from accord.security.testing import Pki
from tests.conformance.harness import (
    MAX_PAYLOAD,
    certify_fixture,
    fixture_profile,
    nkey_user,
    start_fixture,
    start_sim_agent,
)

pytestmark = pytest.mark.integration

TIMINGS = ["--timeout-ms", "2000", "--quiet-ms", "300", "--bid-window-ms", "500", "--advert-timeout-ms", "5000"]


async def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-c", "from accord.cli import main; main()", "conformance", *args]
    return await anyio.run_process(command, check=False)


@pytest.mark.asyncio
async def test_cli_against_live_agents(tmp_path: Path) -> None:
    pki = Pki()
    kit = pki.agent("conformance-kit")
    # A second server with per-agent nkey users and the 11.6 permission template; the kit's key file is also
    # its nkey seed (--key and --nkey-seed name the same file).
    guarded = certify_fixture(pki, Fault.NONE)
    users = [nkey_user(kit), nkey_user(guarded, fixture_profile("guarded"))]
    server = NatsServer(name="accord-conformance-cli", extra={"max_payload": MAX_PAYLOAD})
    secured = NatsServer(name="accord-conformance-auth", users=users, extra={"max_payload": MAX_PAYLOAD})
    await server.astart()
    await secured.astart()
    try:
        async with AsyncExitStack() as stack:
            good = await start_fixture(stack, server.url, pki, Fault.NONE)
            ours = await start_sim_agent(stack, server.url, pki)
            broken = await start_fixture(stack, server.url, pki, Fault.IGNORES_CANCEL)
            await start_fixture(stack, secured.url, pki, Fault.NONE, guarded, auth=True)
            key, trust = tmp_path / "kit.seed", tmp_path / "trust.json"
            save_identity(kit, key)
            pki.trust.save(trust)
            files = ["--trust", str(trust), "--key", str(key)]
            common = ["--nats", server.url, *files, *TIMINGS]
            runs: dict[str, subprocess.CompletedProcess[bytes]] = {}

            async def run(name: str, *args: str) -> None:
                runs[name] = await _cli(*args)

            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    run, "good", "--agent", good.id, *common,
                    "--junit", str(tmp_path / "good.xml"), "--json", str(tmp_path / "good.json"),
                )  # fmt: skip
                tg.start_soon(
                    run, "secured", "--agent", guarded.id, "--nats", secured.url, *files, *TIMINGS,
                    "--nkey-seed", str(key), "--json", str(tmp_path / "secured.json"),
                )  # fmt: skip
                subset = ["--check", "award.ack", "--check", "result.attested", "--check", "cancel.stops"]
                tg.start_soon(run, "ours", "--agent", ours.id, *common, *subset)
                tg.start_soon(
                    run, "broken", "--agent", broken.id, *common, "--check", "cancel.stops",
                    "--check", "award.ack", "--json", str(tmp_path / "broken.json"),
                )  # fmt: skip
                tg.start_soon(run, "unknown_check", "--agent", good.id, *common, "--check", "no.such")
                stranger = pki.agent("not-in-the-file").id
                tg.start_soon(run, "untrusted_agent", "--agent", stranger, *common)
                tg.start_soon(run, "missing", "--agent", good.id)
                closed = f"nats://127.0.0.1:{free_port()}"
                tg.start_soon(run, "no_server", "--agent", good.id, "--nats", closed, *files, *TIMINGS)
    finally:
        for s in (server, secured):
            await s.astop()
            await s.acleanup()

    good_run = runs["good"]
    assert good_run.returncode == 0, good_run.stdout.decode() + good_run.stderr.decode()
    out = good_run.stdout.decode()
    assert "advertise.valid" in out and "frames.signed" in out and "FAILED" not in out
    suite = ET.parse(tmp_path / "good.xml").getroot().find("testsuite")
    assert suite is not None
    assert suite.get("tests") == str(len(CHECK_IDS)) and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == list(CHECK_IDS)
    report = json.loads((tmp_path / "good.json").read_text())
    assert report["ok"] is True and report["agent"] == good.id
    assert report["counts"] == {"passed": len(CHECK_IDS), "failed": 0, "not_applicable": 0}

    assert runs["ours"].returncode == 0, runs["ours"].stdout.decode()

    secured_run = runs["secured"]
    assert secured_run.returncode == 0, secured_run.stdout.decode() + secured_run.stderr.decode()
    checks = {c["id"]: c for c in json.loads((tmp_path / "secured.json").read_text())["checks"]}
    assert all(c["status"] == "passed" for c in checks.values())
    assert "subscribe permission denied" in checks["refuse.unknown_key"]["detail"]

    broken_run = runs["broken"]
    assert broken_run.returncode == 1, broken_run.stdout.decode() + broken_run.stderr.decode()
    assert "FAILED" in broken_run.stdout.decode()
    checks = {c["id"]: c for c in json.loads((tmp_path / "broken.json").read_text())["checks"]}
    assert set(checks) == {"award.ack", "cancel.stops"}
    assert checks["award.ack"]["status"] == "passed"
    assert checks["cancel.stops"]["status"] == "failed"
    assert checks["cancel.stops"]["spec"] == ["PROTOCOL.md §3.13", "PROTOCOL.md §5.6"]
    assert checks["cancel.stops"]["frames"][0]["message"]["type"] == "result"

    for name in ("unknown_check", "untrusted_agent", "missing", "no_server"):
        assert runs[name].returncode == 2, (name, runs[name].stdout.decode(), runs[name].stderr.decode())
    assert b"no.such" in runs["unknown_check"].stderr
    assert b"no valid certificate" in runs["untrusted_agent"].stderr
