"""`accord serve` driven by the official openai client (sync, async, streaming) against a real mesh: a real
nats-server started here, `accord up` and `accord serve` as a user runs them. The attestation in a response
verifies with `accord verify`; errors come in OpenAI's shape with fitting codes."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import openai
import pytest

from accord.bus.server import NatsServer
from tests.support.cli import ACCORD, cli_env, spawn, stop, wait_for_text

pytestmark = pytest.mark.integration

MESH = """
[[agents]]
name = "phone"
tier = "device"
region = "eu-west"
residency = ["eu"]
privacy = ["public", "confidential"]
backend = { kind = "simulated", model = "sim-small", tokens_per_s = 400, ttft_ms = 20, output_tokens = 24 }

[[agents]]
name = "laptop"
tier = "device"
region = "eu-central"
residency = ["eu"]
backend = { kind = "simulated", model = "sim-small", tokens_per_s = 400, ttft_ms = 20, seed = 7 }

[[agents]]
name = "liar"                     # advertises 10 ms but takes 4 s: its tasks miss short deadlines
tier = "edge"
region = "eu-west"
residency = ["eu"]
backend = { kind = "simulated", model = "sim-slow", ttft_ms = 4000, tokens_per_s = 1000 }
resources = { ttft_ms = 10, tokens_per_s = 5000 }

[strategies.pair]
kind = "ensemble"
k = 2
tiers = ["device"]
"""

KEYS = """
[[keys]]
name = "alice"
token_env = "ALICE_KEY"
budget_micros = 10000000

[[keys]]
name = "broke"
token_env = "BROKE_KEY"
budget_micros = 0
"""

ALICE, BROKE = "sk-alice-test-token", "sk-broke-test-token"
QUESTION = "What is the capital of France?"


@dataclass
class Served:
    dir: Path
    base_url: str
    trust: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    (tmp_path / "mesh.toml").write_text(MESH, encoding="utf-8")
    (tmp_path / "keys.toml").write_text(KEYS, encoding="utf-8")
    server = NatsServer(name="accord-httpapi", jetstream=False).start()
    env = {"ALICE_KEY": ALICE, "BROKE_KEY": BROKE}
    up = serve = None
    try:
        up = spawn(["up", "mesh.toml", "--nats", server.url], tmp_path, tmp_path / "up.log")
        wait_for_text(tmp_path / "up.log", "mesh up on")
        serve = spawn(
            ["serve", "--nats", server.url, "--port", "0", "--keys", "keys.toml", "--wait-ms", "500"],
            tmp_path,
            tmp_path / "serve.log",
            env=env,
        )
        text = wait_for_text(tmp_path / "serve.log", "serving the mesh at")
        found = re.search(r"serving the mesh at (http://\S+/v1)", text)
        assert found, text
        yield Served(tmp_path, found.group(1), tmp_path / ".accord" / "trust.json")
    finally:
        codes = {name: stop(p) for name, p in (("serve", serve), ("up", up)) if p is not None}
        server.cleanup()
    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in codes}
    assert codes == {"serve": 0, "up": 0}, (codes, logs)
    assert all("Traceback" not in text for text in logs.values()), logs


def _verify(served: Served, attestation: bytes, answer: str, name: str) -> subprocess.CompletedProcess[str]:
    (served.dir / f"{name}.att.json").write_bytes(attestation)
    (served.dir / f"{name}.answer.txt").write_text(answer, encoding="utf-8")
    argv = ["verify", f"{name}.att.json", "--trust", str(served.trust), "--output", f"{name}.answer.txt"]
    return subprocess.run(
        [*ACCORD, *argv], cwd=served.dir, env=cli_env(), capture_output=True, text=True, timeout=60
    )


EU = {"residency": "eu", "privacy": "confidential", "budget_micros": 20_000, "deadline_ms": 20_000}


@pytest.mark.asyncio
async def test_the_openai_client_talks_to_the_mesh(served: Served) -> None:
    client = openai.OpenAI(base_url=served.base_url, api_key=ALICE, max_retries=0)

    def sync_completion() -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": QUESTION}], extra_body=EU
        )

    # a plain completion, and its attestation: inline and by id, both verify against the answer
    response = await anyio.to_thread.run_sync(sync_completion)
    answer = response.choices[0].message.content
    assert answer and response.model == "sim-small"
    account = (response.model_extra or {})["accord"]
    assert account["agent_name"] == "phone"  # the only agent certified for confidential prompts
    assert account["tier"] == "device" and account["price_micros"] >= 0 and account["latency_ms"] > 0
    assert response.usage is not None and response.usage.completion_tokens > 0
    inline = _verify(served, json.dumps(account["attestation"]).encode(), answer, "inline")
    assert inline.returncode == 0, inline.stdout + inline.stderr
    assert "attestation verified" in inline.stdout and "phone" in inline.stdout
    async with httpx.AsyncClient(base_url=served.base_url.removesuffix("/v1")) as http:
        fetched = await http.get(account["attestation_url"])
    assert fetched.status_code == 200
    by_id = _verify(served, fetched.content, answer, "by_id")
    assert by_id.returncode == 0, by_id.stdout + by_id.stderr

    # the same through the async client, streamed: deltas from the winner's Progress frames, then the account
    aclient = openai.AsyncOpenAI(base_url=served.base_url, api_key=ALICE, max_retries=0)
    stream = await aclient.chat.completions.create(
        model="sim-small",
        messages=[{"role": "user", "content": "Name three primary colours."}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EU,
    )
    deltas: list[str] = []
    last = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        last = chunk
    assert last is not None and last.choices[0].finish_reason == "stop"
    streamed_account = (last.model_extra or {})["accord"]
    assert len(deltas) > 1  # streamed in pieces, not one block
    streamed = _verify(served, json.dumps(streamed_account["attestation"]).encode(), "".join(deltas), "streamed")
    assert streamed.returncode == 0, streamed.stdout + streamed.stderr

    # the models on offer: advertised ones, the strategies, the mesh file's named strategy
    models = {m.id for m in (await aclient.models.list()).data}
    assert {"sim-small", "sim-slow", "accord/route", "accord/cascade", "accord/ensemble", "accord/pair"} <= models

    # a strategy as a virtual model: two different device agents answer, the account lists both calls
    pair = await aclient.chat.completions.create(
        model="accord/pair", messages=[{"role": "user", "content": QUESTION}], extra_body={"budget_micros": 50_000}
    )
    pair_account = (pair.model_extra or {})["accord"]
    assert pair.model == "accord/pair" and pair_account["strategy"] == "ensemble"
    assert {c["agent_name"] for c in pair_account["calls"] if "agent_name" in c} == {"phone", "laptop"}
    await aclient.close()

    # errors: OpenAI's shape, fitting codes, no retries asked for
    async def error_of(
        key: str, model: str, messages: list[dict[str, str]], **extra: object
    ) -> openai.APIStatusError:
        bad = openai.AsyncOpenAI(base_url=served.base_url, api_key=key, max_retries=0)
        try:
            with pytest.raises(openai.APIStatusError) as caught:
                await bad.chat.completions.create(model=model, messages=messages, extra_body=extra)  # type: ignore[arg-type]
        finally:
            await bad.close()
        return caught.value

    ask = [{"role": "user", "content": QUESTION}]
    nobody = await error_of(ALICE, "sim-small", ask, residency="mars")
    assert (nobody.status_code, nobody.code) == (503, "no_eligible_agent"), nobody.body
    assert "residency mars" in str(nobody.body)
    broke = await error_of(BROKE, "sim-small", ask)
    assert (broke.status_code, broke.code) == (402, "budget_exceeded"), broke.body
    late = await error_of(ALICE, "sim-slow", ask, deadline_ms=1_500)  # its lease or the deadline runs out
    assert late.status_code == 504 and late.code in ("deadline_exceeded", "lease_expired"), late.body
    empty = await error_of(ALICE, "sim-small", [])
    assert (empty.status_code, empty.code) == (400, "invalid_request"), empty.body
    unknown = await error_of(ALICE, "gpt-17", ask)
    assert (unknown.status_code, unknown.code) == (404, "model_not_found"), unknown.body
    stranger = await error_of("sk-nobody", "sim-small", ask)
    assert (stranger.status_code, stranger.code) == (401, "invalid_api_key"), stranger.body
    assert isinstance(stranger, openai.AuthenticationError)
