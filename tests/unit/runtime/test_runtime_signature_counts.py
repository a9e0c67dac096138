"""What one signed round costs each role in signatures (issue "speed", per-role CPU; spec 5.9).

A requester and three agents in one process over a MemoryBus that, like ``accord up``'s server, vouches for every
publisher (``authenticated_bus``). Every signature goes through the Ed25519 seam (:mod:`accord.security.ed25519`):
a signature is charged to the key that made it, a check to the endpoint whose receive path made it (the nearest
Agent or Requester on the stack). A loser spends one signature (its bid) and no check; the winner three (bid,
result, attestation: its Result comes within the ack delay, so no AwardAck is sent, spec 5.6) and one check (the
award); the requester three (call for proposals, award, the Cancel to the losers) and three checks (the winning
bid, result, attestation).
"""

from __future__ import annotations

import random
import sys
from collections import Counter

import anyio
import pytest

from accord.bus.memory import MemoryBroker
from accord.protocol.requester import RequesterConfig
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester
from accord.security import ed25519
from accord.security.testing import Pki
from tests.support.runtime_kit import make_profile, sim_backend, spec, wait_for, wait_registry

pytestmark = pytest.mark.asyncio


def _checking_endpoint() -> object | None:
    frame = sys._getframe(2)
    while frame is not None:
        me = frame.f_locals.get("self")
        if isinstance(me, Agent | Requester):
            return me
        frame = frame.f_back
    return None


async def test_a_round_costs_each_role_its_signatures_and_a_loser_one_signature_and_no_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pki, broker = Pki(random.Random(16)), MemoryBroker(seed=16)
    agents = [
        Agent(
            pki.agent(f"a{i}", region="local"),
            make_profile(f"a{i}", price_out_per_1k_micros=100 * (i + 1), ttl_ms=600_000),  # no heartbeat meanwhile
            {"sim-small": sim_backend(seed=i)},
            bus=broker.bus(),
            trust=pki.trust,
            rng=random.Random(i),
            authenticated_bus=True,
            service=False,
            stream_progress=False,
        )
        for i in range(3)
    ]
    requester = Requester(
        pki.agent("req"),
        bus=broker.bus(),
        trust=pki.trust,
        rng=random.Random(7),
        config=RequesterConfig(shortlist_k=3),
        authenticated_bus=True,
        service=False,
    )
    role_of_key = {e.identity.public_bytes: e.id for e in [requester, *agents]}
    signed: Counter[str] = Counter()
    checked: Counter[str] = Counter()
    sign, verify = ed25519.PrivateKey.sign, ed25519.PublicKey.verify

    def counting_sign(key: ed25519.PrivateKey, data: bytes) -> bytes:
        signed[role_of_key.get(key.public.raw, "other")] += 1
        return sign(key, data)

    def counting_verify(key: ed25519.PublicKey, sig: bytes, data: bytes) -> None:
        endpoint = _checking_endpoint()
        checked[endpoint.id if isinstance(endpoint, Agent | Requester) else "other"] += 1
        verify(key, sig, data)

    async with anyio.create_task_group() as tg:
        await tg.start(requester.run)
        for agent in agents:
            await tg.start(agent.run)
        await wait_registry(requester, agents)
        monkeypatch.setattr(ed25519.PrivateKey, "sign", counting_sign)
        monkeypatch.setattr(ed25519.PublicKey, "verify", counting_verify)
        outcome = await requester.submit(spec(max_price_micros=1_000_000))
        winner = outcome.agent_id
        losers = [a for a in agents if a.id != winner]
        await wait_for(lambda: all(a.stats.cancels == 1 for a in losers), what="the task-end Cancel")
        monkeypatch.undo()  # leaving the market (Withdraw) is not the round's
        for agent in agents:
            await agent.stop()
        tg.cancel_scope.cancel()

    # the winner's Result comes within its ack delay and acknowledges the award: no AwardAck to sign or check
    assert signed[requester.id] == 3 and checked[requester.id] == 3
    assert signed[winner] == 3 and checked[winner] == 1
    for loser in losers:
        assert (signed[loser.id], checked[loser.id]) == (1, 0), loser.profile.name
    assert signed["other"] == 0 and checked["other"] == 0
