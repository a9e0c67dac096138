"""Benchmark: signed announce -> verified result rounds through Accord's shells, next to the raw nats-py floor.

    python -m tests.bench.rounds [--seconds 6] [--repeats 3] [--inflight 32] [--fanout 10] [--far 990] [--profile]

One run, one machine, one nats-server. Rows:

- ``10 agents``: ten agents and the requester in this process, each agent on its own connection, instant
  simulated backends; every task is announced to the shortlist (``--fanout`` agents, all ten here).
- ``100 agents``: the same with a hundred agents; the shortlist still invites ``--fanout``.
- ``1,000 advertised``: the ten agents of the first row plus ``--far`` more expensive agents running in four
  ``accord up`` processes (they advertise, heartbeat and answer the service protocol, but are never shortlisted):
  the requester's registry holds over a thousand cards. Targeted calls for proposals should keep the throughput
  within 2x of the ten-agent row.

Next to each, ``tests/bench/raw_rounds.py`` runs the same exchange (announce to the same number of agents, that
many bids, award, ack, result with an attestation, one Cancel to the losing bidders) with the same Ed25519
signatures and verifications straight on nats-py, msgspec and cryptography: 32 messages, 16 signatures and 14
signature checks per round with the default fan-out of 10, on both sides. Goals: rounds/s >= 50% of raw, p50 <=
1.5x raw. ``--profile`` runs the ten-agent row under cProfile and prints where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from rich.console import Console
from rich.table import Table

from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.mesh.build import build_agent_parts
from accord.mesh.config import load_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.protocol.messages import ChatMessage, Constraints, Policy, Role
from accord.protocol.requester import RequesterConfig, TaskSpec
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester, TaskFailed
from accord.security import TrustStore
from tests.bench.raw_rounds import RawResult, run_raw
from tests.support.paths import REPO_ROOT

FAR_GROUPS = ("far-a", "far-b", "far-c", "far-d")

_AGENT = """
[[agents]]
name = "{name}"
tier = "cloud"
region = "{region}"
count = {count}
slots = 1000
bid_hold_ms = 200
[agents.backend]
kind = "simulated"
model = "sim-small"
realtime = false
ttft_ms = 2.0
tokens_per_s = 5000.0
output_tokens = 16
price_out_per_1k_micros = {price}
quality_mean = 0.6
"""


@dataclass(frozen=True)
class Result:
    rounds: int
    seconds: float
    latencies_ms: list[float]
    failed: int = 0

    @property
    def rate(self) -> float:
        return self.rounds / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99(self) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(0.99 * len(xs)))] if xs else float("nan")


def median_of(runs: list[Result]) -> Result:
    """The run with the median rate (its latencies come along); failures summed over all runs."""
    ranked = sorted(runs, key=lambda r: r.rate)
    mid = ranked[len(ranked) // 2]
    return Result(mid.rounds, mid.seconds, mid.latencies_ms, sum(r.failed for r in runs))


def _raw(r: RawResult) -> Result:
    return Result(r.rounds, r.seconds, r.latencies_ms)


def task_spec(i: int) -> TaskSpec:
    """The benches' question number ``i``: a short chat task, a 10 s deadline, any agent within budget."""
    return TaskSpec(
        messages=[ChatMessage(role=Role.USER, content=f"What is {i} + 2?")],
        constraints=Constraints(deadline_ns=time.time_ns() + 10_000_000_000, max_price_micros=1_000_000),
        max_output_tokens=16,
        est_input_tokens=8,
        bid_window_ms=1000,  # an upper bound: the round closes as soon as every invited agent has answered
        policy=Policy(lambda_price=1000.0),
    )


class Mesh:
    """Keys and trust for every agent of every row (one operator), kept in a temporary state dir."""

    def __init__(self, root: Path, near: int, far: int) -> None:
        self.root = root
        self.far_counts = [far // 4 + (1 if i < far % 4 else 0) for i in range(4)]
        text = _AGENT.format(name="near", region="local", count=near, price=100)
        for group, count in zip(FAR_GROUPS, self.far_counts, strict=True):
            if count:
                text += _AGENT.format(name=group, region="far", count=count, price=5000)
        (root / "mesh.toml").write_text(text, encoding="utf-8")
        self._read()

    @classmethod
    def load(cls, root: Path) -> Mesh:
        """The mesh another process made in ``root`` (its keys and trust), with no far agents."""
        mesh = cls.__new__(cls)
        mesh.root = root
        mesh.far_counts = [0, 0, 0, 0]
        mesh._read()
        return mesh

    def _read(self) -> None:
        self.config = load_mesh(self.root / "mesh.toml")
        assert self.config.state_dir is not None
        self.state_dir = Path(self.config.state_dir)
        self.trust, self.identities = load_trust(self.config, MeshState(self.state_dir))
        near_config = self.config.agents[0]
        self.near = [(n, near_config) for n in near_config.replica_names()]

    def far_files(self) -> list[Path]:
        """One mesh file per far process, sharing this mesh's state dir and trust file."""
        files = []
        for group, count in zip(FAR_GROUPS, self.far_counts, strict=True):
            if not count:
                continue
            path = self.root / f"{group}.toml"
            head = f'state_dir = "{self.state_dir}"\n[trust]\nfile = "{self.state_dir / "trust.json"}"\n'
            path.write_text(
                head + _AGENT.format(name=group, region="far", count=count, price=5000), encoding="utf-8"
            )
            files.append(path)
        return files

    def far_ids(self) -> list[str]:
        return [self.identities[n].id for a in self.config.agents[1:] for n in a.replica_names()]


async def run_ours(
    url: str,
    mesh: Mesh,
    *,
    agents: int,
    inflight: int,
    fanout: int,
    seconds: float,
    warmup_s: float,
    also_wait_for: list[str] | None = None,
    settle_s: float = 0.0,
) -> Result:
    """Rounds through Agent and Requester shells on NatsBus: ``agents`` near agents in this process."""
    trust: TrustStore = mesh.trust
    near = mesh.near[:agents]
    async with NatsBus(url, name="bench-requester") as rbus:
        requester = Requester(
            mesh.identities[REQUESTER_NAME],
            bus=rbus,
            trust=trust,
            max_in_flight=inflight,
            rng=random.Random(1),
            config=RequesterConfig(shortlist_k=fanout, ack_timeout_ms=1000),
            service=False,
        )
        buses: list[NatsBus] = []
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(requester.run)
                for i, (name, config) in enumerate(near):
                    bus = await NatsBus(url, name=name).connect()
                    buses.append(bus)
                    profile, backends = build_agent_parts(config, name, seed=i)
                    agent = Agent(
                        mesh.identities[name],
                        profile,
                        backends,
                        bus=bus,
                        trust=trust,
                        rng=random.Random(i),
                        stream_progress=False,
                        service=False,
                    )
                    await tg.start(agent.run)
                want = [mesh.identities[n].id for n, _ in near] + (also_wait_for or [])
                with anyio.fail_after(120):
                    while len(requester.registry) < len(want) or not all(  # noqa: ASYNC110 - no event to wait on
                        requester.registry.get(a, now=time.time_ns()) is not None for a in want
                    ):
                        await anyio.sleep(0.2)
                await anyio.sleep(settle_s)  # let processes that just started calm down
                result = await _drive(requester, inflight, seconds, warmup_s)
                tg.cancel_scope.cancel()
        finally:
            for bus in buses:
                await bus.close()
    return result


async def _drive(requester: Requester, inflight: int, seconds: float, warmup_s: float) -> Result:
    latencies: list[float] = []
    count = 0
    failed = 0
    measuring = False
    counter = 0

    async def worker(stop: float) -> None:
        nonlocal count, counter, failed
        while time.perf_counter() < stop:
            counter += 1
            t0 = time.perf_counter()
            try:
                await requester.submit(task_spec(counter))
            except TaskFailed:
                failed += measuring
                continue
            if measuring:
                latencies.append((time.perf_counter() - t0) * 1000)
                count += 1

    async with anyio.create_task_group() as tg:
        stop = time.perf_counter() + warmup_s
        for _ in range(inflight):
            tg.start_soon(worker, stop)
    measuring = True
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(inflight):
            tg.start_soon(worker, t0 + seconds)
    return Result(count, time.perf_counter() - t0, latencies, failed)


def _spawn_far(files: list[Path], url: str, logs: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for path in files:
        out = (logs / f"{path.stem}.log").open("wb")
        try:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "from accord.cli import main; main()", "up", str(path), "--nats", url],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                    start_new_session=True,
                )
            )
        finally:
            out.close()
    return procs


def stop_all(procs: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGINT each process (by PID), wait for it, SIGKILL what does not end within 20 s."""
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


@dataclass
class Args:
    seconds: float = 6.0
    warmup: float = 1.5
    inflight: int = 32
    fanout: int = 10
    hundred: int = 100
    far: int = 990
    profile: bool = False
    repeats: int = 3
    settle: float = 5.0
    """Seconds to wait after the far processes have advertised, before measuring (their start-up is busy)."""


def run(args: Args) -> list[tuple[str, Result, Result | None]]:
    root = Path(tempfile.mkdtemp(prefix="accord-bench-"))
    rows: list[tuple[str, Result, Result | None]] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        mesh = Mesh(root, max(10, args.hundred), args.far)
        with NatsServer(jetstream=False) as server:
            url = server.url

            def ours(agents: int, far_ids: list[str] | None = None, settle_s: float = 0.0) -> Result:
                return anyio.run(
                    lambda: run_ours(
                        url,
                        mesh,
                        agents=agents,
                        inflight=args.inflight,
                        fanout=args.fanout,
                        seconds=args.seconds,
                        warmup_s=args.warmup,
                        also_wait_for=far_ids,
                        settle_s=settle_s,
                    )
                )

            def raw(agents: int) -> Result:
                return _raw(
                    asyncio.run(
                        run_raw(
                            url,
                            agents=agents,
                            fanout=min(args.fanout, agents),
                            inflight=args.inflight,
                            seconds=args.seconds,
                            warmup_s=args.warmup,
                        )
                    )
                )

            def alternate(agents: int) -> tuple[Result, Result]:
                """Raw and ours, alternated ``repeats`` times (load on a shared machine hits both); medians."""
                ours_runs, raw_runs = [], []
                for _ in range(args.repeats):
                    raw_runs.append(raw(agents))
                    ours_runs.append(ours(agents))
                return median_of(ours_runs), median_of(raw_runs)

            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                ours(10)
                prof.disable()
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(35)
                print(buf.getvalue())
            ours10, raw10 = alternate(10)
            rows.append(("10 agents", ours10, raw10))
            if args.hundred:
                ours100, raw100 = alternate(args.hundred)
                rows.append((f"{args.hundred} agents", ours100, raw100))
            if args.far:
                logs = root / "logs"
                logs.mkdir()
                procs = _spawn_far(mesh.far_files(), url, logs)
                far_runs = [ours(10, mesh.far_ids(), args.settle)]
                far_runs += [ours(10, mesh.far_ids()) for _ in range(args.repeats - 1)]
                rows.append((f"{10 + args.far:,} advertised (10 near)", median_of(far_runs), raw10))
    finally:
        stop_all(procs)
        shutil.rmtree(root, ignore_errors=True)
    return rows


def print_table(rows: list[tuple[str, Result, Result | None]], args: Args) -> None:
    base = rows[0][1].rate
    table = Table(
        title=f"signed announce -> verified result, {args.inflight} in flight, fan-out {args.fanout}, "
        f"median of {args.repeats} runs of {args.seconds:.0f} s (alternating with raw)"
    )
    for col in ("setup", "rounds/s", "p50 ms", "p99 ms", "failed", "raw rounds/s", "raw p50", "raw p99"):
        table.add_column(col, justify="right")
    for col in ("rate / raw (>= 0.5)", "p50 / raw (<= 1.5)", "rate / 10-agent row (>= 0.5)"):
        table.add_column(col, justify="right")
    for name, ours, raw in rows:
        table.add_row(
            name,
            f"{ours.rate:,.0f}",
            f"{ours.p50:.2f}",
            f"{ours.p99:.2f}",
            str(ours.failed),
            f"{raw.rate:,.0f}" if raw else "-",
            f"{raw.p50:.2f}" if raw else "-",
            f"{raw.p99:.2f}" if raw else "-",
            f"{ours.rate / raw.rate:.2f}" if raw else "-",
            f"{ours.p50 / raw.p50:.2f}" if raw else "-",
            f"{ours.rate / base:.2f}",
        )
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--fanout", type=int, default=10)
    parser.add_argument("--hundred", type=int, default=100, help="agents of the second row (0: skip it)")
    parser.add_argument("--far", type=int, default=990, help="advertised agents in 4 processes (0: skip)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (alternating with raw); medians")
    ns = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    args = Args(ns.seconds, ns.warmup, ns.inflight, ns.fanout, ns.hundred, ns.far, ns.profile, ns.repeats)
    print_table(run(args), args)


if __name__ == "__main__":
    main()
