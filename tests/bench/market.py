"""How many allocation rounds per second the pure market machines sustain, in-process.

    python -m tests.bench.market            # full run (a few seconds per row)
    python -m tests.bench.market --quick    # smoke sizes

One round = a RequesterMachine announces a task, N ContractorMachines each quote and bid, the requester gets the
N bids (with the payload digests a shell computes), closes the window, verifies the winner (a no-op hook here),
awards; the winner delivers (its Result, within its ack delay, is the acknowledgement); the requester accepts;
the losers' bids lapse (their BID_EXPIRY timers).

The floor is the irreducible work of the same round done by hand in the same process: build the same messages
(Task, N Bids, Award, Result) with msgspec, digest the N bids, and pick the best score with max().
``market.select`` is compared with that max() alone, and the registry's targeted shortlist over a 1,000-agent
mesh is shown for scale. The ratio column is ours / floor in time per operation (lower is better; the floor is
what a round would cost if the machines did nothing but build their messages).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Final

from rich.console import Console
from rich.table import Table

from accord.protocol.actions import Send, new_message_id
from accord.protocol.codec import encode
from accord.protocol.contractor import ContractorMachine, ContractorProfile
from accord.protocol.digests import payload_digest
from accord.protocol.events import ExecutionDone, Received, Start, TimerFired, TimerKind
from accord.protocol.market import ClaimPredictor, Credentials, Offer, score, select
from accord.protocol.messages import (
    Advertise,
    Award,
    Bid,
    Constraints,
    ModelOffer,
    Result,
    Task,
    Tier,
)
from accord.protocol.pricing import ResourceModel
from accord.protocol.registry import Registry
from accord.protocol.requester import RequesterConfig, RequesterMachine, TaskSpec
from tests.support.market_world import BASE_NS, CLOUD_EU, MS, agent_id

REQ: Final = agent_id("bench-requester")
HEARTBEAT: Final = TimerFired(TimerKind.HEARTBEAT)
DIGEST: Final = "ab" * 32


def _trust(agent: str) -> Credentials:
    return CLOUD_EU


def _verify(bid_id: str, digest: str) -> bool:
    return True


def _profiles(n: int) -> list[tuple[str, ContractorProfile]]:
    out = []
    for i in range(n):
        m = ModelOffer(
            name=f"model-{i % 7}",
            context_window=16_000,
            tokens_per_s=500.0 + 37 * (i % 11),
            price_in_per_1k_micros=50 + i % 13,
            price_out_per_1k_micros=200 + (i * 7919) % 900,
            quality=0.5 + 0.04 * (i % 10),
            ttft_ms=10,
        )
        out.append(
            (
                agent_id(f"bench-{i}"),
                ContractorProfile(
                    name=f"c{i}",
                    tier=Tier.CLOUD,
                    region="eu",
                    models=(ResourceModel.from_offer(m, slots=4),),
                    slots=4,
                    bid_hold_ms=100,
                ),
            )
        )
    return out


class RoundBench:
    """Full rounds through the machines, with a fresh requester per task and persistent contractors."""

    def __init__(self, bidders: int) -> None:
        self.rng = random.Random(1)
        self.contractors = {
            aid: ContractorMachine(aid, profile, rng=self.rng) for aid, profile in _profiles(bidders)
        }
        self.now = BASE_NS
        for c in self.contractors.values():
            c.handle(Start(), now=self.now)
        self.config = RequesterConfig()
        self.completed = 0

    def round(self) -> None:
        self.now += 1_000 * MS
        now = self.now
        spec = TaskSpec(
            constraints=Constraints(deadline_ns=now + 5_000 * MS, max_price_micros=1_000_000),
            est_input_tokens=300,
            max_output_tokens=200,
            prompt_digest=DIGEST,
            bid_window_ms=20,
        )
        req = RequesterMachine(REQ, spec, rng=self.rng, credentials=_trust, verify_bid=_verify, config=self.config)
        out = req.handle(Start(), now=now)
        task = next(a.message for a in out if isinstance(a, Send))
        cfp = Received(task, broadcast=True)
        bid_time = now + MS
        for c in self.contractors.values():
            for a in c.handle(cfp, now=bid_time):
                if isinstance(a, Send):
                    bid = a.message
                    req.handle(Received(bid, payload_digest(encode(bid))), now=bid_time)
        close = now + 20 * MS
        out = req.handle(TimerFired(TimerKind.BID_WINDOW, req.task_id), now=close)
        award = next(a.message for a in out if isinstance(a, Send))
        assert isinstance(award, Award)
        winner = self.contractors[award.winner]
        winner.handle(Received(award), now=close)  # its AwardAck is held: the Result, within 5 ms, acknowledges
        result = winner.handle(ExecutionDone(req.task_id, award.attempt, "answer"), now=close + 5 * MS)
        out = req.handle(Received(result[0].message), now=close + 5 * MS)  # type: ignore[union-attr]
        self.completed += 1
        expiry = TimerFired(TimerKind.BID_EXPIRY, req.task_id)
        later = close + 200 * MS
        for aid, c in self.contractors.items():
            if aid != award.winner:
                c.handle(expiry, now=later)
            if c.timers[(TimerKind.HEARTBEAT, "")] <= later:  # as the shell would: heartbeats also forget old jobs
                c.handle(HEARTBEAT, now=later)


class FloorBench:
    """The same messages built by hand, the bids digested, the best picked with max()."""

    def __init__(self, bidders: int) -> None:
        self.rng = random.Random(1)
        self.agents = [aid for aid, _ in _profiles(bidders)]
        self.now = BASE_NS

    def round(self) -> None:
        rng = self.rng
        self.now += 1_000 * MS
        now = self.now
        tid = new_message_id(rng)
        task = Task(
            id=new_message_id(rng),
            sender=REQ,
            ts=now,
            task_id=tid,
            prompt_digest=DIGEST,
            constraints=Constraints(deadline_ns=now + 5_000 * MS, max_price_micros=1_000_000),
        )
        bids = []
        for i, aid in enumerate(self.agents):
            bid = Bid(
                id=new_message_id(rng),
                sender=aid,
                ts=now,
                task_id=tid,
                model="m",
                price_micros=100 + i,
                est_latency_ms=200,
                quality=0.7,
                valid_until_ns=now + 100 * MS,
                tier=Tier.CLOUD,
                region="eu",
            )
            bids.append((bid, payload_digest(encode(bid))))
        policy = task.policy
        best, digest = max(bids, key=lambda b: score(b[0].quality, b[0].price_micros, b[0].est_latency_ms, policy))
        award = Award(
            id=new_message_id(rng),
            sender=REQ,
            ts=now,
            task_id=tid,
            attempt=1,
            winner=best.sender,
            bid_id=best.id,
            bid_digest=digest,
            price_micros=best.price_micros,
            ack_by_ns=now,
            lease_until_ns=now,
        )
        Result(
            id=new_message_id(rng),
            sender=best.sender,
            ts=now,
            task_id=tid,
            attempt=1,
            award_id=award.id,
            model="m",
            output="answer",
        )


def _offers(n: int) -> list[Offer]:
    rng = random.Random(n)
    return [
        Offer(
            agent_id=aid,
            bid_id=new_message_id(rng),
            digest=DIGEST,
            model="m",
            price_micros=rng.randrange(100, 10_000),
            latency_ms=rng.randrange(50, 2_000),
            quality=rng.choice((0.5, 0.6, 0.7, 0.8, 0.9)),
            valid_until_ns=BASE_NS + 10_000 * MS,
            tier=Tier.CLOUD,
            region="eu",
        )
        for aid, _ in _profiles(n)
    ]


def _task() -> Task:
    return Task(
        id="0" * 32,
        sender=REQ,
        ts=BASE_NS,
        task_id="1" * 32,
        prompt_digest=DIGEST,
        max_output_tokens=200,
        constraints=Constraints(deadline_ns=BASE_NS + 5_000 * MS, max_price_micros=1_000_000),
    )


def _registry(n: int) -> Registry:
    reg = Registry()
    for i, (aid, profile) in enumerate(_profiles(n)):
        reg.observe(
            Advertise(
                id=f"{i:032x}",
                sender=aid,
                ts=BASE_NS,
                name=profile.name,
                tier=profile.tier,
                region=profile.region,
                models=list(profile.models),
                slots=4,
            ),
            now=BASE_NS,
            digest=DIGEST,
        )
    return reg


def measure(fn: Callable[[], object], *, min_seconds: float, repeats: int) -> float:
    """Median seconds per call over ``repeats`` batches of at least ``min_seconds`` each."""
    fn()  # warm up
    batch = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - t0 >= min_seconds / 10 or batch >= 1 << 20:
            break
        batch *= 2
    per_call = []
    for _ in range(repeats):
        n = 0
        t0 = time.perf_counter()
        while True:
            for _ in range(batch):
                fn()
            n += batch
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        per_call.append(elapsed / n)
    return statistics.median(per_call)


def run(*, quick: bool = False, console: Console | None = None) -> list[tuple[str, float, float]]:
    """Measure every row; (name, ours s/op, floor s/op). Prints the table to ``console``."""
    min_s, repeats = (0.05, 1) if quick else (1.0, 3)
    rows: list[tuple[str, float, float]] = []
    for n in (10, 100):
        ours, floor = RoundBench(n), FloorBench(n)
        ours_s = measure(ours.round, min_seconds=min_s, repeats=repeats)
        floor_s = measure(floor.round, min_seconds=min_s, repeats=repeats)
        rows.append((f"round, {n} bidders", ours_s, floor_s))
    task = _task()
    pred = ClaimPredictor()
    policy = task.policy
    for n in (10, 100):
        offers = _offers(n)
        rows.append(
            (
                f"market.select, {n} offers",
                measure(
                    lambda offers=offers: select(offers, task, now=BASE_NS, credentials=_trust, predictor=pred),
                    min_seconds=min_s,
                    repeats=repeats,
                ),
                measure(
                    lambda offers=offers: max(
                        offers, key=lambda o: score(o.quality, o.price_micros, o.latency_ms, policy)
                    ),
                    min_seconds=min_s,
                    repeats=repeats,
                ),
            )
        )
    reg = _registry(1_000)
    offers_1k = _offers(1_000)
    rows.append(
        (
            "registry.shortlist k=8, 1,000 agents",
            measure(
                lambda: reg.shortlist(task, now=BASE_NS, k=8, credentials=_trust, predictor=pred),
                min_seconds=min_s,
                repeats=repeats,
            ),
            measure(
                lambda: max(offers_1k, key=lambda o: score(o.quality, o.price_micros, o.latency_ms, policy)),
                min_seconds=min_s,
                repeats=repeats,
            ),
        )
    )
    console = console or Console(width=120)
    table = Table(title="Accord market core, in-process (one thread)")
    table.add_column("operation")
    table.add_column("ours /s", justify="right")
    table.add_column("ours us/op", justify="right")
    table.add_column("floor /s", justify="right")
    table.add_column("floor us/op", justify="right")
    table.add_column("ratio (time)", justify="right")
    for name, ours_s, floor_s in rows:
        table.add_row(
            name,
            f"{1 / ours_s:,.0f}",
            f"{ours_s * 1e6:,.1f}",
            f"{1 / floor_s:,.0f}",
            f"{floor_s * 1e6:,.1f}",
            f"{ours_s / floor_s:.2f}x",
        )
    console.print(table)
    console.print(
        "floor: the same messages built by hand and the best bid picked with max() "
        "(for the shortlist: max() over 1,000 prepared offers)"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
