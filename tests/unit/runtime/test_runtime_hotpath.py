"""The request path's fast paths: a receive loop publishes its answers itself (Outbox.hold/flush), stale timers
are compacted away, and both keep the order and the guarantees of the slow paths."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from accord.bus.base import BusMessage
from accord.bus.memory import MemoryBroker, MemoryBus
from accord.protocol.messages import Withdraw
from accord.runtime.outbox import Outbox
from accord.runtime.timers import TimerService, now_ns
from accord.security import Identity, peek


class _RecordingBus(MemoryBus):
    """Records which task published each frame (the caller's or the outbox's own)."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.publishers: list[str] = []
        self.block: anyio.Event | None = None

    async def publish(self, subject: str, data: bytes, **kw: object) -> None:  # type: ignore[override]
        self.publishers.append(anyio.get_current_task().name or "")
        if self.block is not None:  # suspend mid-publish, as a full socket buffer would
            block, self.block = self.block, None
            await block.wait()
        await super().publish(subject, data)


def _withdraw(me: Identity, ts: int) -> Withdraw:
    return Withdraw(id=f"{ts:032x}", sender=me.id, ts=ts)


async def _collect(sub: object, n: int) -> list[int]:
    got: list[int] = []
    with anyio.fail_after(5):
        async for msg in sub:  # type: ignore[attr-defined]
            assert isinstance(msg, BusMessage)
            got.append(peek(msg.data, trust=None).message.ts)
            if len(got) == n:
                break
    return got


@pytest.mark.asyncio
async def test_a_held_outbox_is_flushed_by_its_caller_in_order_without_waking_its_task() -> None:
    broker = MemoryBroker()
    me = Identity.generate()
    bus = _RecordingBus(broker)
    sub = await broker.bus().subscribe("t.>")
    outbox = Outbox(bus, me)
    async with anyio.create_task_group() as tg:
        tg.start_soon(outbox.run, name="outbox-task")
        await anyio.wait_all_tasks_blocked()

        async def receive_loop() -> None:
            outbox.hold()
            outbox.send("t.a", _withdraw(me, 1))
            outbox.multicast(["t.a", "t.b"], _withdraw(me, 2))
            await outbox.flush()

        tg.start_soon(receive_loop, name="receive-loop")
        got = await _collect(sub, 3)
        assert got == [1, 2, 2]
        assert bus.publishers == ["receive-loop"] * 3  # published by the caller: no hop to the outbox task

        # Without a hold, a send wakes the outbox task, which publishes it.
        outbox.send("t.a", _withdraw(me, 3))
        assert await _collect(sub, 1) == [3]
        assert bus.publishers[-1] == "outbox-task"
        tg.cancel_scope.cancel()
    assert outbox.published == 4 and outbox.dropped == 0


@pytest.mark.asyncio
async def test_frames_queued_while_a_drainer_is_suspended_keep_their_order() -> None:
    broker = MemoryBroker()
    me = Identity.generate()
    bus = _RecordingBus(broker)
    sub = await broker.bus().subscribe("t.>")
    outbox = Outbox(bus, me)
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(outbox.run)

        async def receive_loop() -> None:
            outbox.hold()
            outbox.send("t.a", _withdraw(me, 1))
            outbox.send("t.a", _withdraw(me, 2))
            await outbox.flush()

        bus.block = release  # the first publish suspends: the receive loop is the drainer, mid-queue
        tg.start_soon(receive_loop)
        await anyio.wait_all_tasks_blocked()
        outbox.send("t.a", _withdraw(me, 3))  # from another task (a timer, say) while the drainer waits
        outbox.hold()  # a second receive loop: its flush finds a drainer at work and leaves the frame to it
        outbox.send("t.a", _withdraw(me, 4))
        await outbox.flush()
        release.set()
        assert await _collect(sub, 4) == [1, 2, 3, 4]
        await outbox.drain()
        tg.cancel_scope.cancel()
    assert outbox.published == 4


@pytest.mark.asyncio
async def test_frames_held_before_the_outbox_runs_go_out_when_it_starts() -> None:
    broker = MemoryBroker()
    me = Identity.generate()
    bus = _RecordingBus(broker)
    sub = await broker.bus().subscribe("t.>")
    outbox = Outbox(bus, me)
    outbox.hold()
    outbox.send("t.a", _withdraw(me, 7))
    await outbox.flush()  # not running yet: nothing published, nothing lost
    assert outbox.published == 0
    async with anyio.create_task_group() as tg:
        await tg.start(outbox.run)
        assert await _collect(sub, 1) == [7]
        tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_cancelled_timers_are_compacted_and_the_live_ones_still_fire_in_order() -> None:
    fired: list[int] = []
    timers: TimerService[int] = TimerService(fired.append)
    async with anyio.create_task_group() as tg:
        await tg.start(timers.run)
        far = now_ns() + 3_600_000_000_000  # an hour ahead: without compaction these would stay till then
        for key in range(2000):
            timers.set(key, far + key)
        for key in range(2000):
            if key % 100:
                timers.cancel(key)
        assert timers.pending() == 20
        assert len(timers._heap) <= 2 * 20 + 256 + 1  # bounded by the live timers, not by the cancelled ones
        soon = now_ns() + 20_000_000
        for key in (300, 100, 200):  # re-armed to fire soon: once each, at the new time, in deadline order
            timers.set(key, soon + key)
        await anyio.lowlevel.checkpoint()
        with anyio.fail_after(5):
            while len(fired) < 3:  # noqa: ASYNC110 - the service has no event of its own to wait on
                await anyio.sleep(0.005)
        assert fired == [100, 200, 300]
        assert timers.pending() == 17
        tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_a_callback_that_cancels_other_timers_while_firing_loses_none() -> None:
    timers: TimerService[int]
    fired: list[int] = []

    def fire(key: int) -> None:
        fired.append(key)
        if key == 0:  # cancel most of the others from inside the firing loop (triggers a compaction)
            for k in range(1, 600):
                if k % 50:
                    timers.cancel(k)

    timers = TimerService(fire)
    now = now_ns()
    for key in range(600):
        timers.set(key, now - 1_000_000 + key)  # all due already
    async with anyio.create_task_group() as tg:
        await tg.start(timers.run)
        with anyio.fail_after(5):
            while timers.pending():  # noqa: ASYNC110 - the service has no event of its own to wait on
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    assert fired == [0, *range(50, 600, 50)]
