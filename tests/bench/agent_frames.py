"""Benchmark: what one agent spends per frame on its receive path, in process (Task -> Bid; a losing Cancel).

    python -m tests.bench.agent_frames [--tasks 800] [--repeats 5] [--profile]

One Agent on an in-memory direct bus (authenticated, as ``accord up`` runs it), fed pre-sealed frames straight
into its frame handler, as NatsBus's read loop would: ``--tasks`` calls for proposals from one requester (each
peeked, priced, answered by a signed Bid that is handed to the bus), then a task-end Cancel for each (peeked, the
bid's slot freed). Prints the CPU per Task and per Cancel in microseconds (best of ``--repeats``, each on a fresh
agent). The bus does no work beyond routing to nobody, so this is the shell, the machine and the security layer.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time

import anyio
import structlog

from accord.bus.base import BusMessage
from accord.bus.memory import MemoryBroker
from accord.protocol.actions import new_message_id
from accord.protocol.messages import Cancel
from accord.runtime.agent import Agent
from accord.security import seal
from accord.security.testing import Pki
from tests.bench.inproc import DirectMemoryBus, _Listener
from tests.bench.rounds import task_spec
from tests.support.runtime_kit import make_profile, sim_backend


async def run_once(tasks: int, prof: cProfile.Profile | None) -> tuple[float, float]:
    broker = MemoryBroker()
    pki = Pki(random.Random(0))
    me = pki.agent("requester")
    identity = pki.agent("a0", region="local", residency=("eu",))
    profile = make_profile("a0", slots=100_000, max_jobs_per_requester=100_000)
    agent = Agent(
        identity,
        profile,
        {"sim-small": sim_backend()},
        bus=DirectMemoryBus(broker),
        trust=pki.trust,
        rng=random.Random(0),
        service=False,
        stream_progress=False,
        authenticated_bus=True,
    )
    rng = random.Random(1)
    now = time.time_ns()
    task_msgs = [task_spec(i).to_task(sender=me.id, task_id=new_message_id(rng), ts=now) for i in range(tasks)]
    task_frames = [seal(t, me) for t in task_msgs]
    cancel_frames = [
        seal(Cancel(id=new_message_id(rng), sender=me.id, ts=now, task_id=t.task_id, reason="lost"), me)
        for t in task_msgs
    ]
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        listeners = [s for s in broker._subs if isinstance(s, _Listener)]
        cfp = next(s._handler for s in listeners if ".cfp." in s.subject)
        inbox = next(s._handler for s in listeners if ".dm." in s.subject)
        cfp_subject = f"accord.cfp.any.any.chat.{me.id}"
        inbox_subject = f"accord.dm.{agent.id}.{me.id}"
        if prof is not None:
            prof.enable()
        t0 = time.process_time()
        for frame in task_frames:
            cfp(BusMessage(cfp_subject, frame, None, None))
        t1 = time.process_time()
        for frame in cancel_frames:
            inbox(BusMessage(inbox_subject, frame, None, None))
        t2 = time.process_time()
        if prof is not None:
            prof.disable()
        assert agent.stats.bids == tasks and agent.stats.cancels == tasks, agent.stats
        await agent.stop()
        tg.cancel_scope.cancel()
    return (t1 - t0) / tasks * 1e6, (t2 - t1) / tasks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    if args.profile:
        prof = cProfile.Profile(time.process_time)
        anyio.run(run_once, args.tasks, prof)
        pstats.Stats(prof).sort_stats("tottime").print_stats(40)
        return
    runs = [anyio.run(run_once, args.tasks, None) for _ in range(args.repeats)]
    task_us = min(r[0] for r in runs)
    cancel_us = min(r[1] for r in runs)
    print(f"agent: {task_us:.1f} us CPU per Task (peek, price, signed Bid), {cancel_us:.1f} us per losing Cancel")


if __name__ == "__main__":
    main()
