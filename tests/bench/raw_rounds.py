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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["RawResult", "interest_registered", "run_raw"]

_TYPE = b"application/vnd.accord.v1+msgpack"


async def interest_registered(nc: Client) -> None:
    """Return once the server has every SUB this connection has sent.

    Not one ``nc.flush()``: nats-py 2.16 writes flush's PING straight to the socket while a SUB sent just before
    it still waits in the pending buffer for the flusher task, so the PONG can come back before the server has
    the interest, and a publish from another connection is then lost (about 1 in 500 fresh subscriptions here).
    The flusher writes that SUB on its next turn, before the first PONG can be read, so a second PING follows it
    on the wire. (NatsBus closes the same race in its ``_roundtrip``.)
    """
    await nc.flush()
    await nc.flush()


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
    """An Ed25519 key derived from its name, so that separate processes agree on every party's public key."""

    def __init__(self, name: str) -> None:
        self.secret = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"raw-bench:" + name.encode()).digest())
        self.public = self.secret.public_key()
        self.id = name

    def seal(self, message: _Msg) -> bytes:
        payload = _enc.encode(message)
        return _enc.encode(_Envelope(payload, self.id, self.secret.sign(_pae(payload))))


def _verify(env: _Envelope, keys: dict[str, Ed25519PublicKey]) -> None:
    keys[env.key_id].verify(env.sig, _pae(env.payload))  # raises InvalidSignature


class _Codec:
    """Signed: every message in an Ed25519 envelope. Unsigned: the bare msgpack message (the usual framework
    setup: typed messages, no signatures)."""

    def __init__(self, key: _Key, keys: dict[str, Ed25519PublicKey], *, signed: bool) -> None:
        self.key = key
        self.keys = keys
        self.signed = signed

    def seal(self, message: _Msg) -> bytes:
        return self.key.seal(message) if self.signed else _enc.encode(message)

    def open(self, data: bytes) -> tuple[_Any, _Envelope | None]:
        if not self.signed:
            return _dec.decode(data), None
        env = _env_dec.decode(data)
        return _dec.decode(env.payload), env

    def verify(self, env: _Envelope | None) -> None:
        if env is not None:
            _verify(env, self.keys)


def dm(to: str, sender: str) -> str:
    """The inbox subject of ``to`` for messages from ``sender`` (Accord's scheme, under ``raw.``)."""
    return f"raw.dm.{to}.{sender}"


def service(agent: str) -> str:
    """The request/reply subject of one raw agent (W1)."""
    return f"raw.svc.{agent}"


def keyring(names: list[str]) -> dict[str, Ed25519PublicKey]:
    return {name: _Key(name).public for name in names}


@dataclass
class _Round:
    task: RTask
    fanout: int
    started: float
    bids: list[tuple[RBid, _Envelope | None]] = field(default_factory=list)
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


class RawAgent:
    """One agent on its own connection. Signed: it bids on a peeked Task, verifies the Award, sends an Ack, an
    attested Result, and verifies the Cancel it gets when it lost. Unsigned: it bids, and answers an Award with
    a Result; nothing more. It also answers plain requests on :func:`service` (W1)."""

    def __init__(self, nc: Client, key: _Key, keys: dict[str, Ed25519PublicKey], *, signed: bool) -> None:
        self.nc = nc
        self.key = key
        self.codec = _Codec(key, keys, signed=signed)

    async def start(self) -> None:
        await self.nc.subscribe(dm(self.key.id, "*"), cb=self.on_msg, pending_msgs_limit=65536)
        await self.nc.subscribe(service(self.key.id), cb=self.on_request, pending_msgs_limit=65536)
        await interest_registered(self.nc)

    async def on_request(self, msg: Msg) -> None:
        task = _dec.decode(msg.data)
        assert isinstance(task, RTask)
        result = RResult(_id(), self.key.id, time.time_ns(), task.task_id, "", f"[answer] to {task.task_id}", b"")
        await msg.respond(_enc.encode(result))

    async def on_msg(self, msg: Msg) -> None:
        m, env = self.codec.open(msg.data)
        reply = dm(m.sender, self.key.id)
        if isinstance(m, RTask):  # peek: no signature check to bid
            bid = RBid(_id(), self.key.id, time.time_ns(), m.task_id, "sim-small", 100, 40)
            await self.nc.publish(reply, self.codec.seal(bid))
        elif isinstance(m, RCancel):  # we lost: the task is over, our bid's slot is free
            self.codec.verify(env)
        elif isinstance(m, RAward):
            self.codec.verify(env)
            output = f"[sim-small simulated answer] to {m.task_id}"
            attestation = b""
            if env is not None:
                await self.nc.publish(
                    reply, self.codec.seal(RAck(_id(), self.key.id, time.time_ns(), m.task_id, m.id))
                )
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
            await self.nc.publish(reply, self.codec.seal(result))


class RawRequester:
    """The requester's side: :meth:`round` runs one contract-net round, :meth:`ask` one request/reply (W1)."""

    def __init__(self, nc: Client, key: _Key, keys: dict[str, Ed25519PublicKey], *, signed: bool) -> None:
        self.nc = nc
        self.key = key
        self.keys = keys
        self.codec = _Codec(key, keys, signed=signed)
        self.rounds: dict[str, _Round] = {}

    async def start(self) -> None:
        await self.nc.subscribe(dm(self.key.id, "*"), cb=self.on_msg, pending_msgs_limit=65536)
        await interest_registered(self.nc)

    async def round(self, invited: list[str]) -> None:
        task_id = _id()
        now = time.time_ns()
        task = RTask(task_id, self.key.id, now, task_id, "What is 2+2?", 100_000, now + 10**10)
        r = _Round(task, len(invited), time.perf_counter())
        self.rounds[task_id] = r
        frame = self.codec.seal(task)  # sign once, publish to every invited inbox
        try:
            for agent_id in invited:
                await self.nc.publish(dm(agent_id, self.key.id), frame)
            await r.done.wait()
        finally:
            del self.rounds[task_id]

    async def ask(self, agent: str) -> None:
        task_id = _id()
        now = time.time_ns()
        task = RTask(task_id, self.key.id, now, task_id, "What is 2+2?", 100_000, now + 10**10)
        reply = await self.nc.request(service(agent), _enc.encode(task), timeout=10)
        result = _dec.decode(reply.data)
        assert isinstance(result, RResult) and result.task_id == task_id

    async def on_msg(self, msg: Msg) -> None:
        m, env = self.codec.open(msg.data)
        r = self.rounds.get(m.task_id)
        if r is None:
            return
        if isinstance(m, RBid):
            r.bids.append((m, env))
            if len(r.bids) == r.fanout:
                r.bids.sort(key=lambda b: (b[0].price, b[0].latency_ms, b[0].sender))
                best, best_env = r.bids[0]
                self.codec.verify(best_env)
                digest = hashlib.sha256(
                    best_env.payload if best_env is not None else _enc.encode(best)
                ).hexdigest()
                award = RAward(
                    _id(), self.key.id, time.time_ns(), m.task_id, best.sender, best.id, digest, best.price
                )
                frame = self.codec.seal(award)
                r.award = award
                r.award_payload = _env_dec.decode(frame).payload if env is not None else frame
                await self.nc.publish(dm(best.sender, self.key.id), frame)
        elif isinstance(m, RAck):
            self.codec.verify(env)
        elif isinstance(m, RResult):
            self.codec.verify(env)
            if env is not None:
                att = _att_dec.decode(m.attestation)
                self.keys[m.sender].verify(att.sig, _pae(att.payload))
                st = _stmt_dec.decode(att.payload)
                assert st.output_digest == hashlib.sha256(m.output.encode()).hexdigest()
                assert st.award_digest == hashlib.sha256(r.award_payload).hexdigest()
                losers = [b.sender for b, _ in r.bids if b.sender != m.sender]
                if losers:  # one Cancel, signed once, to every losing bidder
                    frame = self.codec.seal(RCancel(_id(), self.key.id, time.time_ns(), m.task_id, "superseded"))
                    for agent_id in losers:
                        await self.nc.publish(dm(agent_id, self.key.id), frame)
            r.done.set()


async def drive(
    step: Callable[[], Awaitable[None]], *, inflight: int, seconds: float, warmup_s: float,
    on_window: Callable[[bool], Awaitable[None]] | None = None,
) -> RawResult:  # fmt: skip
    """Run ``step`` ``inflight`` at a time for ``warmup_s``, then measure it for ``seconds``; ``on_window(True)``
    is called as the measured window opens and ``on_window(False)`` as it closes."""
    latencies: list[float] = []
    measuring = False
    count = 0

    async def worker(stop: float) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await step()
            if measuring:
                latencies.append((time.perf_counter() - t0) * 1000)
                count += 1

    await asyncio.gather(*(worker(time.perf_counter() + warmup_s) for _ in range(inflight)))
    measuring = True
    if on_window is not None:
        await on_window(True)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(t0 + seconds) for _ in range(inflight)))
    elapsed = time.perf_counter() - t0
    if on_window is not None:
        await on_window(False)
    return RawResult(count, elapsed, latencies)


async def run_raw(url: str, *, agents: int = 10, fanout: int = 10, inflight: int = 32, seconds: float = 8.0,
                  warmup_s: float = 1.0, signed: bool = True) -> RawResult:  # fmt: skip
    """Run the raw exchange for ``seconds`` (after ``warmup_s``) in this process and return the rounds and their
    latencies."""
    names = [f"agent{i}" for i in range(agents)]
    keys = keyring([*names, "requester"])
    conns: list[Client] = []
    try:
        for name in names:
            nc = await nats.connect(url, name=name)
            conns.append(nc)
            await RawAgent(nc, _Key(name), keys, signed=signed).start()
        rnc = await nats.connect(url, name="requester")
        conns.append(rnc)
        requester = RawRequester(rnc, _Key("requester"), keys, signed=signed)
        await requester.start()
        invited = names[:fanout]
        return await drive(lambda: requester.round(invited), inflight=inflight, seconds=seconds, warmup_s=warmup_s)
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
    parser.add_argument("--unsigned", action="store_true", help="no signatures: task, bids, award, result")
    args = parser.parse_args()

    from accord.bus.server import NatsServer

    async def go(url: str) -> RawResult:
        return await run_raw(
            url,
            agents=args.agents,
            fanout=args.fanout,
            inflight=args.inflight,
            seconds=args.seconds,
            signed=not args.unsigned,
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
