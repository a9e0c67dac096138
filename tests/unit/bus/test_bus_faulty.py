"""FaultyBus: seeded, counted, reproducible faults over MemoryBus (no sockets)."""

from __future__ import annotations

import anyio
import pytest

from accord.bus import (
    BusMessage,
    BusTimeoutError,
    FaultPlan,
    FaultRates,
    FaultyBus,
    MemoryBroker,
    MemoryBus,
)
from accord.bus.faulty import SRC_HEADER

N = 300


def _pair(plan: FaultPlan, *names: str) -> list[FaultyBus]:
    broker = MemoryBroker(seed=0)
    return [FaultyBus(MemoryBus(broker), name, plan) for name in names]


async def _drain(sub: object, idle_ms: int = 200) -> list[BusMessage]:
    out: list[BusMessage] = []
    while True:
        try:
            out.append(await sub.next(timeout_ms=idle_ms))  # type: ignore[attr-defined]
        except BusTimeoutError:
            return out


async def _run(seed: int) -> tuple[list[object], list[int], FaultPlan]:
    rates = FaultRates(drop=0.1, duplicate=0.1, reorder=0.1, delay=0.1, delay_ms=(0, 2), reorder_hold_ms=20)
    plan = FaultPlan(seed, rates)
    a, b = _pair(plan, "a", "b")
    sub = await b.subscribe("x", max_pending=N * 2)
    for i in range(N):
        await a.publish("x", b"%d" % i, headers={"Seq": str(i)})
    got = await _drain(sub)
    assert all(m.headers is not None and SRC_HEADER not in m.headers for m in got), "the source stamp is removed"
    assert all(m.headers is not None and m.headers["Seq"] == m.data.decode() for m in got), "headers pass through"
    await a.close()
    await b.close()
    return list(plan.log), [int(m.data) for m in got], plan


@pytest.mark.asyncio
async def test_same_seed_same_schedule_and_every_fault_counted() -> None:
    log1, got1, plan = await _run(seed=7)
    log2, got2, _ = await _run(seed=7)
    assert log1 == log2
    assert got1 == got2
    c = plan.counts
    assert all(c[k] > 0 for k in ("drop", "duplicate", "reorder", "delay")), c
    assert len(got1) == N - c["drop"] + c["duplicate"]
    assert set(got1) == set(range(N)) - {e.n for e in plan.log if e.kind == "drop"}  # type: ignore[attr-defined]
    assert got1 != sorted(got1), "reordering shows"
    log3, _, _ = await _run(seed=8)
    assert log3 != log1


@pytest.mark.asyncio
async def test_reorder_swaps_neighbours_and_duplicate_doubles() -> None:
    plan = FaultPlan(1, FaultRates(reorder=1.0))
    a, b = _pair(plan, "a", "b")
    sub = await b.subscribe("x")
    for i in range(6):
        await a.publish("x", b"%d" % i)
    assert [int(m.data) for m in await _drain(sub)] == [1, 0, 3, 2, 5, 4]

    plan2 = FaultPlan(1, FaultRates(duplicate=1.0))
    c, d = _pair(plan2, "c", "d")
    sub2 = await d.subscribe("y")
    for i in range(3):
        await c.publish("y", b"%d" % i)
    assert [int(m.data) for m in await _drain(sub2)] == [0, 0, 1, 1, 2, 2]
    assert plan2.counts["duplicate"] == 3


@pytest.mark.asyncio
async def test_held_message_is_released_when_nothing_overtakes_it() -> None:
    plan = FaultPlan(1, FaultRates(reorder=1.0, reorder_hold_ms=10))
    a, b = _pair(plan, "a", "b")
    sub = await b.subscribe("x")
    await a.publish("x", b"only")
    assert (await sub.next(timeout_ms=1000)).data == b"only"


@pytest.mark.asyncio
async def test_partition_and_heal_between_named_endpoints() -> None:
    plan = FaultPlan(3)
    a, b, c = _pair(plan, "a", "b", "c")
    sub_b = await b.subscribe("x")
    sub_c = await c.subscribe("x")
    plan.partition("a", "b")
    await a.publish("x", b"cut")
    assert await _drain(sub_b) == []
    assert [m.data for m in await _drain(sub_c)] == [b"cut"]
    assert plan.counts["partition"] == 1
    plan.heal()
    await a.publish("x", b"healed")
    assert [m.data for m in await _drain(sub_b)] == [b"healed"]
    assert [m.data for m in await _drain(sub_c)] == [b"healed"]

    plan.isolate("c")
    await b.publish("x", b"to all")
    assert await _drain(sub_c) == []
    plan.heal()
    plan.split([["a"], ["b", "c"]])
    assert plan.is_partitioned("a", "c") and not plan.is_partitioned("b", "c")
    assert plan.counts_for("c")["partition"] == 1


@pytest.mark.asyncio
async def test_partition_cuts_requests_both_ways() -> None:
    plan = FaultPlan(4)
    a, b = _pair(plan, "a", "b")
    sub = await b.subscribe("svc")

    async def serve() -> None:
        async for m in sub:
            assert m.reply is not None
            if m.data == b"4":
                plan.partition("a", "b")  # the request got through; the answer is cut
            await b.publish(m.reply, b"ok:" + m.data)

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        assert (await a.request("svc", b"1", timeout_ms=1000)).data == b"ok:1"
        plan.partition("a", "b")
        with pytest.raises(BusTimeoutError):
            await a.request("svc", b"2", timeout_ms=100)
        plan.heal()
        assert (await a.request("svc", b"3", timeout_ms=1000)).data == b"ok:3"
        with pytest.raises(BusTimeoutError):
            await a.request("svc", b"4", timeout_ms=100)
        assert [(e.kind, e.src, e.dst, e.subject) for e in plan.log][-1] == ("partition", "b", "a", "_reply")
        tg.cancel_scope.cancel()


def test_rates_are_validated() -> None:
    with pytest.raises(ValueError):
        FaultRates(drop=1.5)
    with pytest.raises(ValueError):
        FaultyBus(MemoryBus(), "", FaultPlan(0))
