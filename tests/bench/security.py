"""Security benchmark: our sign / verify / seal / open paths next to raw ``cryptography`` in the same run.

    python -m tests.bench.security [--n 3000] [--repeats 5]

Each row is the median over ``repeats`` runs of ``n`` operations; "floor" is the raw operation ours is built on,
measured in the same process, and "ratio" is ours / floor. Also: what caching public key objects saves, what
peek-then-verify-the-winner saves over verifying every bid, the replay guard's cost and bytes per remembered id,
and (if PyNaCl is importable, as it is wherever nkeys is) libsodium's verify for comparison.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from rich.console import Console
from rich.table import Table

from accord.protocol.codec import decode, encode
from accord.protocol.messages import Attestation, Bid, Tier
from accord.security import (
    PAYLOAD_TYPE_FRAME,
    Expect,
    ReplayGuard,
    attest,
    open_frame,
    pae,
    peek,
    public_key_of,
    seal,
    verify,
    verify_attestation,
)
from accord.security.envelope import verify_signature
from accord.security.testing import Pki

_S = 1_000_000_000
T0 = 1_767_225_600 * _S


@dataclass
class Row:
    name: str
    ours_ns: float
    floor_name: str
    floor_ns: float | None

    @property
    def ratio(self) -> str:
        return "-" if self.floor_ns is None else f"{self.ours_ns / self.floor_ns:.2f}"


def _per_op_ns(run: Callable[[int], None], n: int, repeats: int) -> float:
    """Median over ``repeats`` of (time for ``run(n)``) / n."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run(n)
        samples.append((time.perf_counter_ns() - start) / n)
    return statistics.median(samples)


def _paired(
    ours: Callable[[int], None], floor: Callable[[int], None], n: int, repeats: int
) -> tuple[float, float]:
    """Medians of ours and floor, measured alternately so that load on a shared machine hits both alike."""
    a, b = [], []
    for _ in range(repeats):
        a.append(_per_op_ns(ours, n, 1))
        b.append(_per_op_ns(floor, n, 1))
    return statistics.median(a), statistics.median(b)


def _loop(fn: Callable[[], object]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            fn()

    return run


def _bid(sender: str, rng: random.Random, task_id: str) -> Bid:
    return Bid(
        id=rng.randbytes(16).hex(),
        sender=sender,
        ts=T0,
        task_id=task_id,
        model="llama-3.1-8b",
        price_micros=1_200,
        est_latency_ms=900,
        quality=0.62,
        valid_until_ns=T0 + _S,
        tier=Tier.EDGE,
        region="eu-central",
        residency=["eu"],
    )


def measure(n: int, repeats: int) -> tuple[list[Row], list[tuple[str, str]]]:
    rng = random.Random(1)
    pki = Pki(rng)
    agent = pki.agent("bench")
    agents = [agent, *(pki.agent(f"b{i}") for i in range(9))]
    task_id = rng.randbytes(16).hex()
    bid = _bid(agent.id, rng, task_id)
    payload = encode(bid)
    signed = pae(PAYLOAD_TYPE_FRAME, payload)
    raw_private = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    raw_public = raw_private.public_key()
    raw_sig = raw_private.sign(signed)
    raw_public_bytes = raw_public.public_bytes_raw()
    sig = agent.sign(signed)
    frame = seal(bid, agent)
    frames = [seal(_bid(agent.id, rng, task_id), agent) for _ in range(n)]
    trust = pki.trust
    rows: list[Row] = []

    def row(
        name: str, ours: Callable[[int], None], floor_name: str, floor: Callable[[int], None], k: int = n
    ) -> None:
        ours_ns, floor_ns = _paired(ours, floor, k, repeats)
        rows.append(Row(name, ours_ns, floor_name, floor_ns))

    raw_sign = _loop(lambda: raw_private.sign(signed))
    raw_verify = _loop(lambda: raw_public.verify(raw_sig, signed))
    row("sign (Identity.sign)", _loop(lambda: agent.sign(signed)), "cryptography sign", raw_sign)
    row(
        "verify (PAE + cached key)",
        _loop(lambda: verify_signature(agent.public_key, PAYLOAD_TYPE_FRAME, payload, sig)),
        "cryptography verify",
        raw_verify,
    )
    row("seal(Bid)", _loop(lambda: seal(bid, agent)), "cryptography sign", raw_sign)

    def open_all(count: int) -> None:
        guard = ReplayGuard(max_ids_per_sender=count + 1)
        expect = Expect(task_id=task_id, attempt=1)
        for f in frames[:count]:
            open_frame(f, trust, guard, T0, expect=expect)

    row("open_frame(Bid) + replay guard", open_all, "cryptography verify", raw_verify)
    row(
        "peek(Bid) (key trusted, no signature check)",
        _loop(lambda: peek(frame, trust=trust, now_ns=T0)),
        "msgspec decode(payload)",
        _loop(lambda: decode(payload)),
    )
    peeked = peek(frame, trust=trust, now_ns=T0)
    row("verify(peeked Bid)", _loop(lambda: verify(peeked, trust, T0)), "cryptography verify", raw_verify)

    # Public key objects: built per frame vs cached (the trust store caches them).
    row(
        "verify, key object built per call",
        _loop(lambda: Ed25519PublicKey.from_public_bytes(raw_public_bytes).verify(raw_sig, signed)),
        "cryptography verify, cached key",
        raw_verify,
    )
    row(
        "agent id -> key object, uncached",
        _loop(lambda: public_key_of(agent.id)),
        "trust.public_key (cached)",
        _loop(lambda: trust.public_key(agent.id)),
    )

    # A bid round of 10: verify every bid vs peek all and verify the winner only.
    round_frames = [seal(_bid(a.id, rng, task_id), a) for a in agents]

    def verify_all(count: int) -> None:
        for _ in range(count):
            for f in round_frames:
                open_frame(f, trust, None, T0)

    def peek_then_winner(count: int) -> None:
        for _ in range(count):
            bids = [peek(f, trust=trust, now_ns=T0) for f in round_frames]
            verify(bids[0], trust, T0)

    row(
        "10 bids: peek all, verify winner",
        peek_then_winner,
        "10 bids: open_frame each",
        verify_all,
        max(1, n // 10),
    )

    # Attestations.
    statement = Attestation(
        id=rng.randbytes(16).hex(),
        sender=agent.id,
        ts=T0,
        task_id=task_id,
        attempt=1,
        agent=agent.id,
        requester=agents[1].id,
        prompt_digest="1" * 64,
        award_digest="2" * 64,
        output_digest="3" * 64,
        model="llama-3.1-8b",
        backend="llamacpp",
    )
    envelope = attest(statement, agent)
    row("attest", _loop(lambda: attest(statement, agent)), "cryptography sign", raw_sign)
    row(
        "verify_attestation",
        _loop(lambda: verify_attestation(envelope, trust, T0)),
        "cryptography verify",
        raw_verify,
    )

    try:
        import nacl.signing

        nacl_key = nacl.signing.SigningKey(rng.randbytes(32))
        nacl_signed = nacl_key.sign(signed)
        nacl_verify_key = nacl_key.verify_key
        row(
            "PyNaCl (libsodium) verify",
            _loop(lambda: nacl_verify_key.verify(nacl_signed)),
            "cryptography verify",
            raw_verify,
        )
    except ImportError:  # pragma: no cover - PyNaCl comes with nkeys
        pass

    notes = [
        ("frame bytes (Bid)", f"{len(frame)} (payload {len(payload)}, overhead {len(frame) - len(payload)})"),
        ("replay guard admit", f"{_guard_admit_ns(n, repeats):.2f} us"),
        ("replay guard memory", f"{_guard_bytes_per_id(max(n, 10_000)):.0f} bytes per remembered id"),
    ]
    return rows, notes


def _guard_admit_ns(n: int, repeats: int) -> float:
    ids = [f"{i:032x}" for i in range(n)]

    def run(count: int) -> None:
        guard = ReplayGuard(max_ids_per_sender=count + 1)
        for i in range(count):
            guard.admit("U" + "A" * 55, ids[i], T0, None, T0)

    return _per_op_ns(run, n, repeats) / 1000


def _guard_bytes_per_id(n: int) -> float:
    ids = [f"{i:032x}" for i in range(n)]  # allocated before tracing: ids arrive with their frames
    guard = ReplayGuard(max_ids_per_sender=n + 1, max_senders=n + 1)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i, mid in enumerate(ids):
        guard.admit(f"sender-{i % 64}", mid, T0 + i, None, T0 + n)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / n


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="operations per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per row (median)")
    args = parser.parse_args(argv)
    rows, notes = measure(args.n, args.repeats)
    table = Table(title=f"accord.security (n={args.n}, median of {args.repeats})")
    for column, justify in [
        ("operation", "left"),
        ("ours us/op", "right"),
        ("ours ops/s", "right"),
        ("floor", "left"),
        ("floor us/op", "right"),
        ("ratio", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            row.name,
            f"{row.ours_ns / 1000:.2f}",
            f"{1e9 / row.ours_ns:,.0f}",
            row.floor_name,
            "-" if row.floor_ns is None else f"{row.floor_ns / 1000:.2f}",
            row.ratio,
        )
    console = Console(width=max(Console().width, 132))
    console.print(table)
    for key, value in notes:
        console.print(f"{key}: {value}", highlight=False)


if __name__ == "__main__":
    main()
