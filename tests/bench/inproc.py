"""Benchmark: the CPU of Accord's shells per round, in one process, with no network (for A/B of hot-path changes).

    python -m tests.bench.inproc [--rounds 2000] [--agents 10] [--repeats 3] [--direct] [--profile]

A Requester and ``--agents`` Agents run in one event loop on an in-memory bus that behaves like NatsBus's direct
path (:class:`~accord.bus.base.DirectBus`: handlers called from the loop as frames are "read", publishes taken
synchronously), authenticated as ``accord up`` runs (bids and losers' Cancel peeked). Rounds run one at a time
(W3: a call for proposals to every agent, their bids, an award, the result and its attestation; with
``--direct``, W1: a direct award to one agent). Prints the process CPU per round in microseconds (median of
``--repeats``), which is what both sides of the multi-process bench (``tests.bench.peers``) spend minus nats-py
and the socket. ``--profile`` prints the top functions of one run under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from accord.bus.base import BusMessage
from accord.bus.memory import MemoryBroker, MemoryBus
from accord.protocol.requester import RequesterConfig
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester
from accord.security.testing import Pki
from tests.bench.rounds import task_spec
from tests.support.runtime_kit import make_profile, sim_backend


class _Listener:
    """A broker subscription that calls its handler soon (as a connection's read loop would), in order."""

    queue = None

    def __init__(self, subject: str, handler: Callable[[BusMessage], None]) -> None:
        self.subject = subject
        self._handler = handler
        self._loop = asyncio.get_running_loop()

    def _offer(self, msg: BusMessage) -> None:
        self._loop.call_soon(self._handler, msg)


class _Held:
    def __init__(self, broker: MemoryBroker, listener: _Listener) -> None:
        self._broker = broker
        self._listener = listener

    async def unsubscribe(self) -> None:
        self._broker._remove(self._listener)  # type: ignore[arg-type]

    async def __aenter__(self) -> _Held:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()


class DirectMemoryBus(MemoryBus):
    """MemoryBus with the DirectBus interface (listen, publish_nowait)."""

    async def listen(self, subject: str, handler: Callable[[BusMessage], None], *, max_pending: int = 0) -> Any:
        listener = _Listener(subject, handler)
        self.broker._add(listener)  # type: ignore[arg-type]
        return _Held(self.broker, listener)

    def publish_nowait(self, subject: str, data: bytes) -> bool:
        self._stats.published += 1
        self.broker._route(BusMessage(subject, data, None, None))
        return True


async def run_once(agents_n: int, rounds: int, direct: bool, prof: cProfile.Profile | None) -> float:
    broker = MemoryBroker()
    pki = Pki(random.Random(0))
    me = pki.agent("requester")
    agents: list[Agent] = []
    for i in range(agents_n):
        name = f"a{i}"
        identity = pki.agent(name, region="local", residency=("eu",))
        # records of awarded tasks stay until their deadline (10 s): at thousands of rounds a second the default
        # max_jobs_per_requester (spec 11.9) would have every agent refuse this one requester
        profile = make_profile(name, price_out_per_1k_micros=100 + i, slots=1000, max_jobs_per_requester=100_000)
        backend = sim_backend(seed=i)
        agents.append(
            Agent(
                identity,
                profile,
                {"sim-small": backend},
                bus=DirectMemoryBus(broker),
                trust=pki.trust,
                rng=random.Random(i),
                service=False,
                stream_progress=False,
                authenticated_bus=True,
            )
        )
    requester = Requester(
        me,
        bus=DirectMemoryBus(broker),
        trust=pki.trust,
        max_in_flight=64,
        rng=random.Random(1),
        config=RequesterConfig(shortlist_k=agents_n, ack_timeout_ms=1000),
        service=False,
        authenticated_bus=True,
    )
    async with anyio.create_task_group() as tg:
        for agent in agents:
            await tg.start(agent.run)
        await tg.start(requester.run)
        ids = [a.id for a in agents]
        with anyio.fail_after(10):
            while not all(requester.registry.get(a, now=time.time_ns()) for a in ids):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        for i in range(50):  # warm up
            await requester.submit(task_spec(i), agent=ids[0] if direct else None)
        t0 = time.process_time()
        if prof is not None:
            prof.enable()
        for i in range(rounds):
            await requester.submit(task_spec(i), agent=ids[0] if direct else None)
        if prof is not None:
            prof.disable()
        cpu = time.process_time() - t0
        for agent in agents:
            await agent.stop()
        tg.cancel_scope.cancel()
    return cpu / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--direct", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    if args.profile:
        prof = cProfile.Profile(time.process_time)
        anyio.run(run_once, args.agents, args.rounds, args.direct, prof)
        pstats.Stats(prof).sort_stats("tottime").print_stats(45)
        return
    runs = [anyio.run(run_once, args.agents, args.rounds, args.direct, None) for _ in range(args.repeats)]
    what = "W1 direct award" if args.direct else f"W3 round, {args.agents} agents"
    print(f"{what}: {statistics.median(runs):.0f} us CPU per round (runs: {', '.join(f'{r:.0f}' for r in runs)})")


if __name__ == "__main__":
    main()
