"""Per-agent nkey users with the permission template: the server refuses an agent speaking as another one, and
NatsBus surfaces each refusal as a typed PermissionDeniedError; a permissioned agent still answers the NATS
service protocol ($SRV.PING, INFO, STATS)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from typing import Any

import anyio
import nkeys
import pytest

from accord.bus import BusTimeoutError, PermissionDeniedError, claim
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer, NkeyUser
from accord.protocol import subjects
from accord.protocol.messages import Tier
from accord.security import Identity, agent_permissions, inbox_prefix, kv_award_key
from accord.security.testing import Pki
from tests.support.runtime_kit import make_profile, sim_backend


def _user() -> tuple[str, str]:
    """(seed, public key) of a fresh NATS user nkey."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode()


SEED_A, A = _user()
SEED_B, B = _user()
SEED_ADMIN, ADMIN = _user()
SEED_STRANGER, _ = _user()
PKI = Pki(random.Random(11))
AGENT = Identity.generate()  # its agent id is its NATS user nkey (spec 11.2)
PKI.certify(AGENT, name="edge-1", tier=Tier.EDGE, region="local", residency=("eu",))


@pytest.fixture(scope="module")
def secured_server() -> Iterator[NatsServer]:
    users = [
        NkeyUser(A, agent_permissions(A, kv_buckets=["awards"])),
        NkeyUser(B, agent_permissions(B, tier=Tier.EDGE, residencies=["eu"], kv_buckets=["awards"])),
        NkeyUser(AGENT.id, agent_permissions(AGENT.id, tier=Tier.EDGE, residencies=["eu"])),
        NkeyUser(ADMIN),  # the operator: no restrictions (creates streams and buckets)
    ]
    server = NatsServer(name="accord-perms", users=users).start()
    try:
        yield server
    finally:
        server.cleanup()


def _agent(server: NatsServer, seed: str, agent: str) -> NatsBus:
    return NatsBus(server.url, nkey_seed=seed, inbox_prefix=inbox_prefix(agent), api_timeout_ms=500)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_agent_speaks_only_as_itself(secured_server: NatsServer) -> None:
    async with _agent(secured_server, SEED_A, A) as a, _agent(secured_server, SEED_B, B) as b:
        inbox_b = await b.subscribe(subjects.direct_filter(B))

        await a.publish(subjects.direct(B, A), b"bid from A")
        await a.flush()
        assert (await inbox_b.next(timeout_ms=2000)).data == b"bid from A"

        # A forges a frame as B (sender token B): the server drops it and says so; flush reports it.
        await a.publish(subjects.direct(B, B), b"forged")
        with pytest.raises(PermissionDeniedError) as info:
            await a.flush()
        assert info.value.reason == "permission_denied"
        assert (info.value.subject or "").lower() == subjects.direct(B, B).lower()  # nats-py lower-cases it
        await a.flush()  # reported once
        with pytest.raises(BusTimeoutError):
            await inbox_b.next(timeout_ms=200)
        assert a.stats.permission_denied == 1

        # A cannot listen to B's inbox, nor to calls for proposals outside B's class (B's own narrowing).
        with pytest.raises(PermissionDeniedError):
            await a.subscribe(subjects.direct_filter(B))
        with pytest.raises(PermissionDeniedError):
            await b.subscribe(subjects.announce_filter(Tier.CLOUD, None, None))
        await b.subscribe(subjects.announce_filter(Tier.EDGE, "eu", None))

        # Request/reply works through the per-agent inbox; a request on a forbidden subject is a typed refusal.
        # (One subscription per inbox: with allow_responses max 1, nats-server refuses the reply when the request
        # was delivered twice to the same connection.)
        await inbox_b.unsubscribe()
        service = await b.subscribe(subjects.direct_filter(B))

        async def serve() -> None:
            async for m in service:
                if m.reply is not None:
                    await b.publish(m.reply, b"ack:" + m.data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            reply = await a.request(subjects.direct(B, A), b"award", timeout_ms=2000)
            assert reply.data == b"ack:award"
            assert reply.subject.startswith(inbox_prefix(A) + ".")
            with pytest.raises(PermissionDeniedError):
                await a.request(subjects.advertise(Tier.CLOUD, "eu", B), b"x", timeout_ms=300)
            tg.cancel_scope.cancel()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_award_keys_are_confined_to_their_requester(secured_server: NatsServer) -> None:
    async with NatsBus(secured_server.url, nkey_seed=SEED_ADMIN) as admin:
        await admin.key_value("awards")
    task = "0123456789abcdef0123456789abcdef"
    async with _agent(secured_server, SEED_A, A) as a:
        kv = await a.key_value("awards")
        won = await claim(kv, kv_award_key(A, task), epoch=1, data=b"winner")
        assert won.epoch == 1
        with pytest.raises(PermissionDeniedError):
            await claim(kv, kv_award_key(B, task), epoch=1, data=b"hijack")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_unknown_key_cannot_connect(secured_server: NatsServer) -> None:
    with pytest.raises(PermissionDeniedError):
        await NatsBus(secured_server.url, nkey_seed=SEED_STRANGER, connect_attempts=1).connect()
    with pytest.raises(PermissionDeniedError):
        await NatsBus(secured_server.url, connect_attempts=1).connect()


async def _gather(bus: NatsBus, subject: str, *, window_s: float = 0.5) -> list[dict[str, Any]]:
    """Publish a service-protocol request and collect every answer that comes back within ``window_s``."""
    inbox = f"_INBOX.accord-perms.{random.getrandbits(64):x}"
    answers: list[dict[str, Any]] = []
    async with await bus.subscribe(inbox) as sub:
        await bus.publish(subject, b"", reply=inbox)
        with anyio.move_on_after(window_s):
            async for msg in sub:
                if msg.data:  # an empty message is a status (503: no responders), not an answer
                    answers.append(json.loads(msg.data))
    return answers


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_permissioned_agent_answers_the_nats_service_protocol(secured_server: NatsServer) -> None:
    from accord.runtime.agent import Agent  # the runtime shell on a connection restricted by the template

    profile = make_profile("edge-1", tier=Tier.EDGE, residency=("eu",))
    async with (
        NatsBus(secured_server.url, nkey_seed=AGENT.seed, inbox_prefix=inbox_prefix(AGENT.id)) as bus,
        NatsBus(secured_server.url, nkey_seed=SEED_ADMIN) as ops,
    ):
        agent = Agent(AGENT, profile, {"sim-small": sim_backend()}, bus=bus, trust=PKI.trust)
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            assert agent.service_id is not None  # $SRV.* subscriptions were allowed
            pings = await _gather(ops, "$SRV.PING")
            kind = await _gather(ops, "$SRV.PING.accord-agent")
            info = await ops.request(f"$SRV.INFO.accord-agent.{agent.service_id}", b"", timeout_ms=2000)
            stats = await ops.request(f"$SRV.STATS.accord-agent.{agent.service_id}", b"", timeout_ms=2000)
            await bus.flush()  # any refused publish (a reply) would be reported here
            await agent.stop()
        assert bus.stats.permission_denied == 0

    assert [(p["name"], p["metadata"]["agent_id"]) for p in pings] == [("accord-agent", AGENT.id)]
    assert [p["id"] for p in kind] == [agent.service_id]
    info_body = json.loads(info.data)
    assert info_body["type"] == "io.nats.micro.v1.info_response" and info_body["metadata"]["name"] == "edge-1"
    assert [e["name"] for e in info_body["endpoints"]] == ["cfp", "award"]
    stats_body = json.loads(stats.data)
    assert stats_body["type"] == "io.nats.micro.v1.stats_response" and stats_body["id"] == agent.service_id


def test_the_template_allows_only_the_service_protocol_verbs_under_srv() -> None:
    allowed = agent_permissions(A)["subscribe"]["allow"]
    srv = sorted(s for s in allowed if s.startswith("$SRV"))
    assert srv == ["$SRV.INFO", "$SRV.INFO.>", "$SRV.PING", "$SRV.PING.>", "$SRV.STATS", "$SRV.STATS.>"]
    assert not any(s.startswith("$SRV") for s in agent_permissions(A)["publish"]["allow"])
