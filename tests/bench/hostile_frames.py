"""Trust before decode, measured (issue 15, D9): what a hostile frame costs each receive path, next to an honest
small frame on the same path.

    python -m tests.bench.hostile_frames [--n 300] [--repeats 5]

Paths: the agent's receive (``Agent._receive``: a call for proposals) and the requester's (``Requester._receive``:
a bid for its open task), each on any bus (every frame verified before it is decoded) and on a bus that
authenticates publishers (frames the receiver does not act on alone are peeked: key trusted, signature not
checked); and the two security functions under them (``open_frame``, ``peek``), fed a Bid. Frames:

- honest: a small frame signed by a trusted key (a Task to the agent, a Bid to the requester);
- unknown key: 1 MiB of msgpack (a message with a large unknown field) from a key nobody certified;
- bad signature: the same 1 MiB from a trusted key, signed over something else;
- garbage: 1 MiB of random bytes.

Each row is the median over ``repeats`` runs of ``n`` frames (a fresh receiver each run: no replay or duplicate
short-cuts), in microseconds per frame, and the ratio to the honest frame on the same path. The issue's target is
a frame from an unknown key at most 2x an honest small frame; the bad signature row is what a trusted key can
make a receiver pay (a signature check over 1 MiB on verified paths, a decode of 1 MiB on peeked ones). Nothing is
asserted: a benchmark (the order of the checks is a unit test, tests/unit/security/test_flood_security.py).
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
import msgspec
from rich.console import Console
from rich.table import Table

from accord.bus.base import BusMessage
from accord.bus.memory import MemoryBroker
from accord.errors import AccordError
from accord.protocol import subjects
from accord.protocol.codec import encode
from accord.protocol.events import Start
from accord.protocol.messages import MAX_FRAME_BYTES, ChatMessage, Constraints, Role
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import Requester
from accord.security import PAYLOAD_TYPE_FRAME, Envelope, Identity, ReplayGuard, open_frame, peek, seal
from accord.security.envelope import encode_envelope
from accord.security.testing import Pki, random_identity
from tests.support.flood import bid
from tests.support.runtime_kit import AgentSpec, make_agent, spec, wait_for

KINDS = ("honest", "unknown key", "bad signature", "garbage")
T = TypeVar("T")
S = 1_000_000_000


@dataclass(frozen=True)
class Row:
    path: str
    kind: str
    us: float
    ratio: float


def _big(message: msgspec.Struct, key_id: str, *, sig: bytes = bytes(64)) -> bytes:
    """A frame of just under 1 MiB: ``message`` with an unknown field that fills it, signed with ``sig``."""
    fields = msgspec.msgpack.decode(encode(message))
    room = MAX_FRAME_BYTES - len(encode(message)) - 512
    payload = msgspec.msgpack.encode({**fields, "padding": "x" * room})
    frame = encode_envelope(
        Envelope(v=1, payload_type=PAYLOAD_TYPE_FRAME, payload=payload, key_id=key_id, sig=sig)
    )
    assert len(frame) <= MAX_FRAME_BYTES
    return frame


def _hostile(honest: msgspec.Struct, trusted: str, stranger: Identity, rng: random.Random) -> dict[str, bytes]:
    as_stranger = msgspec.structs.replace(honest, sender=stranger.id)
    return {
        "unknown key": _big(as_stranger, stranger.id),
        "bad signature": _big(honest, trusted),
        "garbage": rng.randbytes(MAX_FRAME_BYTES - 64),
    }


def _loop_us(receive: Callable[[T], object], items: Sequence[T]) -> float:
    """Microseconds per item of ``receive`` over ``items`` (a refusal raised to the caller counts as received)."""
    start = time.perf_counter_ns()
    for item in items:
        try:
            receive(item)
        except AccordError:  # the security functions raise their refusals; the shells count them
            continue
    return (time.perf_counter_ns() - start) / len(items) / 1000


def _median(run: Callable[[str], float], kind: str, repeats: int) -> float:
    return statistics.median(run(kind) for _ in range(repeats))


def _rows(path: str, per_kind: dict[str, float]) -> list[Row]:
    honest = per_kind["honest"]
    return [Row(path, kind, per_kind[kind], per_kind[kind] / honest) for kind in KINDS]


@contextmanager
def _quiet() -> Iterator[None]:
    """Refusals are logged: keep the standard logging module (where an unconfigured library logs) out of it."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# --- the agent -------------------------------------------------------------------------------------------------
def _agent_rows(pki: Pki, n: int, repeats: int, authenticated: bool) -> list[Row]:
    rng = random.Random(3)
    requester = pki.agent("requester", residency=("eu",))
    stranger = random_identity(rng)
    now = time.time_ns()
    task_spec = TaskSpec(
        messages=[ChatMessage(role=Role.USER, content="What is 2+2?")],
        constraints=Constraints(deadline_ns=now + 3600 * S, max_price_micros=10**9),
    )
    tasks = [task_spec.to_task(sender=requester.id, task_id=rng.randbytes(16).hex(), ts=now) for _ in range(n)]
    honest = [seal(t, requester) for t in tasks]
    hostile = _hostile(tasks[0], requester.id, stranger, rng)

    def run(kind: str) -> float:
        agent = make_agent(pki, MemoryBroker().bus(), AgentSpec("agent"), authenticated_bus=authenticated)
        agent._apply(agent.machine.handle(Start(), now=agent.clock()))
        subject = subjects.announce(None, None, "chat", stranger.id if kind == "unknown key" else requester.id)
        frames = honest if kind == "honest" else [hostile[kind]] * n
        return _loop_us(lambda msg: agent._receive(msg, broadcast=True), [BusMessage(subject, f) for f in frames])

    path = f"agent, {'authenticated bus (peek)' if authenticated else 'any bus (verify)'}"
    return _rows(path, {kind: _median(run, kind, repeats) for kind in KINDS})


# --- the requester ---------------------------------------------------------------------------------------------
async def _requester_rows(pki: Pki, n: int, repeats: int, authenticated: bool) -> list[Row]:
    rng = random.Random(4)
    bidders = [pki.agent(f"bidder-{i}") for i in range(n)]
    stranger = random_identity(rng)
    per_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(repeats):
        for kind in KINDS:
            requester = Requester(
                pki.agent("requester"), bus=MemoryBroker().bus(), trust=pki.trust, authenticated_bus=authenticated
            )
            async with anyio.create_task_group() as tg:
                await tg.start(requester.run)
                tg.start_soon(requester.submit, spec(deadline_ms=120_000, bid_window_ms=60_000))
                await wait_for(lambda r=requester: bool(r._tasks), what="the task")  # type: ignore[misc]
                task_id = next(iter(requester._tasks))
                now = requester.clock()
                bids = [
                    bid(task_id, b.id, now=now, bid_id=f"{i:032x}", region="eu-central")
                    for i, b in enumerate(bidders)
                ]
                if kind == "honest":
                    messages = [
                        BusMessage(subjects.direct(requester.id, b.id), seal(m, b))
                        for b, m in zip(bidders, bids, strict=True)
                    ]
                else:
                    frame = _hostile(bids[0], bidders[0].id, stranger, rng)[kind]
                    publisher = stranger.id if kind == "unknown key" else bidders[0].id
                    messages = [BusMessage(subjects.direct(requester.id, publisher), frame)] * n
                per_kind[kind].append(_loop_us(requester._receive, messages))
                tg.cancel_scope.cancel()
    path = f"requester, {'authenticated bus (peek)' if authenticated else 'any bus (verify)'}"
    return _rows(path, {kind: statistics.median(v) for kind, v in per_kind.items()})


# --- the security functions ------------------------------------------------------------------------------------
def _function_rows(pki: Pki, n: int, repeats: int) -> list[Row]:
    rng = random.Random(5)
    signer = pki.agent("signer")
    stranger = random_identity(rng)
    now = time.time_ns()
    bids = [bid("7" * 32, signer.id, now=now, bid_id=rng.randbytes(16).hex()) for _ in range(n)]
    honest = [seal(b, signer) for b in bids]
    hostile = _hostile(bids[0], signer.id, stranger, rng)

    def frames(kind: str) -> list[bytes]:
        return honest if kind == "honest" else [hostile[kind]] * n

    def with_open(kind: str) -> float:
        guard = ReplayGuard(start_ns=now)
        return _loop_us(lambda f: open_frame(f, pki.trust, guard, now), frames(kind))

    def with_peek(kind: str) -> float:
        return _loop_us(lambda f: peek(f, trust=pki.trust, now_ns=now), frames(kind))

    return [
        *_rows("open_frame(Bid)", {kind: _median(with_open, kind, repeats) for kind in KINDS}),
        *_rows("peek(Bid)", {kind: _median(with_peek, kind, repeats) for kind in KINDS}),
    ]


def measure(n: int, repeats: int) -> list[Row]:
    pki = Pki(random.Random(1))
    rows: list[Row] = []
    with _quiet():
        rows += _function_rows(pki, n, repeats)
        for authenticated in (False, True):
            rows += _agent_rows(pki, n, repeats, authenticated)
            rows += anyio.run(_requester_rows, pki, n, repeats, authenticated)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="frames per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per row (median)")
    args = parser.parse_args(argv)
    rows = measure(args.n, args.repeats)
    table = Table(title=f"hostile frames: receive cost (n={args.n}, median of {args.repeats})")
    for column, justify in [
        ("receive path", "left"),
        ("frame", "left"),
        ("us/frame", "right"),
        ("x honest", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(row.path, row.kind, f"{row.us:.1f}", f"{row.ratio:.2f}")
    Console(width=max(Console().width, 100)).print(table)


if __name__ == "__main__":
    main()
