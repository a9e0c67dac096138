"""FastStream's round: the same W3 and W1 exchanges as :mod:`tests.bench.raw_rounds` (unsigned), written the way
FastStream is used: one ``NatsBroker`` (one connection) per process, a typed handler per subject, pydantic
messages as JSON.

W3: the requester publishes a Task to every agent's ``fs.task.<agent>`` subject; each agent's handler answers
with a Bid on ``fs.bid``; once every invited agent has bid, the requester awards the cheapest on
``fs.award.<agent>``, whose handler publishes the Result on ``fs.result``. Nothing is signed, acknowledged or
cancelled. W1: ``broker.request`` to one agent's ``fs.ask.<agent>`` handler, which returns the Result.
:mod:`tests.bench.peers` runs it next to raw nats-py and Accord (``--peers faststream``).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from faststream.nats import NatsBroker
from pydantic import BaseModel

__all__ = ["FsAgents", "FsRequester", "fs_broker"]


class FsTask(BaseModel):
    task_id: str
    sender: str
    prompt: str
    max_price: int
    deadline_ns: int


class FsBid(BaseModel):
    task_id: str
    sender: str
    model: str
    price: int
    latency_ms: int


class FsAward(BaseModel):
    task_id: str
    sender: str
    winner: str
    price: int


class FsResult(BaseModel):
    task_id: str
    sender: str
    output: str


def fs_broker(url: str, name: str, nkey_seed: str) -> NatsBroker:
    """The process's one broker (one connection), with FastStream's per-message logging off, as in production."""
    return NatsBroker(url, name=name, nkeys_seed_str=nkey_seed, logger=None)


def _id() -> str:
    return os.urandom(16).hex()


def _task(sender: str) -> FsTask:
    task_id = _id()
    return FsTask(
        task_id=task_id,
        sender=sender,
        prompt="What is 2+2?",
        max_price=100_000,
        deadline_ns=time.time_ns() + 10**10,
    )


class FsAgents:
    """Every agent of the process as handlers on one broker."""

    def __init__(self, broker: NatsBroker, names: list[str]) -> None:
        self.broker = broker
        for name in names:
            self._register(name)

    def _register(self, name: str) -> None:
        broker = self.broker

        @broker.subscriber(f"fs.task.{name}")
        async def on_task(task: FsTask) -> None:
            bid = FsBid(task_id=task.task_id, sender=name, model="sim-small", price=100, latency_ms=40)
            await broker.publish(bid, f"fs.bid.{task.sender}")

        @broker.subscriber(f"fs.award.{name}")
        async def on_award(award: FsAward) -> None:
            output = f"[sim-small simulated answer] to {award.task_id}"
            await broker.publish(
                FsResult(task_id=award.task_id, sender=name, output=output), f"fs.result.{award.sender}"
            )

        @broker.subscriber(f"fs.ask.{name}")
        async def on_ask(task: FsTask) -> FsResult:
            return FsResult(task_id=task.task_id, sender=name, output=f"[answer] to {task.task_id}")


@dataclass
class _Round:
    fanout: int
    bids: list[FsBid] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class FsRequester:
    """The requester's side: :meth:`round` runs one W3 round, :meth:`ask` one request/reply (W1)."""

    def __init__(self, broker: NatsBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.rounds: dict[str, _Round] = {}

        @broker.subscriber(f"fs.bid.{name}")
        async def on_bid(bid: FsBid) -> None:
            r = self.rounds.get(bid.task_id)
            if r is None:
                return
            r.bids.append(bid)
            if len(r.bids) == r.fanout:
                best = min(r.bids, key=lambda b: (b.price, b.latency_ms, b.sender))
                award = FsAward(task_id=bid.task_id, sender=name, winner=best.sender, price=best.price)
                await broker.publish(award, f"fs.award.{best.sender}")

        @broker.subscriber(f"fs.result.{name}")
        async def on_result(result: FsResult) -> None:
            r = self.rounds.get(result.task_id)
            if r is not None:
                r.done.set()

    async def round(self, invited: list[str]) -> None:
        task = _task(self.name)
        r = self.rounds[task.task_id] = _Round(len(invited))
        try:
            for agent in invited:
                await self.broker.publish(task, f"fs.task.{agent}")
            await r.done.wait()
        finally:
            del self.rounds[task.task_id]

    async def ask(self, agent: str) -> None:
        task = _task(self.name)
        reply = await self.broker.request(task, f"fs.ask.{agent}", timeout=10)
        result = FsResult.model_validate_json(reply.body)
        assert result.task_id == task.task_id
