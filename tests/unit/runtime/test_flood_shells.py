"""Bounded state in the shells under floods (issue 15, spec 11.9): the outbox, the timers, the requester's bid
frames and an agent's whole receive path each take a flood of hostile frames (``ACCORD_FLOOD_N``, 10^5; a fifth
of it through a whole receive path, whose every frame costs a peek, a digest and a machine step, some 100 us
under tracemalloc: the machines alone take all 10^5 in tests/unit/protocol/test_flood_machines.py), hold no more
than their bounds, count and log what they refuse, and their memory stays flat (tracemalloc peak under a bound
derived from the limit). One line per structure is printed.

The frames come from keys the receiver trusts, on a bus that authenticates publishers (frames are peeked, so
forging them costs the attacker nothing and the test little): the worst case for the receiver's state. A frame
from a key it does not trust is refused before its payload is decoded (tests/unit/security/test_flood_security.py).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import msgspec
import pytest
from structlog.testing import capture_logs

from accord.bus.base import BusMessage
from accord.bus.memory import MemoryBroker
from accord.protocol import subjects
from accord.protocol.codec import encode
from accord.protocol.digests import prompt_digest
from accord.protocol.events import Start
from accord.protocol.messages import ChatMessage, Constraints, Decline, Mechanism, Message, Role
from accord.protocol.requester import TaskSpec
from accord.runtime.agent import Agent
from accord.runtime.endpoint import EndpointLimits
from accord.runtime.outbox import Outbox
from accord.runtime.requester import Requester
from accord.runtime.timers import TimerService
from accord.security import PAYLOAD_TYPE_FRAME, Envelope, Identity
from accord.security.envelope import encode_envelope
from accord.security.testing import Pki
from tests.support.flood import FLOOD_N, KIB, MIB, Flood, bid, flood
from tests.support.runtime_kit import (
    AgentSpec,
    BlockingBackend,
    make_agent,
    make_profile,
    sim_backend,
    spec,
    wait_for,
)

S = 1_000_000_000
_PLACEHOLDER = b"f" * 32


def forged_frame(message: Message) -> bytes:
    """The frame of ``message`` with a signature of zeros: peeked, it is taken as it comes (nothing checks it)."""
    return encode_envelope(
        Envelope(
            v=1, payload_type=PAYLOAD_TYPE_FRAME, payload=encode(message), key_id=message.sender, sig=bytes(64)
        )
    )


def frames_by_id(message: Message) -> Callable[[int], bytes]:
    """Frames of ``message`` that differ only in their message ids (``message`` carries ``"f" * 32`` where they
    go): built once, varied by a byte replace, so the flood measures the receiver, not the attacker."""
    template = forged_frame(message)
    assert _PLACEHOLDER in template
    return lambda i: template.replace(_PLACEHOLDER, b"%032x" % i)


# --- the outbox and the timers ----------------------------------------------------------------------------------
def _decline(sender: str, i: int = 0) -> Decline:
    return Decline(id=f"{i:032x}", sender=sender, ts=0, task_id="0" * 32, reason="busy")


def test_outbox_drops_what_it_cannot_hold_and_logs_a_flood_sparsely(capsys: pytest.CaptureFixture[str]) -> None:
    """The bus is down (the outbox's task is not draining): sends beyond ``capacity`` are dropped and counted, and
    the log gets the 1st, 2nd, 4th... drop, not one line each."""
    pki = Pki(random.Random(1))
    me = pki.agent("sender")
    outbox = Outbox(MemoryBroker().bus(), me, capacity=EndpointLimits().outbox)
    decline = _decline(me.id)
    with capture_logs() as logs:
        result = flood("outbox", FLOOD_N, lambda i: outbox.send("x", decline), lambda: outbox.queued, capsys)
    assert result.held == min(FLOOD_N, outbox.capacity)
    assert outbox.dropped == max(0, FLOOD_N - outbox.capacity)
    assert 0 < len([e for e in logs if e["event"] == "outbox.full"]) <= outbox.dropped.bit_length()
    assert result.peak_bytes < outbox.capacity * 256


def test_timers_refuse_keys_past_their_capacity(capsys: pytest.CaptureFixture[str]) -> None:
    timers: TimerService[int] = TimerService(lambda key: None, capacity=10_000)
    with capture_logs() as logs:
        result = flood("timers, distinct keys", FLOOD_N, lambda i: timers.set(i, i), timers.pending, capsys)
    assert result.held == min(FLOOD_N, timers.capacity) and timers.heap_size == result.held
    assert timers.refused == max(0, FLOOD_N - timers.capacity)
    assert len([e for e in logs if e["event"] == "timers.full"]) <= timers.refused.bit_length()
    assert result.peak_bytes < timers.capacity * 512


def test_timers_rearmed_again_and_again_keep_a_bounded_heap(capsys: pytest.CaptureFixture[str]) -> None:
    """A heartbeat brought forward by every service PING re-arms one key: stale heap entries are compacted."""
    timers: TimerService[str] = TimerService(lambda key: None)
    result = flood(
        "timers, one key re-armed",
        FLOOD_N,
        lambda i: timers.set("hb", FLOOD_N - i),
        lambda: timers.heap_size,
        capsys,
    )
    assert timers.pending() == 1 and timers.heap_size <= 2 + 256
    assert result.peak_bytes < 64 * KIB


# --- an agent's receive path -------------------------------------------------------------------------------------
def _flooded_agent(pki: Pki) -> Agent:
    """An online agent whose model takes any prompt (a long context, quick), on a bus that authenticates
    publishers."""
    profile = make_profile("flooded", residency=("eu",))
    model = msgspec.structs.replace(profile.models[0], context_window=1_000_000)
    profile = msgspec.structs.replace(profile, models=(model,))
    identity = pki.agent("flooded", tier=profile.tier, region=profile.region, residency=("eu",))
    agent = Agent(
        identity,
        profile,
        {"sim-small": sim_backend()},
        bus=MemoryBroker().bus(),
        trust=pki.trust,
        rng=random.Random(1),
        authenticated_bus=True,
    )
    agent._apply(agent.machine.handle(Start(), now=agent.clock()))
    return agent


def _task_frames(agent: Agent, requester: Identity, prompt_chars: int) -> Callable[[int], BusMessage]:
    """Direct Tasks from ``requester`` to ``agent`` that differ in their ids (one prompt: its digest checks)."""
    now = agent.clock()
    messages = [ChatMessage(role=Role.USER, content="p" * prompt_chars)]
    task = TaskSpec(
        messages=messages,
        constraints=Constraints(deadline_ns=now + 7 * 24 * 3600 * S, max_price_micros=10**9),
        mechanism=Mechanism.DIRECT,
        bid_window_ms=0,
        max_output_tokens=16,
    ).to_task(sender=requester.id, task_id="f" * 32, ts=now)
    assert task.prompt_digest == prompt_digest(messages)
    frame = frames_by_id(task)
    subject = subjects.direct(agent.id, requester.id)
    return lambda i: BusMessage(subject, frame(i))


def test_d4_an_agent_flooded_with_5000_tasks_of_50kb_holds_bounded_state(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """D4 through the agent's receive path (frame, peek, prompt digest check, machine, outbox, timers): direct
    Tasks of 50 KB from one trusted requester hold at most its prompt quota; nothing else grows."""
    pki = Pki(random.Random(1))
    agent = _flooded_agent(pki)
    frames = _task_frames(agent, pki.agent("hostile"), 50_000)
    with capture_logs() as logs:
        result = flood(
            "agent shell, prompt bytes (D4: 5,000 Tasks of 50 KB)",
            5_000,
            lambda i: agent._receive(frames(i), broadcast=False),
            lambda: agent.machine.prompt_bytes_held,
            capsys,
        )
    agent.machine.check_invariants()
    cap = agent.profile.max_prompt_bytes_per_requester
    assert 0 < result.held <= cap and result.peak_bytes < cap + 8 * MIB
    assert agent.limited["requester_bytes"] == agent.stats.declines > 0
    assert agent._timers.pending() <= agent.machine.jobs_held + 1  # one per open offer, and the heartbeat
    assert len([e for e in logs if e["event"] == "limit.reached"]) <= agent.stats.declines.bit_length()


def test_an_agent_flooded_with_tasks_keeps_its_jobs_timers_and_outbox_bounded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The whole receive path, at a fifth of the flood (see the module docstring)."""
    pki = Pki(random.Random(1))
    agent = _flooded_agent(pki)
    frames = _task_frames(agent, pki.agent("hostile"), 1_024)
    n = max(1, FLOOD_N // 5)
    result = flood(
        "agent shell, jobs",
        n,
        lambda i: agent._receive(frames(i), broadcast=False),
        lambda: agent.machine.jobs_held,
        capsys,
    )
    agent.machine.check_invariants()
    outbox, timers = agent._outbox, agent._timers
    with capsys.disabled():
        print(Flood("agent shell, timers", n, result.peak_bytes, timers.pending()).line)
        print(Flood("agent shell, outbox", n, result.peak_bytes, outbox.queued).line)
    assert result.held <= agent.profile.max_jobs_per_requester
    assert timers.pending() <= result.held + 1 and timers.heap_size <= 2 * timers.pending() + 256
    assert outbox.queued <= outbox.capacity and outbox.queued + outbox.dropped == agent.stats.declines + 1
    assert result.peak_bytes < agent.profile.max_jobs_per_requester * 8 * KIB + outbox.capacity * 512


class _SlowTokenizer(BlockingBackend):
    """A backend whose tokenizer answers only when released: every Task it is asked to count waits, held."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = 0

    async def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        self.counting += 1
        await self.release.wait()
        return 10


@pytest.mark.asyncio
async def test_an_agent_counts_a_bounded_number_of_prompts_at_once() -> None:
    """Each prompt waiting for the model's tokenizer holds its Task: at most ``limits.token_counts`` wait, the
    Tasks beyond are refused (counted, logged) instead of piling up behind a slow tokenizer."""
    pki = Pki(random.Random(1))
    backend = _SlowTokenizer()
    limits = EndpointLimits(token_counts=16)
    bus = MemoryBroker().bus()
    agent = make_agent(pki, bus, AgentSpec("slow", backend=backend), authenticated_bus=True, limits=limits)
    frames = _task_frames(agent, pki.agent("hostile"), 256)  # no count is cached before one ends
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        for i in range(1_000):
            agent._receive(frames(i), broadcast=False)
        await wait_for(lambda: backend.counting == limits.token_counts, what="the counts to start")
        assert agent.limited["token_counts"] == 1_000 - limits.token_counts
        backend.release.set()
        await wait_for(lambda: agent._counting == 0, what="the counts to end")
        tg.cancel_scope.cancel()
    assert agent.stats.tasks == 1_000


# --- the requester's bid frames (D5) -----------------------------------------------------------------------------
@asynccontextmanager
async def _collecting(pki: Pki) -> AsyncIterator[tuple[Requester, str]]:
    """A requester with one task whose bid window stays open for a minute, and that task's id."""
    requester = Requester(
        pki.agent("requester"),
        bus=MemoryBroker().bus(),
        trust=pki.trust,
        rng=random.Random(2),
        authenticated_bus=True,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(requester.run)
        tg.start_soon(requester.submit, spec(deadline_ms=120_000, bid_window_ms=60_000))
        await wait_for(lambda: bool(requester._tasks), what="the task to start")
        yield requester, next(iter(requester._tasks))
        tg.cancel_scope.cancel()


def _bid_frames(requester: Requester, task_id: str, bidder: Identity, pad: int = 0) -> Callable[[int], BusMessage]:
    """Bids of ``bidder`` for the task, ``pad`` bytes larger than an honest one (an unknown field: msgspec skips
    it, the payload keeps it)."""
    payload = encode(bid(task_id, bidder.id, now=requester.clock(), region="eu-central"))
    if pad:
        fields = msgspec.msgpack.decode(payload)
        payload = msgspec.msgpack.encode({**fields, "padding": "x" * pad})
    template = encode_envelope(
        Envelope(v=1, payload_type=PAYLOAD_TYPE_FRAME, payload=payload, key_id=bidder.id, sig=bytes(64))
    )
    subject = subjects.direct(requester.id, bidder.id)
    return lambda i: BusMessage(subject, template.replace(_PLACEHOLDER, b"%032x" % i))


def _held_frames(requester: Requester, task_id: str) -> tuple[int, int]:
    bids = requester._tasks[task_id].bids
    return len(bids), sum(len(o.payload) for o in bids.values())


@pytest.mark.asyncio
async def test_d5_a_requester_keeps_no_frame_of_4000_bids_of_64kb_in_one_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """D5: 4,000 bids of 64 KB in one task used to cost +265 MB (every peeked frame kept). A bid over
    ``max_bid_bytes`` is now refused by the machine, and the shell keeps the frames of held bids only."""
    pki = Pki(random.Random(1))
    async with _collecting(pki) as (requester, task_id):
        feeds = [_bid_frames(requester, task_id, pki.agent(f"big-{k}"), pad=64 * 1024) for k in range(40)]
        result = flood(
            "requester bid frames (D5: 4,000 bids of 64 KB)",
            4_000,
            lambda i: requester._receive(feeds[i % 40](i)),
            lambda: _held_frames(requester, task_id)[0],
            capsys,
        )
    assert result.held == 0 and requester.limited["bid_bytes"] == 4_000
    assert result.peak_bytes < 2 * MIB


@pytest.mark.asyncio
@pytest.mark.parametrize("senders", [1, 2_000], ids=["one sender", "2,000 senders"])
async def test_a_requester_keeps_a_bounded_number_of_bid_frames_under_a_flood_of_bids(
    senders: int, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = Pki(random.Random(1))
    n = max(1, FLOOD_N // 5)
    async with _collecting(pki) as (requester, task_id):
        feeds = [_bid_frames(requester, task_id, pki.agent(f"bidder-{k}")) for k in range(senders)]
        result = flood(
            f"requester bid frames, {'one sender' if senders == 1 else f'{senders:,} senders'}",
            n,
            lambda i: requester._receive(feeds[i % senders](i)),
            lambda: _held_frames(requester, task_id)[0],
            capsys,
        )
        held_bytes = _held_frames(requester, task_id)[1]
    config = requester.config
    assert result.held == min(senders * config.max_bids_per_sender, config.max_bids, n)
    assert held_bytes <= result.held * config.max_bid_bytes
    assert sum(requester.limited.values()) == n - result.held
    assert result.peak_bytes < config.max_bids * 4 * KIB
