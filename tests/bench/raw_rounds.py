"""The raw floor of a signed contract-net round: nats-py, msgspec and `cryptography`, none of Accord's layers.

    python -m tests.bench.raw_rounds [--agents 10] [--fanout 10] [--inflight 32] [--seconds 8]

The same message exchange as Accord's market, with the same signatures: the requester signs a Task and publishes
it to ``fanout`` agent inboxes; each agent decodes it (no verification: Accord's agents only peek at calls for
proposals) and answers with a signed Bid; once every invited agent has bid, the requester picks the cheapest,
verifies that bid's signature, and sends a signed Award; the winner verifies the Award, sends a signed Ack, signs
an in-toto style attestation (JSON statement over the output digest) and a Result carrying it; the requester
verifies the Ack, the Result and the attestation, and checks the output digest; then, as Accord's market does
when a task ends (spec 5.9), it signs one Cancel and sends it to every losing bidder, and each loser verifies
it (a Cancel is acted on: Accord's agents verify it in full). Every signature is Ed25519 over a DSSE
pre-authentication encoding; every message is msgpack through msgspec.

One round = announce -> verified result. ``inflight`` rounds run at once. Prints rounds/s and p50/p99 latency;
:func:`run_raw` is what ``tests.bench.rounds`` calls for its ratio columns.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import time
from dataclasses import dataclass, field

import msgspec
import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["RawResult", "run_raw"]

_TYPE = b"application/vnd.accord.v1+msgpack"


def _pae(payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d " % (len(_TYPE), _TYPE, len(payload)) + payload


class _Msg(msgspec.Struct, tag_field="type", frozen=True):
    id: str
    sender: str
    ts: int


class RTask(_Msg, tag="task", frozen=True):
    task_id: str
    prompt: str
    max_price: int
    deadline_ns: int


class RBid(_Msg, tag="bid", frozen=True):
    task_id: str
    model: str
    price: int
    latency_ms: int


class RAward(_Msg, tag="award", frozen=True):
    task_id: str
    winner: str
    bid_id: str
    bid_digest: str
    price: int


class RAck(_Msg, tag="ack", frozen=True):
    task_id: str
    award_id: str


class RResult(_Msg, tag="result", frozen=True):
    task_id: str
    award_id: str
    output: str
    attestation: bytes


class RCancel(_Msg, tag="cancel", frozen=True):
    task_id: str
    reason: str


class _Statement(msgspec.Struct, frozen=True):
    task_id: str
    agent: str
    award_digest: str
    output_digest: str
    model: str


class _Attestation(msgspec.Struct, frozen=True):
    """A DSSE-like JSON envelope: base64 statement and signature."""

    payload: bytes
    sig: bytes


class _Envelope(msgspec.Struct, array_like=True, frozen=True):
    payload: bytes
    key_id: str
    sig: bytes


_Any = RTask | RBid | RAward | RAck | RResult | RCancel
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Any)
_env_dec = msgspec.msgpack.Decoder(_Envelope)
_json = msgspec.json.Encoder(order="sorted")
_stmt_dec = msgspec.json.Decoder(_Statement)
_att_dec = msgspec.json.Decoder(_Attestation)


def _id() -> str:
    return os.urandom(16).hex()


class _Key:
    def __init__(self, name: str) -> None:
        self.secret = Ed25519PrivateKey.generate()
        self.public = self.secret.public_key()
        self.id = name

    def seal(self, message: _Msg) -> bytes:
        payload = _enc.encode(message)
        return _enc.encode(_Envelope(payload, self.id, self.secret.sign(_pae(payload))))


def _verify(env: _Envelope, keys: dict[str, Ed25519PublicKey]) -> None:
    keys[env.key_id].verify(env.sig, _pae(env.payload))  # raises InvalidSignature


@dataclass
class _Round:
    task: RTask
    fanout: int
    started: float
    bids: list[tuple[RBid, _Envelope]] = field(default_factory=list)
    award: RAward | None = None
    award_payload: bytes = b""
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class RawResult:
    rounds: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.rounds / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


class _RawAgent:
    def __init__(self, nc: Client, key: _Key, keys: dict[str, Ed25519PublicKey]) -> None:
        self.nc = nc
        self.key = key
        self.keys = keys

    async def on_msg(self, msg: Msg) -> None:
        env = _env_dec.decode(msg.data)
        m = _dec.decode(env.payload)
        reply = f"raw.dm.{m.sender}.{self.key.id}"
        if isinstance(m, RTask):  # peek: no signature check to bid
            bid = RBid(_id(), self.key.id, time.time_ns(), m.task_id, "sim-small", 100, 40)
            await self.nc.publish(reply, self.key.seal(bid))
        elif isinstance(m, RCancel):  # we lost: the task is over, our bid's slot is free
            _verify(env, self.keys)
        elif isinstance(m, RAward):
            _verify(env, self.keys)
            now = time.time_ns()
            await self.nc.publish(reply, self.key.seal(RAck(_id(), self.key.id, now, m.task_id, m.id)))
            output = f"[sim-small simulated answer] to {m.task_id}"
            statement = _json.encode(
                _Statement(
                    m.task_id,
                    self.key.id,
                    hashlib.sha256(env.payload).hexdigest(),
                    hashlib.sha256(output.encode()).hexdigest(),
                    "sim-small",
                )
            )
            attestation = _json.encode(_Attestation(statement, self.key.secret.sign(_pae(statement))))
            result = RResult(_id(), self.key.id, time.time_ns(), m.task_id, m.id, output, attestation)
            await self.nc.publish(reply, self.key.seal(result))


class _RawRequester:
    def __init__(self, nc: Client, key: _Key, keys: dict[str, Ed25519PublicKey]) -> None:
        self.nc = nc
        self.key = key
        self.keys = keys
        self.rounds: dict[str, _Round] = {}

    async def on_msg(self, msg: Msg) -> None:
        env = _env_dec.decode(msg.data)
        m = _dec.decode(env.payload)
        r = self.rounds.get(m.task_id)
        if r is None:
            return
        if isinstance(m, RBid):
            r.bids.append((m, env))
            if len(r.bids) == r.fanout:
                r.bids.sort(key=lambda b: (b[0].price, b[0].latency_ms, b[0].sender))
                best, best_env = r.bids[0]
                _verify(best_env, self.keys)
                award = RAward(
                    _id(), self.key.id, time.time_ns(), m.task_id, best.sender, best.id,
                    hashlib.sha256(best_env.payload).hexdigest(), best.price,
                )  # fmt: skip
                frame = self.key.seal(award)
                r.award = award
                r.award_payload = _env_dec.decode(frame).payload
                await self.nc.publish(f"raw.dm.{best.sender}.{self.key.id}", frame)
        elif isinstance(m, RAck):
            _verify(env, self.keys)
        elif isinstance(m, RResult):
            _verify(env, self.keys)
            att = _att_dec.decode(m.attestation)
            self.keys[m.sender].verify(att.sig, _pae(att.payload))
            st = _stmt_dec.decode(att.payload)
            assert st.output_digest == hashlib.sha256(m.output.encode()).hexdigest()
            assert st.award_digest == hashlib.sha256(r.award_payload).hexdigest()
            losers = [b.sender for b, _ in r.bids if b.sender != m.sender]
            if losers:  # one Cancel, signed once, to every losing bidder
                frame = self.key.seal(RCancel(_id(), self.key.id, time.time_ns(), m.task_id, "superseded"))
                for agent_id in losers:
                    await self.nc.publish(f"raw.dm.{agent_id}.{self.key.id}", frame)
            r.done.set()


async def run_raw(url: str, *, agents: int = 10, fanout: int = 10, inflight: int = 32, seconds: float = 8.0,
                  warmup_s: float = 1.0) -> RawResult:  # fmt: skip
    """Run the raw exchange for ``seconds`` (after ``warmup_s``) and return the rounds and their latencies."""
    keys: dict[str, Ed25519PublicKey] = {}
    agent_keys = [_Key(f"agent{i}") for i in range(agents)]
    req_key = _Key("requester")
    for k in (*agent_keys, req_key):
        keys[k.id] = k.public
    conns: list[Client] = []
    try:
        for k in agent_keys:
            nc = await nats.connect(url, name=k.id)
            conns.append(nc)
            agent = _RawAgent(nc, k, keys)
            await nc.subscribe(f"raw.dm.{k.id}.*", cb=agent.on_msg, pending_msgs_limit=65536)
        rnc = await nats.connect(url, name="requester")
        conns.append(rnc)
        requester = _RawRequester(rnc, req_key, keys)
        await rnc.subscribe(f"raw.dm.{req_key.id}.*", cb=requester.on_msg, pending_msgs_limit=65536)
        for nc in conns:
            await nc.flush()
        invited = [k.id for k in agent_keys[:fanout]]
        latencies: list[float] = []
        measuring = False
        count = 0

        async def worker(stop: float) -> None:
            nonlocal count
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                task_id = _id()
                task = RTask(task_id, req_key.id, time.time_ns(), task_id, "What is 2+2?", 100_000,
                             time.time_ns() + 10**10)  # fmt: skip
                r = _Round(task, fanout, t0)
                requester.rounds[task_id] = r
                frame = req_key.seal(task)  # sign once, publish to every invited inbox
                for agent_id in invited:
                    await rnc.publish(f"raw.dm.{agent_id}.{req_key.id}", frame)
                await r.done.wait()
                del requester.rounds[task_id]
                if measuring:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    count += 1

        await asyncio.gather(*(worker(time.perf_counter() + warmup_s) for _ in range(inflight)))
        measuring = True
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds) for _ in range(inflight)))
        elapsed = time.perf_counter() - t0
        return RawResult(count, elapsed, latencies)
    finally:
        for nc in conns:
            await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--fanout", type=int, default=10)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--url", default=None, help="a running nats-server (default: start one)")
    args = parser.parse_args()

    from accord.bus.server import NatsServer

    async def go(url: str) -> RawResult:
        return await run_raw(
            url, agents=args.agents, fanout=args.fanout, inflight=args.inflight, seconds=args.seconds
        )

    if args.url:
        res = asyncio.run(go(args.url))
    else:
        with NatsServer(jetstream=False) as server:
            res = asyncio.run(go(server.url))
    print(
        f"raw: {args.agents} agents, fan-out {args.fanout}, {args.inflight} in flight: {res.rate:.0f} rounds/s, "
        f"p50 {statistics.median(res.latencies_ms):.2f} ms, p99 {res.pct(0.99):.2f} ms ({res.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
