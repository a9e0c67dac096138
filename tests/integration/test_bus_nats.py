"""NatsBus behaviour that only a real server shows: fail fast while disconnected, bounded reconnect buffer,
resubscription after a restart, giving up after the configured attempts, connect errors, the server runner."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from accord.bus import BusClosedError, BusMessage, BusTimeoutError, ConnectError, DirectBus, DisconnectedError
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer, ServerError, free_port, live_servers


@pytest.mark.integration
@pytest.mark.asyncio
async def test_fails_fast_while_disconnected_and_recovers_with_subscriptions() -> None:
    server = await NatsServer(name="accord-restart").astart()
    try:
        async with (
            NatsBus(server.url, reconnect_wait_ms=50) as strict,
            NatsBus(server.url, reconnect_wait_ms=50, reconnect_buffer_bytes=1024) as buffered,
            NatsBus(server.url, reconnect_wait_ms=50) as rx,
        ):
            sub = await rx.subscribe("r.x")
            await server.astop()
            with anyio.fail_after(5):
                while strict.is_connected or buffered.is_connected:  # noqa: ASYNC110 - no "disconnected" event
                    await anyio.sleep(0.01)
            with pytest.raises(DisconnectedError) as info:
                await strict.publish("r.x", b"x")
            assert info.value.reason == "disconnected"
            with pytest.raises(DisconnectedError):
                await strict.request("r.x", b"x", timeout_ms=1000)
            with pytest.raises(DisconnectedError):
                await strict.flush()
            await buffered.publish("r.x", b"small")  # fits the bounded reconnect buffer
            with pytest.raises(DisconnectedError):
                await buffered.publish("r.x", b"x" * 2048)

            await server.astart()
            await strict.wait_connected(timeout_ms=10_000)
            await rx.wait_connected(timeout_ms=10_000)
            await rx.flush()  # the resubscription has reached the server
            await strict.publish("r.x", b"after restart")
            await strict.flush()
            got = []
            with anyio.fail_after(5):
                while b"after restart" not in got:
                    got.append((await sub.next()).data)
            assert strict.stats.reconnects == 1 and strict.stats.disconnects >= 1
            assert strict.stats.last_recovery_ms > 0
    finally:
        await server.acleanup()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_gives_up_after_max_reconnect_attempts_and_ends_subscriptions() -> None:
    server = await NatsServer(name="accord-giveup", jetstream=False).astart()
    try:
        bus = await NatsBus(server.url, reconnect_wait_ms=20, max_reconnect_attempts=2).connect()
        sub = await bus.subscribe("g.x")
        ended = anyio.Event()

        async def consume() -> None:
            async for _ in sub:
                pass
            ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await server.akill()
            with anyio.fail_after(10):
                await ended.wait()
        with pytest.raises(BusClosedError):
            await bus.publish("g.x", b"x")
        await bus.close()
    finally:
        await server.acleanup()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_connect_to_nothing_is_a_typed_error() -> None:
    with pytest.raises(ConnectError) as info:
        await NatsBus(f"nats://127.0.0.1:{free_port()}", connect_timeout_ms=200, connect_attempts=1).connect()
    assert info.value.reason == "connect_failed"
    bus = NatsBus("nats://127.0.0.1:1")
    with pytest.raises(BusClosedError):
        await bus.publish("x", b"not connected yet")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_subscription_next_timeout_and_stats(nats_server: NatsServer) -> None:
    async with NatsBus(nats_server.url, name="stats") as bus:
        sub = await bus.subscribe("s.stats")
        with pytest.raises(BusTimeoutError):
            await sub.next(timeout_ms=20)
        for _ in range(3):
            await bus.publish("s.stats", b"x")
        for _ in range(3):
            await sub.next(timeout_ms=2000)
        assert (bus.stats.published, bus.stats.delivered, bus.stats.dropped) == (3, 3, 0)


def test_server_runner_restarts_on_the_same_port_and_reports_bad_config() -> None:
    server = NatsServer(name="accord-runner", jetstream=False)
    with server:
        port, pid = server.port, server.pid
        assert server.is_running and server.varz()["server_name"] == "accord-runner"
        server.restart()
        assert server.port == port and server.pid != pid and server.is_running
        config = server.config()
    assert not server.is_running and not server.dir.exists()
    assert config["host"] == "127.0.0.1"
    js = NatsServer().config()["jetstream"]
    assert js["sync_interval"] == "always"
    broken = NatsServer(extra={"no_such_option_xyz": {"a": [1, 2]}}, jetstream=False)
    with pytest.raises(ServerError):
        broken.start(timeout_s=5)
    broken.cleanup()
    assert all(s not in live_servers() for s in (server, broken))


@pytest.mark.integration
@pytest.mark.asyncio
async def test_publishes_of_one_tick_go_out_in_one_write_in_order(nats_server: NatsServer) -> None:
    """A plain publish only queues its PUB: everything published in one loop tick is written once, in the
    order published, with no flush asked for; a publish with headers or a reply keeps its place in that order."""
    async with NatsBus(nats_server.url) as tx, NatsBus(nats_server.url) as rx:
        subs = [await rx.subscribe(f"batch.{i}", max_pending=10_000) for i in range(3)]
        nc = tx._nc
        assert nc is not None and nc._transport is not None
        writes: list[int] = []
        real = nc._transport.writelines

        def counting(lines: list[bytes]) -> None:
            writes.append(len(lines))
            real(lines)

        nc._transport.writelines = counting  # type: ignore[method-assign]
        for n in range(30):  # a multicast of 30 messages to three subjects, no yield in between
            await tx.publish(f"batch.{n % 3}", b"%d" % n)
        assert writes == [], "nothing is written before the tick ends"
        await anyio.lowlevel.checkpoint()
        assert writes == [30], "one write for the whole tick"
        await tx.publish("batch.0", b"headers", headers={"k": "v"})  # nats-py's path, same buffer, same order
        for n in range(30, 2_030):  # more than a tick's worth, with the loop running in between
            await tx.publish(f"batch.{n % 3}", b"%d" % n)
            if n % 97 == 0:
                await anyio.lowlevel.checkpoint()
        got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
        with anyio.fail_after(10):  # never flushed explicitly: the scheduled writes carry everything
            for i, sub in enumerate(subs):
                while len(got[i]) < len(range(i, 2_030, 3)) + (i == 0):
                    got[i].append((await sub.next()).data)
        for i in range(3):
            numbers = [int(d) for d in got[i] if d != b"headers"]
            assert numbers == list(range(i, 2_030, 3)), i
        assert got[0].index(b"headers") == 10, "the header publish kept its place"
        assert tx.stats.published == 2_031


@pytest.mark.integration
@pytest.mark.asyncio
async def test_listen_hands_each_message_to_the_handler_in_the_read_loop(nats_server: NatsServer) -> None:
    """``NatsBus.listen`` (DirectBus): every message reaches the synchronous handler inside the connection's read
    loop, in order, with nothing queued (so ``max_pending`` drops nothing and nats-py's pending count stays at
    zero); what the handler publishes with ``publish_nowait`` goes out in order; a handler that raises loses only
    its message; after the unsubscribe nothing more arrives. The handoff replaces nats-py's per-subscription
    pending queue (an internal): a nats-py release that changes how its read loop queues messages fails here."""
    async with NatsBus(nats_server.url) as tx, NatsBus(nats_server.url) as rx:
        assert isinstance(rx, DirectBus) and isinstance(tx, DirectBus)
        got: list[bytes] = []
        callers: set[asyncio.Task[object] | None] = set()

        def handler(msg: BusMessage) -> None:
            callers.add(asyncio.current_task())
            if msg.data == b"boom":
                raise RuntimeError("a handler bug")
            got.append(msg.data)
            assert rx.publish_nowait("listen.echo", msg.data)

        echo = await tx.subscribe("listen.echo", max_pending=10_000)
        n = 2_000  # far more than max_pending: a queue of 16 would have dropped most of them
        with capture_logs() as logs:
            async with await rx.listen("listen.in", handler, max_pending=16) as sub:
                for i in range(n):
                    await tx.publish("listen.in", b"%d" % i)
                    if i == 10:
                        await tx.publish("listen.in", b"boom")
                await tx.flush()
                with anyio.fail_after(10):
                    while len(got) < n:  # noqa: ASYNC110 - the handler has no event to wait on
                        await anyio.sleep(0.01)
                assert sub.pending == 0 and rx.stats.dropped == 0
                nc = rx._nc
                assert nc is not None
                assert callers == {nc._reading_task}, "every message was handled in nats-py's read loop"
                assert sum(s._pending_size for s in nc._subs.values()) == 0, "nothing counted as pending"
            await tx.publish("listen.in", b"after")
            await tx.flush()
            await rx.flush()
        assert got == [b"%d" % i for i in range(n)], "in order, the failed one left out"
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["bus.handler_failed"]
        echoed = []
        with anyio.fail_after(10):
            while len(echoed) < n:
                echoed.append((await echo.next()).data)
        assert echoed == got
        assert rx.is_connected
        rx_closed = NatsBus(nats_server.url)
        assert not rx_closed.publish_nowait("listen.echo", b"x"), "not connected: publish asynchronously"


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_socket_that_is_not_drained_sends_publishers_back_to_waiting(nats_server: NatsServer) -> None:
    """The one-write-per-tick path reads how much the socket has not taken (nats-py's ``_transport._io_writer``,
    an internal): while that is over ``pending_bytes`` a plain publish is not queued at once (``publish_nowait``
    says no) and ``publish`` waits for the socket. A nats-py release that moves the writer makes this fail
    instead of silently dropping the backpressure."""
    async with NatsBus(nats_server.url) as tx, NatsBus(nats_server.url) as rx:
        sub = await rx.subscribe("backlog.x")
        nc = tx._nc
        assert nc is not None and nc._transport is not None
        socket_transport = nc._transport._io_writer.transport  # type: ignore[attr-defined]
        real = socket_transport.get_write_buffer_size
        socket_transport.get_write_buffer_size = lambda: 1 << 40
        try:
            assert not tx.publish_nowait("backlog.x", b"a"), "a full socket buffer is seen"
        finally:
            socket_transport.get_write_buffer_size = real
        assert tx.publish_nowait("backlog.x", b"b")
        await tx.publish("backlog.x", b"c")
        with anyio.fail_after(5):
            assert [(await sub.next()).data for _ in range(2)] == [b"b", b"c"]
