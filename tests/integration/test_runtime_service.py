"""Operability on a real nats-server: agents and requesters answer the NATS service protocol ($SRV.PING, INFO,
STATS), so standard NATS tooling lists them with their request and error counts."""

from __future__ import annotations

import json
import random

import anyio
import pytest
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

from accord.backends.base import BackendErrorReason
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.runtime.requester import Requester
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, make_agent, service_answers, spec, wait_registry
from tests.unit.runtime.test_runtime_shells import _FailingBackend


@pytest.mark.integration
@pytest.mark.asyncio
async def test_agents_and_requesters_answer_the_nats_service_protocol() -> None:
    server = await NatsServer(name="accord-service", jetstream=False).astart()
    pki = Pki(random.Random(21))
    try:
        async with (
            NatsBus(server.url, name="a-good") as good_bus,
            NatsBus(server.url, name="a-bad") as bad_bus,
            NatsBus(server.url, name="req") as req_bus,
            NatsBus(server.url, name="ops") as ops,
        ):
            good = make_agent(pki, good_bus, AgentSpec("good", price=500))
            bad = make_agent(
                pki, bad_bus, AgentSpec("bad", price=100, backend=_FailingBackend(BackendErrorReason.INTERNAL))
            )
            req = Requester(pki.agent("req"), bus=req_bus, trust=pki.trust, rng=random.Random(2))
            async with anyio.create_task_group() as tg:
                await tg.start(req.run)
                await tg.start(good.run)
                await tg.start(bad.run)
                await wait_registry(req, [good, bad])
                outcome = await req.submit(spec())
                assert outcome.agent_id == good.id and outcome.attempt == 2

                pings = await service_answers(ops, "$SRV.PING", expect=3)
                infos = await service_answers(ops, "$SRV.INFO.accord-agent", expect=2)
                stats = await service_answers(ops, "$SRV.STATS", expect=3)
                one = await ops.request(f"$SRV.STATS.accord-agent.{good.service_id}", b"", timeout_ms=2000)
                tg.cancel_scope.cancel()
            after = await service_answers(ops, "$SRV.PING", expect=0)
    finally:
        await server.acleanup()

    # PING: every agent and the requester, as standard tooling parses it
    parsed = [ServicePing.from_dict(p) for p in pings]
    assert sorted(p.name for p in parsed) == ["accord-agent", "accord-agent", "accord-requester"]
    assert {p.metadata["agent_id"] for p in parsed} == {good.id, bad.id, req.id}
    assert all(p["type"] == "io.nats.micro.v1.ping_response" for p in pings)

    # INFO on the kind subject: only agents, with their card and two endpoints
    info = {i.metadata["name"]: i for i in (ServiceInfo.from_dict(x) for x in infos)}
    assert sorted(info) == ["bad", "good"]
    assert info["good"].metadata["tier"] == "cloud" and info["good"].metadata["models"] == "sim-small"
    assert [e.name for e in info["good"].endpoints] == ["cfp", "award"]
    assert info["good"].endpoints[1].subject == f"accord.v1.dm.{good.id}.*"

    # STATS: request and error counts per endpoint
    by_id = {s.metadata["agent_id"]: s for s in (ServiceStats.from_dict(x) for x in stats)}
    assert set(by_id) == {good.id, bad.id, req.id}
    ep = {e.name: e for e in by_id[good.id].endpoints}
    assert ep["award"].num_requests == 1 and ep["award"].num_errors == 0
    assert ep["cfp"].num_requests >= 1 and ep["award"].data["results"] == 1
    bad_ep = {e.name: e for e in by_id[bad.id].endpoints}
    assert bad_ep["award"].num_requests == 1 and bad_ep["award"].num_errors == 1
    assert "backend_error" in (bad_ep["award"].last_error or "")
    submit = by_id[req.id].endpoints[0]
    assert (submit.name, submit.num_requests, submit.num_errors) == ("submit", 1, 0)
    assert submit.data["reawards"] == 1 and submit.data["completed"] == 1

    # one instance by its id
    single = ServiceStats.from_dict(json.loads(one.data))
    assert single.id == good.service_id and single.metadata["name"] == "good"

    # gone once the shells stopped
    assert after == []
