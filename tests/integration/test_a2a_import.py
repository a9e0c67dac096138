"""A4: what `accord card --import` writes, `accord up` runs. An A2A agent (the a2a-sdk's own server, on
loopback) is imported from its Agent Card into a mesh file; the mesh runs it as an agent and a task put to the
market is answered by the A2A agent."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import anyio
import pytest
from a2a.compat.v0_3 import types as a2a_v03
from a2a.helpers.proto_helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes.jsonrpc_routes import create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import AgentCapabilities, AgentCard
from starlette.applications import Starlette
from typer.testing import CliRunner

from accord.cli import app
from accord.httpapi import serve_http
from accord.mesh.config import A2ABackendConfig, load_mesh
from accord.mesh.discovery import await_candidates
from accord.mesh.run import run_mesh
from accord.runtime.requester import Requester
from tests.support.runtime_kit import spec

pytestmark = pytest.mark.integration


class Echo(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        await event_queue.enqueue_event(new_text_message("echo: " + context.get_user_input().splitlines()[-1]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        return None


def _a2a_app() -> Starlette:
    card = AgentCard(
        name="echo",
        description="echo",
        version="1",
        capabilities=AgentCapabilities(),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
    )
    handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(), agent_card=card)
    return Starlette(routes=create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True))


def _card(url: str) -> dict[str, object]:
    return a2a_v03.AgentCard(
        name="Echo Agent",
        description="Says back what it is told.",
        url=url,
        version="1.0.0",
        capabilities=a2a_v03.AgentCapabilities(),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[a2a_v03.AgentSkill(id="echo", name="Echo", description="d", tags=["text"])],
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.mark.asyncio
async def test_an_imported_a2a_card_runs_as_a_mesh_agent(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        base = await tg.start(functools.partial(serve_http, _a2a_app(), port=0))
        a2a_url = base.removesuffix("/v1") + "/"
        (tmp_path / "card.json").write_text(json.dumps(_card(a2a_url)), encoding="utf-8")
        imported = CliRunner().invoke(app, ["card", "--import", str(tmp_path / "card.json"), "--tier", "edge"])
        assert imported.exit_code == 0, imported.output
        (tmp_path / "mesh.toml").write_text(imported.stdout, encoding="utf-8")
        config = load_mesh(tmp_path / "mesh.toml")  # refused before: kind 'a2a', field 'models'
        assert isinstance(config.agents[0].backend, A2ABackendConfig)
        async with (
            run_mesh(config) as mesh,
            mesh.connect(mesh.requester_identity(), name="asker") as bus,
            anyio.create_task_group() as inner,
        ):
            requester = Requester(mesh.requester_identity(), bus=bus, trust=mesh.trust, rng=random.Random(4))
            await inner.start(requester.run)
            await await_candidates(requester, spec("ping"), timeout_ms=10_000)
            outcome = await requester.submit(spec("hello a2a", deadline_ms=20_000))
            inner.cancel_scope.cancel()
        assert outcome.answer == "echo: hello a2a"
        assert outcome.attestation.statement.backend == "a2a"
        tg.cancel_scope.cancel()
