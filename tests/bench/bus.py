"""Benchmark: NatsBus against raw nats-py on the same nats-server, in one run.

    python -m tests.bench.bus [--messages 200000] [--requests 5000] [--inflight 64] [--repeats 3]

Measures, for raw nats-py and for NatsBus (same server, same payloads, runs alternated, median of repeats):
publish rate (publisher only), publish -> subscriber rate (end to end), request/reply rate with ``--inflight``
requests in flight, and request/reply RTT p50/p99 with one in flight. The ratio column is NatsBus / raw for
rates (goal >= 0.83, i.e. within 1.2x) and for latencies (goal <= 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from rich.console import Console
from rich.table import Table

from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from tests.bench.raw_rounds import interest_registered

T = TypeVar("T")
PAYLOAD = b"x" * 128
DEADLINE_S = 60  # a lost message fails the run with a count, never hangs it


@dataclass
class Sizes:
    messages: int = 200_000
    requests: int = 5_000
    inflight: int = 64
    rtt_samples: int = 3_000
    repeats: int = 3


async def _received(done: asyncio.Event, count: Callable[[], int], n: int) -> None:
    try:
        with anyio.fail_after(DEADLINE_S):
            await done.wait()
    except TimeoutError:
        raise TimeoutError(f"the subscriber received {count()} of {n} messages in {DEADLINE_S} s") from None


# --- raw nats-py -------------------------------------------------------------------------------------------------
async def raw_publish(url: str, n: int) -> float:
    nc = await nats.connect(url)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            await nc.publish("bench.pub", PAYLOAD)
        await nc.flush()
        return n / (time.perf_counter() - t0)
    finally:
        await nc.close()


async def raw_pubsub(url: str, n: int) -> float:
    pub, sub_nc = await nats.connect(url), await nats.connect(url)
    try:
        done = asyncio.Event()
        count = 0

        async def cb(msg: Msg) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        await sub_nc.subscribe("bench.ps", cb=cb, pending_msgs_limit=n + 1)
        await interest_registered(sub_nc)
        t0 = time.perf_counter()
        for _ in range(n):
            await pub.publish("bench.ps", PAYLOAD)
        await pub.flush()
        await _received(done, lambda: count, n)
        return n / (time.perf_counter() - t0)
    finally:
        await pub.close()
        await sub_nc.close()


async def _raw_responder(url: str) -> tuple[Client, Callable[[], Awaitable[None]]]:
    nc = await nats.connect(url)

    async def cb(msg: Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe("bench.rr", cb=cb)
    await interest_registered(nc)
    return nc, nc.close


async def raw_requests(url: str, n: int, inflight: int) -> float:
    _, stop = await _raw_responder(url)
    nc = await nats.connect(url)
    try:
        per = n // inflight

        async def worker() -> None:
            for _ in range(per):
                await nc.request("bench.rr", PAYLOAD, timeout=5)

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(inflight):
                tg.start_soon(worker)
        return per * inflight / (time.perf_counter() - t0)
    finally:
        await nc.close()
        await stop()


async def raw_rtt(url: str, n: int) -> list[float]:
    _, stop = await _raw_responder(url)
    nc = await nats.connect(url)
    try:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            await nc.request("bench.rr", PAYLOAD, timeout=5)
            out.append(time.perf_counter() - t0)
        return out
    finally:
        await nc.close()
        await stop()


# --- NatsBus -----------------------------------------------------------------------------------------------------
async def bus_publish(url: str, n: int) -> float:
    async with NatsBus(url) as bus:
        t0 = time.perf_counter()
        for _ in range(n):
            await bus.publish("bench.pub", PAYLOAD)
        await bus.flush(timeout_ms=30_000)
        return n / (time.perf_counter() - t0)


async def bus_pubsub(url: str, n: int) -> float:
    async with NatsBus(url) as pub, NatsBus(url) as rx:
        sub = await rx.subscribe("bench.ps", max_pending=n + 1)

        done = asyncio.Event()
        count = 0

        async def consume() -> None:
            nonlocal count
            async for _ in sub:
                count += 1
                if count == n:
                    done.set()
                    return

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for _ in range(n):
                await pub.publish("bench.ps", PAYLOAD)
            await pub.flush(timeout_ms=30_000)
            await _received(done, lambda: count, n)
        return n / (time.perf_counter() - t0)


async def _with_bus_responder(url: str, body: Callable[[NatsBus], Awaitable[T]]) -> T:
    async with NatsBus(url) as server, NatsBus(url) as client:
        sub = await server.subscribe("bench.rr", max_pending=100_000)

        async def serve() -> None:
            async for m in sub:
                await server.publish(m.reply, m.data)  # type: ignore[arg-type]

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            result = await body(client)
            tg.cancel_scope.cancel()
        return result


async def bus_requests(url: str, n: int, inflight: int) -> float:
    per = n // inflight

    async def body(client: NatsBus) -> float:
        async def worker() -> None:
            for _ in range(per):
                await client.request("bench.rr", PAYLOAD, timeout_ms=5000)

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(inflight):
                tg.start_soon(worker)
        return per * inflight / (time.perf_counter() - t0)

    return await _with_bus_responder(url, body)


async def bus_rtt(url: str, n: int) -> list[float]:
    async def body(client: NatsBus) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            await client.request("bench.rr", PAYLOAD, timeout_ms=5000)
            out.append(time.perf_counter() - t0)
        return out

    return await _with_bus_responder(url, body)


# --- driver ------------------------------------------------------------------------------------------------------
def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


@dataclass
class Row:
    metric: str
    raw: float
    ours: float
    higher_is_better: bool
    unit: str

    @property
    def ratio(self) -> float:
        return self.ours / self.raw if self.raw else float("nan")

    @property
    def ok(self) -> bool:
        return self.ratio >= 1 / 1.2 if self.higher_is_better else self.ratio <= 1.2


async def run(sizes: Sizes, url: str) -> list[Row]:
    results: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        results.setdefault(key, []).append(value)

    for _ in range(sizes.repeats):  # alternate raw and ours so drift hits both
        add("pub_raw", await raw_publish(url, sizes.messages))
        add("pub_ours", await bus_publish(url, sizes.messages))
        add("ps_raw", await raw_pubsub(url, sizes.messages // 2))
        add("ps_ours", await bus_pubsub(url, sizes.messages // 2))
        add("rr_raw", await raw_requests(url, sizes.requests, sizes.inflight))
        add("rr_ours", await bus_requests(url, sizes.requests, sizes.inflight))
        raw, ours = await raw_rtt(url, sizes.rtt_samples), await bus_rtt(url, sizes.rtt_samples)
        add("p50_raw", _pct(raw, 0.5) * 1e6)
        add("p50_ours", _pct(ours, 0.5) * 1e6)
        add("p99_raw", _pct(raw, 0.99) * 1e6)
        add("p99_ours", _pct(ours, 0.99) * 1e6)
    med = {k: statistics.median(v) for k, v in results.items()}
    return [
        Row("publish (publisher only)", med["pub_raw"], med["pub_ours"], True, "msg/s"),
        Row("publish -> subscriber", med["ps_raw"], med["ps_ours"], True, "msg/s"),
        Row(f"request/reply, {sizes.inflight} in flight", med["rr_raw"], med["rr_ours"], True, "req/s"),
        Row("request/reply RTT p50, 1 in flight", med["p50_raw"], med["p50_ours"], False, "us"),
        Row("request/reply RTT p99, 1 in flight", med["p99_raw"], med["p99_ours"], False, "us"),
    ]


def render(rows: list[Row], sizes: Sizes) -> Table:
    table = Table(
        title=f"NatsBus vs raw nats-py ({PAYLOAD.__len__()} B payload, median of {sizes.repeats}, same server)"
    )
    for col in ("metric", "raw nats-py", "NatsBus", "ratio", "goal (1.2x)"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in rows:
        table.add_row(
            r.metric,
            f"{r.raw:,.0f} {r.unit}",
            f"{r.ours:,.0f} {r.unit}",
            f"{r.ratio:.2f}",
            ("ok" if r.ok else "MISSED") + (" (>= 0.83)" if r.higher_is_better else " (<= 1.20)"),
        )
    return table


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--messages", type=int, default=Sizes.messages)
    ap.add_argument("--requests", type=int, default=Sizes.requests)
    ap.add_argument("--inflight", type=int, default=Sizes.inflight)
    ap.add_argument("--rtt-samples", type=int, default=Sizes.rtt_samples)
    ap.add_argument("--repeats", type=int, default=Sizes.repeats)
    args = ap.parse_args(argv)
    sizes = Sizes(args.messages, args.requests, args.inflight, args.rtt_samples, args.repeats)
    with NatsServer(name="accord-bench", jetstream=False) as server:
        rows = asyncio.run(run(sizes, server.url))
    Console(width=120).print(render(rows, sizes))
    return rows


if __name__ == "__main__":
    main()
