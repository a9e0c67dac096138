"""The task-end Cancel to a losing bidder (spec 5.9): peeked on a bus that authenticates publishers, verified on
any other; a Cancel that would stop running work is verified on every bus (docs/VERIFICATION.md).

The agent is driven by hand over a MemoryBus: a requester's Task goes to its inbox, it bids, then a Cancel comes
whose signature is another key's. Where the bus vouches for the publisher (the subject's last token, spec 11.6)
the loser frees its slot without a signature check; elsewhere the forged Cancel is refused and the slot held.
"""

from __future__ import annotations

import random
import time

import anyio
import pytest

from accord.bus import MemoryBroker
from accord.protocol import subjects
from accord.protocol.actions import new_message_id
from accord.protocol.contractor import JobState
from accord.protocol.messages import Award, Bid, Cancel, Message
from accord.runtime.agent import Agent
from accord.security import Identity, Opened, peek, seal
from accord.security.ed25519 import counts
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, BlockingBackend, make_agent, spec, wait_for

_ids = random.Random(16)


def _forged(message: Message, signer: Identity) -> bytes:
    """``message`` sealed by its sender, with another key's signature in place of the sender's."""
    return seal(message, signer)[:-64] + Identity.generate().sign(b"not the payload")


def _cancel(req: Identity, task_id: str) -> Cancel:
    return Cancel(
        id=new_message_id(_ids),
        sender=req.id,
        ts=time.time_ns(),
        task_id=task_id,
        attempt=None,
        reason="superseded",
    )


async def _bid_on_a_task(agent: Agent, req: Identity, broker: MemoryBroker) -> tuple[str, Opened]:
    """Send the agent a Task from ``req`` on its inbox; its Bid, as received."""
    bus = broker.bus()
    task = spec().to_task(sender=req.id, task_id=new_message_id(_ids), ts=time.time_ns())
    async with await bus.subscribe(subjects.direct_filter(req.id)) as inbox:
        await bus.publish(subjects.direct(agent.id, req.id), seal(task, req))
        with anyio.fail_after(10):
            reply = await inbox.next()
    bid = peek(reply.data, trust=None)
    assert isinstance(bid.message, Bid)
    assert agent.machine.job_state(task.task_id) is JobState.BIDDING and agent.machine.used_slots == 1
    return task.task_id, bid


@pytest.mark.asyncio
@pytest.mark.parametrize("authenticated", [True, False])
async def test_a_loser_peeks_the_task_end_cancel_only_on_an_authenticated_bus(authenticated: bool) -> None:
    pki, broker = Pki(random.Random(5)), MemoryBroker()
    req = pki.agent("req")
    agent = make_agent(pki, broker.bus(), AgentSpec("loser"), authenticated_bus=authenticated, service=False)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        task_id, _ = await _bid_on_a_task(agent, req, broker)
        checked = counts.checked
        await broker.bus().publish(subjects.direct(agent.id, req.id), _forged(_cancel(req, task_id), req))
        if authenticated:  # the bus vouched for the publisher: the slot is freed, no signature is checked
            await wait_for(lambda: agent.machine.used_slots == 0)
            assert counts.checked == checked
            assert agent.stats.cancels == 1 and agent.stats.refused_inbox == 0
        else:  # anyone could have published it: verified, refused, the slot still held
            await wait_for(lambda: agent.stats.refused_inbox == 1)
            assert agent.machine.used_slots == 1 and agent.stats.cancels == 0
            assert "bad_signature" in agent.stats.last_error
        await agent.stop()
        tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_a_cancel_that_would_stop_running_work_is_verified_even_on_an_authenticated_bus() -> None:
    pki, broker = Pki(random.Random(6)), MemoryBroker()
    req = pki.agent("req")
    backend = BlockingBackend()
    agent = make_agent(
        pki, broker.bus(), AgentSpec("winner", backend=backend), authenticated_bus=True, service=False
    )
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        task_id, opened = await _bid_on_a_task(agent, req, broker)
        bid = opened.message
        assert isinstance(bid, Bid)
        now = time.time_ns()
        award = Award(
            id=new_message_id(_ids),
            sender=req.id,
            ts=now,
            task_id=task_id,
            attempt=1,
            winner=agent.id,
            bid_id=bid.id,
            bid_digest=opened.digest,
            price_micros=bid.price_micros,
            ack_by_ns=now + 2_000_000_000,
            lease_until_ns=now + 4_000_000_000,
        )
        inbox = subjects.direct(agent.id, req.id)
        await broker.bus().publish(inbox, seal(award, req))
        await backend.started.wait()
        assert agent.machine.job_state(task_id) is JobState.RUNNING
        await broker.bus().publish(inbox, _forged(_cancel(req, task_id), req))
        await wait_for(lambda: agent.stats.refused_inbox == 1)
        assert agent.machine.job_state(task_id) is JobState.RUNNING and backend.cancelled == 0
        await broker.bus().publish(inbox, seal(_cancel(req, task_id), req))  # the genuine one stops the work
        await wait_for(lambda: backend.cancelled == 1)
        await agent.stop()
        tg.cancel_scope.cancel()
