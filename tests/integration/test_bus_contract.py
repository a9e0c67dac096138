"""One Bus contract, run unchanged against MemoryBus, NatsBus (real nats-server) and FaultyBus with no faults.

``connect()`` opens one more connection to the same broker or server, the way separate agents would.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
import pytest_asyncio

from accord.bus import (
    Bus,
    BusClosedError,
    BusMessage,
    BusTimeoutError,
    ConflictError,
    FaultPlan,
    FaultyBus,
    FencedError,
    InvalidSubjectError,
    MemoryBroker,
    MemoryBus,
    NoRespondersError,
    NotFoundError,
    claim,
    ensure_current,
    read_claim,
)
from accord.bus.nats import NatsBus

Connect = Callable[[], Awaitable[Bus]]

IMPLEMENTATIONS = [
    pytest.param("memory", id="memory"),
    pytest.param("faulty-memory", id="faulty-memory"),
    pytest.param("nats", id="nats", marks=pytest.mark.integration),
    pytest.param("faulty-nats", id="faulty-nats", marks=pytest.mark.integration),
]


@pytest_asyncio.fixture(params=IMPLEMENTATIONS)
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    kind: str = request.param
    opened: list[Bus] = []
    broker = MemoryBroker(seed=1)
    plan = FaultPlan(seed=1)  # no rates, no partitions: must behave exactly like the wrapped bus
    url = request.getfixturevalue("nats_server").url if "nats" in kind else ""

    async def _connect() -> Bus:
        inner: Bus = await NatsBus(url).connect() if "nats" in kind else MemoryBus(broker)
        bus: Bus = FaultyBus(inner, f"e{len(opened)}", plan) if kind.startswith("faulty") else inner
        opened.append(bus)
        return bus

    yield _connect
    for bus in opened:
        await bus.close()
    assert plan.counts.total() == 0


def _subject() -> str:
    return f"t.{uuid.uuid4().hex[:12]}"


async def _drain(sub: object, *, idle_ms: int = 150) -> list[BusMessage]:
    """Everything the subscription delivers until it stays quiet for ``idle_ms``."""
    out: list[BusMessage] = []
    while True:
        try:
            out.append(await sub.next(timeout_ms=idle_ms))  # type: ignore[attr-defined]
        except BusTimeoutError:
            return out


@pytest.mark.asyncio
async def test_publish_subscribe_passes_headers_and_reply(connect: Connect) -> None:
    a, b = await connect(), await connect()
    s = _subject()
    sub = await b.subscribe(s)
    await a.publish(s, b"one", headers={"Accord-Trace": "abc", "X-Two": "2"})
    await a.publish(s, b"two", reply=f"{s}.reply")
    await a.publish(s, b"")
    m1 = await sub.next(timeout_ms=2000)
    m2 = await sub.next(timeout_ms=2000)
    m3 = await sub.next(timeout_ms=2000)
    assert (m1.subject, m1.data, dict(m1.headers or {}), m1.reply) == (
        s,
        b"one",
        {"Accord-Trace": "abc", "X-Two": "2"},
        None,
    )
    assert (m2.data, m2.headers, m2.reply) == (b"two", None, f"{s}.reply")
    assert (m3.data, m3.headers) == (b"", None)
    assert a.stats.published >= 3
    assert b.stats.delivered >= 3


@pytest.mark.asyncio
async def test_wildcards_match_like_nats(connect: Connect) -> None:
    a, b = await connect(), await connect()
    s = _subject()
    star = await b.subscribe(f"{s}.*")
    tail = await b.subscribe(f"{s}.>")
    for sub in (f"{s}.x", f"{s}.x.y", s):
        await a.publish(sub, sub.encode())
    await a.flush()
    await b.flush()  # a round trip on the receiver: everything routed to it has been read
    assert [m.subject for m in await _drain(star)] == [f"{s}.x"]
    assert [m.subject for m in await _drain(tail)] == [f"{s}.x", f"{s}.x.y"]


@pytest.mark.asyncio
async def test_order_is_kept_per_publisher(connect: Connect) -> None:
    p1, p2, rx = await connect(), await connect(), await connect()
    s = _subject()
    sub = await rx.subscribe(s, max_pending=1000)
    n = 200

    async def pump(bus: Bus, name: bytes) -> None:
        for i in range(n):
            await bus.publish(s, name + b":%d" % i)
            if i % 50 == 0:
                await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump, p1, b"p1")
        tg.start_soon(pump, p2, b"p2")
    await p1.flush()
    await p2.flush()
    await rx.flush()
    got = await _drain(sub)
    seqs: dict[bytes, list[int]] = {b"p1": [], b"p2": []}
    for m in got:
        name, i = m.data.split(b":")
        seqs[name].append(int(i))
    assert seqs[b"p1"] == list(range(n))
    assert seqs[b"p2"] == list(range(n))


@pytest.mark.asyncio
async def test_queue_group_delivers_each_message_to_exactly_one_member(connect: Connect) -> None:
    pub = await connect()
    s = _subject()
    buses = [await connect() for _ in range(4)]
    members = [await bus.subscribe(s, queue="workers") for bus in buses[:3]]
    watcher = await buses[3].subscribe(s)
    n = 90
    for i in range(n):
        await pub.publish(s, b"%d" % i)
    await pub.flush()
    for bus in buses:
        await bus.flush()
    per_member = [[int(m.data) for m in await _drain(sub)] for sub in members]
    delivered = [i for got in per_member for i in got]
    assert sorted(delivered) == list(range(n)), "each message exactly once across the group"
    assert sum(1 for got in per_member if got) >= 2, f"load is spread: {[len(g) for g in per_member]}"
    assert [int(m.data) for m in await _drain(watcher)] == list(range(n)), "plain subscribers get every one"


@pytest.mark.asyncio
async def test_request_reply(connect: Connect) -> None:
    client, server = await connect(), await connect()
    s = _subject()
    sub = await server.subscribe(s)

    async def respond() -> None:
        async for m in sub:
            assert m.reply is not None
            await server.publish(m.reply, m.data.upper(), headers={"Echo": (m.headers or {}).get("Q", "-")})

    async with anyio.create_task_group() as tg:
        tg.start_soon(respond)
        for word in (b"ping", b"pong", b"x" * 1000):
            reply = await client.request(s, word, timeout_ms=2000, headers={"Q": word[:4].decode()})
            assert reply.data == word.upper()
            assert dict(reply.headers or {}) == {"Echo": word[:4].decode()}
        await sub.unsubscribe()
        tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_request_times_out_when_nobody_answers(connect: Connect) -> None:
    client, silent = await connect(), await connect()
    s = _subject()
    sub = await silent.subscribe(s)
    with pytest.raises(BusTimeoutError) as info:
        await client.request(s, b"?", timeout_ms=100)
    assert info.value.reason == "timeout"
    assert (await sub.next(timeout_ms=1000)).data == b"?"


@pytest.mark.asyncio
async def test_request_without_responders_fails_fast(connect: Connect) -> None:
    client = await connect()
    with pytest.raises(NoRespondersError) as info:
        await client.request(_subject(), b"?", timeout_ms=5000)
    assert info.value.reason == "no_responders"


@pytest.mark.asyncio
async def test_next_times_out(connect: Connect) -> None:
    bus = await connect()
    sub = await bus.subscribe(_subject())
    with pytest.raises(BusTimeoutError):
        await sub.next(timeout_ms=30)


@pytest.mark.asyncio
async def test_unsubscribe_ends_iteration_and_stops_delivery(connect: Connect) -> None:
    a, b = await connect(), await connect()
    s = _subject()
    sub = await b.subscribe(s)
    other = await b.subscribe(s)
    got: list[bytes] = []
    first = anyio.Event()

    async def consume() -> None:
        async for m in sub:
            got.append(m.data)
            first.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await a.publish(s, b"before")
        await a.flush()
        assert (await other.next(timeout_ms=2000)).data == b"before"
        with anyio.fail_after(5):
            await first.wait()
        await sub.unsubscribe()  # the consumer's `async for` ends
    await sub.unsubscribe()  # idempotent
    await a.publish(s, b"after")
    await a.flush()
    assert (await other.next(timeout_ms=2000)).data == b"after"
    assert got == [b"before"]
    with pytest.raises(BusClosedError):
        await sub.next(timeout_ms=10)


@pytest.mark.asyncio
async def test_close_ends_subscriptions_and_refuses_use(connect: Connect) -> None:
    bus = await connect()
    s = _subject()
    sub = await bus.subscribe(s)
    ended = anyio.Event()

    async def consume() -> None:
        async for _ in sub:
            pass
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(0.01)
        await bus.close()
        with anyio.fail_after(5):
            await ended.wait()
    await bus.close()  # idempotent
    with pytest.raises(BusClosedError):
        await bus.publish(s, b"x")
    with pytest.raises(BusClosedError):
        await bus.subscribe(s)


@pytest.mark.asyncio
async def test_context_manager_closes(connect: Connect) -> None:
    bus = await connect()
    async with bus:
        await bus.publish(_subject(), b"x")
    with pytest.raises(BusClosedError):
        await bus.publish(_subject(), b"x")


@pytest.mark.asyncio
async def test_bounded_buffer_drops_and_counts(connect: Connect) -> None:
    a, b = await connect(), await connect()
    s = _subject()
    sub = await b.subscribe(s, max_pending=5)
    dropped_before = b.stats.dropped
    for i in range(50):
        await a.publish(s, b"%d" % i)
    await a.flush()
    await b.flush()  # everything the server routed to b has been read by b's client
    assert sub.pending == 5
    assert sub.dropped == 45
    assert b.stats.dropped - dropped_before == 45
    assert [int(m.data) for m in await _drain(sub)] == [0, 1, 2, 3, 4]
    await a.publish(s, b"later")
    await a.flush()
    assert (await sub.next(timeout_ms=2000)).data == b"later", "a drained buffer takes messages again"


@pytest.mark.asyncio
async def test_invalid_subjects_are_refused(connect: Connect) -> None:
    bus = await connect()
    for bad in ("", "has space"):
        with pytest.raises(InvalidSubjectError):
            await bus.publish(bad, b"x")
    for bad in ("a..b", "a.>.b", "a.b*"):
        with pytest.raises(InvalidSubjectError):
            await bus.subscribe(bad)


@pytest.mark.asyncio
async def test_durable_publish_deduplicates_by_msg_id_and_consumer_acks(connect: Connect) -> None:
    bus = await connect()
    tag = uuid.uuid4().hex[:10]
    stream, subj = f"S{tag}", f"d.{tag}"
    await bus.ensure_stream(stream, [f"{subj}.>"], duplicate_window_ms=60_000)
    first = await bus.publish_durable(f"{subj}.a", b"one", msg_id="m-1", headers={"K": "v"})
    again = await bus.publish_durable(f"{subj}.a", b"one", msg_id="m-1")
    second = await bus.publish_durable(f"{subj}.b", b"two", msg_id="m-2")
    assert (first.stream, first.duplicate) == (stream, False)
    assert (again.seq, again.duplicate) == (first.seq, True)
    assert second.seq == first.seq + 1
    state = await bus.stream_state(stream)
    assert (state.messages, state.last_seq) == (2, second.seq)

    consumer = await bus.durable_consumer(stream, "worker", ack_wait_ms=30_000)
    got = await consumer.fetch(10, timeout_ms=1000)
    assert [(m.data, m.stream_seq, m.deliveries) for m in got] == [(b"one", 1, 1), (b"two", 2, 1)]
    assert dict(got[0].headers or {}).get("K") == "v"
    await got[0].ack()
    await got[1].nak()
    redelivered = await consumer.fetch(10, timeout_ms=2000)
    assert [(m.data, m.deliveries) for m in redelivered] == [(b"two", 2)]
    await redelivered[0].ack()
    assert await consumer.fetch(10, timeout_ms=100) == []
    await consumer.close()
    again_bound = await bus.durable_consumer(stream, "worker")
    assert await again_bound.fetch(10, timeout_ms=100) == [], "the durable position survives a re-bind"
    with pytest.raises(NotFoundError):
        await bus.publish_durable(f"nostream.{tag}", b"x", msg_id="z")
    with pytest.raises(NotFoundError):
        await bus.stream_state(f"NOPE{tag}")


@pytest.mark.asyncio
async def test_kv_compare_and_set(connect: Connect) -> None:
    bus = await connect()
    kv = await bus.key_value(f"kv{uuid.uuid4().hex[:10]}")
    assert await kv.get("a") is None
    r1 = await kv.create("a", b"1")
    with pytest.raises(ConflictError) as info:
        await kv.create("a", b"again")
    assert info.value.reason == "conflict"
    r2 = await kv.update("a", b"2", last_revision=r1)
    assert r2 > r1
    with pytest.raises(ConflictError):
        await kv.update("a", b"stale", last_revision=r1)
    entry = await kv.get("a")
    assert entry is not None and (entry.value, entry.revision) == (b"2", r2)
    assert await kv.put("a", b"3") > r2
    await kv.delete("a")
    assert await kv.get("a") is None
    assert await kv.create("a", b"fresh") > r2


@pytest.mark.asyncio
async def test_award_claims_are_fenced_by_epoch(connect: Connect) -> None:
    one, two = await connect(), await connect()
    bucket = f"awards{uuid.uuid4().hex[:8]}"
    kv1, kv2 = await one.key_value(bucket), await two.key_value(bucket)
    key = "task-1"
    c1 = await claim(kv1, key, epoch=1, data=b"winner-a")
    with pytest.raises(FencedError):
        await claim(kv2, key, epoch=1, data=b"winner-b")
    c2 = await claim(kv2, key, epoch=2, data=b"winner-b")
    assert c2.revision > c1.revision
    with pytest.raises(FencedError) as info:
        await claim(kv1, key, epoch=1, data=b"stale re-award")
    assert info.value.reason == "fenced"
    with pytest.raises(FencedError):
        await ensure_current(kv1, key, 1)
    current = await read_claim(kv1, key)
    assert current is not None and (current.epoch, current.data) == (2, b"winner-b")
    assert (await ensure_current(kv2, key, 2)).data == b"winner-b"

    # Racing claims for the same new epoch: exactly one wins.
    results = []

    async def race(kv: object, data: bytes) -> None:
        try:
            results.append(await claim(kv, key, epoch=3, data=data))  # type: ignore[arg-type]
        except FencedError:
            results.append(None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(race, kv1, b"a")
        tg.start_soon(race, kv2, b"b")
    assert sum(r is not None for r in results) == 1
