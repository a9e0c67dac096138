"""A real nats-server killed (SIGKILL) and restarted under a steady JetStream publisher, ten times.

What must hold: NatsBus reconnects by itself; every message the stream acknowledged is in the stream afterwards
(0 acked lost, thanks to ``sync_interval: always``); retries of a publish whose ack was lost are absorbed by the
Msg-Id duplicate window (no message stored twice). The numbers are printed (fail-fast while disconnected is
checked deterministically in test_bus_nats.py).
"""

from __future__ import annotations

import time
from collections import Counter

import anyio
import pytest

from accord.bus import BusError
from accord.bus.nats import MSG_ID_HEADER, NatsBus
from accord.bus.server import NatsServer

KILLS = 10
PUBLISHERS = 4


@pytest.mark.integration
@pytest.mark.asyncio
async def test_sigkill_and_restart_under_load_loses_no_acked_message(capsys: pytest.CaptureFixture[str]) -> None:
    server = NatsServer(name="accord-faults")
    await server.astart()
    acked: dict[str, int] = {}
    errors: Counter[str] = Counter()
    duplicate_acks = 0
    recovery_ms: list[int] = []
    try:
        async with NatsBus(server.url, reconnect_wait_ms=50, connect_timeout_ms=1000) as bus:
            await bus.ensure_stream("FAULTS", ["faults.>"], duplicate_window_ms=300_000)
            stop = anyio.Event()
            progress = anyio.Event()

            async def publisher(name: str) -> None:
                nonlocal duplicate_acks
                i = 0
                while not stop.is_set():
                    msg_id = f"{name}-{i}"
                    while True:  # retry the same msg_id until the stream acknowledges it
                        try:
                            ack = await bus.publish_durable(
                                f"faults.{name}", b"payload %d" % i, msg_id=msg_id, timeout_ms=300
                            )
                            break
                        except BusError as exc:
                            errors[exc.reason] += 1
                            await anyio.sleep(0.01)
                    acked[msg_id] = ack.seq
                    duplicate_acks += ack.duplicate
                    progress.set()
                    i += 1
                    await anyio.sleep(0.001)

            async with anyio.create_task_group() as tg:
                for p in range(PUBLISHERS):
                    tg.start_soon(publisher, f"p{p}")
                for _ in range(KILLS):
                    await anyio.sleep(0.3)
                    await server.akill()
                    killed_at = time.monotonic()
                    await anyio.sleep(0.1)
                    await server.astart()
                    progress = anyio.Event()
                    with anyio.fail_after(20):
                        await progress.wait()  # an ack after the restart
                    recovery_ms.append(int((time.monotonic() - killed_at) * 1000))
                await anyio.sleep(0.2)
                stop.set()

            assert bus.stats.reconnects >= KILLS
            state = await bus.stream_state("FAULTS")
            consumer = await bus.durable_consumer("FAULTS", "audit")
            stored: Counter[str] = Counter()
            while True:
                batch = await consumer.fetch(500, timeout_ms=500)
                if not batch:
                    break
                for m in batch:
                    stored[(m.headers or {})[MSG_ID_HEADER]] += 1
                    await m.ack()
            stats = bus.stats
    finally:
        await server.acleanup()

    lost = [mid for mid in acked if mid not in stored]
    stored_twice = [mid for mid, n in stored.items() if n > 1]
    with capsys.disabled():
        print(
            f"\n[bus faults] kills={KILLS} publishers={PUBLISHERS} acked={len(acked)} lost={len(lost)} "
            f"stored={state.messages} "
            f"duplicate_acks={duplicate_acks} stored_twice={len(stored_twice)} "
            f"retry_errors={dict(errors)} reconnects={stats.reconnects}\n"
            f"[bus faults] recovery kill->next ack ms: min={min(recovery_ms)} "
            f"median={sorted(recovery_ms)[len(recovery_ms) // 2]} max={max(recovery_ms)}; "
            f"last disconnect->reconnect {stats.last_recovery_ms} ms"
        )
    assert len(acked) > 100
    assert lost == [], f"acknowledged messages lost: {lost[:10]}"
    assert stored_twice == [], f"stored more than once: {stored_twice[:10]}"
    assert state.messages == len(stored) >= len(acked)
