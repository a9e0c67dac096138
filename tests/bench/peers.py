"""Benchmark: Accord next to the unsigned raw nats-py floor and FastStream, multi-process, side by side in one run.

    python -m tests.bench.peers [--seconds 5] [--warmup 1.5] [--repeats 3] [--agents 10] [--inflight 8]
                                [--loop asyncio|uvloop] [--profile DIR] [--no-faststream] [--fs-shared]

Three processes per measurement, as a mesh runs: a nats-server of its own (a free 127.0.0.1 port, a temporary
dir, stopped by PID), the requester in one process and ``--agents`` worker agents in another, each agent on a
connection of its own. Accord runs authenticated as ``accord up`` runs it: every party connects as its own nkey
user with its certified permissions (spec 11.6), so receivers peek what they do not act on alone.

Workloads, each measured for raw and for Accord alternately, ``--repeats`` times (medians; ratios within the run):

- ``W3 1 at a time`` and ``W3 N in flight``: a contract-net round. A call for proposals to every agent, one bid
  from each, an award to the best, the answer. Raw (``tests.bench.raw_rounds``, unsigned): msgpack messages on
  nats-py, task -> bids -> award -> result, nothing signed or checked. Accord: the Requester and Agent shells,
  every frame signed, bids peeked, the winning bid, result and attestation verified (and the AwardAck, when the
  work outlasts the winner's ack delay, spec 5.6), the losers told.
- ``W1 one agent``: raw nats-py request/reply to one agent, next to Accord's direct award from that agent's
  advertised price sheet (``submit(spec, agent=ID)``: Task and Award out, Result back).
- FastStream (``tests.bench.faststream_rounds``, unsigned, pydantic JSON, per-message logging off) runs the raw
  exchange as typed handlers, each agent on a broker (connection) of its own like the others, or with
  ``--fs-shared`` every agent on the process's one broker (FastStream's usual shape: ten handlers, one socket).

Per workload it prints ops/s, p50 and p99 latency, the ratios to raw, and the CPU per op of each role (the
requester's process, the agents' process, the nats-server), from ``getrusage`` of each process over the measured
window; for Accord also the signatures made and checked per op on each side, and by an agent that lost a round.
Goals (issue "speed"): W3 1 at a time >= 0.5x raw and p50 <= 2.2x raw; W3 in flight >= 0.5x raw; W1 >= 0.5x raw
and p50 <= 2x raw; a losing agent spends at most one signature (its bid) and no signature check.
``--profile DIR`` runs the Accord processes under cProfile and prints where their time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import nats
import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg
from rich.console import Console
from rich.table import Table

from accord.bus.server import NatsServer, NkeyUser
from accord.mesh.auth import connect_as, mesh_users
from accord.mesh.build import build_agent_parts
from accord.mesh.state import REQUESTER_NAME
from accord.protocol.requester import RequesterConfig
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester
from accord.runtime.timers import now_ns
from accord.security import Identity
from accord.security.ed25519 import counts as signatures
from tests.bench.faststream_rounds import FsAgents, FsRequester, fs_broker
from tests.bench.raw_rounds import RawAgent, RawRequester, RawResult, _Key, drive, interest_registered, keyring
from tests.bench.rounds import Mesh, stop_all, task_spec
from tests.support.paths import REPO_ROOT

WORKLOADS = ("w3_seq", "w3_par", "w1")
_CONTROL = "bench.ctl"
_RAW_REQUESTER = "requester"


@dataclass(frozen=True)
class Setup:
    """What every process of one run needs (written to a JSON file in the run's temporary dir)."""

    root: str
    url: str
    server_pid: int
    raw_seed: str
    """The nkey user raw connections and the control channel use (no permission limits)."""
    seconds: float
    warmup: float
    agents: int
    inflight: int
    loop: str
    profile: str | None
    fs_shared: bool
    """FastStream's agents share one broker (one connection) instead of one each."""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__), encoding="utf-8")

    @classmethod
    def load(cls, path: str) -> Setup:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def mesh(self) -> Mesh:
        return Mesh.load(Path(self.root))

    def raw_names(self) -> list[str]:
        return [f"agent{i}" for i in range(self.agents)]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run(main: Callable[[], Awaitable[None]], loop: str) -> None:
    anyio.run(main, backend_options={"use_uvloop": loop == "uvloop"})


@contextmanager
def _profiled(setup: Setup, role: str) -> Iterator[None]:
    if setup.profile is None:
        yield
        return
    prof = cProfile.Profile(time.process_time)  # CPU time: wall time would charge a send() with whatever ran
    prof.enable()  # on the core meanwhile (the receiver it woke up, other jobs on a loaded machine)
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(str(Path(setup.profile) / f"{role}.prof"))


# --- the agents' process ----------------------------------------------------------------------------------------
async def serve_agents(setup: Setup, mode: str) -> None:
    """Run the agents until SIGINT or SIGTERM; answer the control channel with this process's CPU and counts."""
    agents: list[Agent] = []
    conns: list[Client] = []
    async with anyio.create_task_group() as tg:
        control = await nats.connect(setup.url, name="bench-control", nkeys_seed_str=setup.raw_seed)
        conns.append(control)
        brokers: list[Any] = []
        if mode == "raw":
            names = setup.raw_names()
            keys = keyring([*names, _RAW_REQUESTER])
            for name in names:
                nc = await nats.connect(setup.url, name=name, nkeys_seed_str=setup.raw_seed)
                conns.append(nc)
                await RawAgent(nc, _Key(name), keys, signed=False).start()
        elif mode == "faststream":
            names = setup.raw_names()
            groups = [names] if setup.fs_shared else [[name] for name in names]
            for group in groups:  # one broker per agent (each its own connection, like the others) or one shared
                broker = fs_broker(setup.url, f"fs-{group[0]}", setup.raw_seed)
                FsAgents(broker, group)
                await broker.start()
                brokers.append(broker)
        else:
            mesh = setup.mesh()
            for i, (name, config) in enumerate(mesh.near[: setup.agents]):
                bus = await connect_as(setup.url, mesh.identities[name], name=name).connect()
                profile, backends = build_agent_parts(config, name, seed=i)
                agent = Agent(
                    mesh.identities[name],
                    profile,
                    backends,
                    bus=bus,
                    trust=mesh.trust,
                    rng=random.Random(i),
                    stream_progress=False,
                    service=False,
                    authenticated_bus=True,
                )
                agents.append(agent)
                await tg.start(agent.run)

        async def on_control(msg: Msg) -> None:
            totals = {"tasks": 0, "bids": 0, "awards": 0, "acks": 0, "cancels": 0, "results": 0}
            for agent in agents:
                for key in totals:
                    totals[key] += getattr(agent.stats, key)
            reply = {"cpu": _cpu_s(), "signed": signatures.signed, "checked": signatures.checked, **totals}
            await msg.respond(json.dumps(reply).encode())

        await control.subscribe(f"{_CONTROL}.{mode}", cb=on_control)
        await interest_registered(control)
        print("ready", flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        for agent in agents:
            await agent.stop()
        for broker in brokers:
            await broker.stop()
        tg.cancel_scope.cancel()
    for nc in conns:
        await nc.close()


# --- the requester's process ------------------------------------------------------------------------------------
@dataclass
class _Window:
    """CPU of each process and the agents' counts at the start of a measured window, then their differences."""

    control: Client
    mode: str
    server: psutil.Process
    start: dict[str, float] | None = None
    delta: dict[str, float] | None = None

    async def snapshot(self) -> dict[str, float]:
        reply = await self.control.request(f"{_CONTROL}.{self.mode}", b"", timeout=10)
        agents = json.loads(reply.data)
        server = self.server.cpu_times()
        out = {f"agents_{k}": float(v) for k, v in agents.items()}
        out.update(
            requester_cpu=_cpu_s(),
            requester_signed=signatures.signed,
            requester_checked=signatures.checked,
            server_cpu=server.user + server.system,
        )
        return out

    async def __call__(self, opening: bool) -> None:
        now = await self.snapshot()
        if opening:
            self.start = now
        else:
            assert self.start is not None
            self.delta = {k: now[k] - self.start[k] for k in now}


class _Peer(Protocol):
    """An unsigned requester of the raw or FastStream exchange."""

    async def round(self, invited: list[str]) -> None: ...

    async def ask(self, agent: str) -> None: ...


_Steps = dict[str, tuple[Callable[[], Awaitable[Any]], int]]
"""Workload -> (one operation, how many run at once)."""


def _peer_steps(peer: _Peer, names: list[str], inflight: int) -> _Steps:
    """An unsigned peer's workloads: a round to every agent, one at a time and ``inflight`` at once; one ask."""
    return {
        "w3_seq": (lambda: peer.round(names), 1),
        "w3_par": (lambda: peer.round(names), inflight),
        "w1": (lambda: peer.ask(names[0]), 1),
    }


async def serve_requester(setup: Setup, mode: str) -> None:
    """Run every workload against the agents' process; one JSON line per workload on stdout."""
    control = await nats.connect(setup.url, name="bench-control-req", nkeys_seed_str=setup.raw_seed)
    window = _Window(control, mode, psutil.Process(setup.server_pid))
    if mode == "raw":
        names = setup.raw_names()
        nc = await nats.connect(setup.url, name="raw-requester", nkeys_seed_str=setup.raw_seed)
        raw = RawRequester(nc, _Key(_RAW_REQUESTER), keyring([*names, _RAW_REQUESTER]), signed=False)
        await raw.start()
        await _ready()
        await _measure(setup, _peer_steps(raw, names, setup.inflight), window)
        await nc.close()
    elif mode == "faststream":
        names = setup.raw_names()
        broker = fs_broker(setup.url, "fs-requester", setup.raw_seed)
        fs = FsRequester(broker, _RAW_REQUESTER)
        await broker.start()
        await _ready()
        await _measure(setup, _peer_steps(fs, names, setup.inflight), window)
        await broker.stop()
    else:
        mesh = setup.mesh()
        me = mesh.identities[REQUESTER_NAME]
        ids = [mesh.identities[n].id for n, _ in mesh.near[: setup.agents]]
        async with connect_as(setup.url, me, name="bench-requester") as bus:
            requester = Requester(
                me,
                bus=bus,
                trust=mesh.trust,
                max_in_flight=64,
                rng=random.Random(1),
                config=RequesterConfig(shortlist_k=setup.agents, ack_timeout_ms=1000),
                service=False,
                authenticated_bus=True,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(requester.run)
                await _ready()
                with anyio.fail_after(60):
                    while not all(requester.registry.get(a, now=now_ns()) for a in ids):  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                counter = iter(range(1 << 62))
                steps: _Steps = {
                    "w3_seq": (lambda: requester.submit(task_spec(next(counter))), 1),
                    "w3_par": (lambda: requester.submit(task_spec(next(counter))), setup.inflight),
                    "w1": (lambda: requester.submit(task_spec(next(counter)), agent=ids[0]), 1),
                }
                with _profiled(setup, "requester"):
                    await _measure(setup, steps, window)
                tg.cancel_scope.cancel()
    await control.close()


async def _ready() -> None:
    """Say this process listens, then wait for the orchestrator's go (the agents are up)."""
    print("listening", flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)


async def _measure(setup: Setup, steps: _Steps, window: _Window) -> None:
    for name in WORKLOADS:
        step, inflight = steps[name]
        result: RawResult = await drive(
            step, inflight=inflight, seconds=setup.seconds, warmup_s=setup.warmup, on_window=window
        )
        assert window.delta is not None
        line = {"workload": name, "ops": result.rounds, "seconds": result.seconds, "lat": result.latencies_ms}
        print(json.dumps({**line, **window.delta}), flush=True)


# --- the orchestrator -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """One workload of one mode in one session."""

    ops: int
    seconds: float
    latencies_ms: list[float]
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    def per_op(self, key: str) -> float:
        return self.cpu.get(key, 0.0) / max(1, self.ops)


def _spawn(setup_file: Path, role: str, mode: str, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bench.peers", "--serve", role, "--mode", mode, "--setup", str(setup_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("a"),
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
    )


def _expect(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != word:
        raise RuntimeError(f"expected {word!r} from pid {proc.pid}, got {line!r} (see the bench's logs)")


def session(setup_file: Path, mode: str, logs: Path) -> dict[str, Measured]:
    """One requester process and one agents process of ``mode``; every workload once."""
    requester = _spawn(setup_file, "requester", mode, logs / f"requester-{mode}.log")
    agents: subprocess.Popen[str] | None = None
    out: dict[str, Measured] = {}
    try:
        _expect(requester, "listening")
        agents = _spawn(setup_file, "agents", mode, logs / f"agents-{mode}.log")
        _expect(agents, "ready")
        assert requester.stdin is not None and requester.stdout is not None
        requester.stdin.write("go\n")
        requester.stdin.flush()
        for line in requester.stdout:
            row = json.loads(line)
            cpu = {k: float(v) for k, v in row.items() if k not in ("workload", "ops", "seconds", "lat")}
            out[row["workload"]] = Measured(row["ops"], row["seconds"], row["lat"], cpu)
        requester.wait(60)
        if requester.returncode != 0 or len(out) != len(WORKLOADS):
            tails = "\n".join(
                f"--- {f.name}:\n{f.read_text()[-3000:]}" for f in sorted(logs.glob(f"*-{mode}.log"))
            )
            raise RuntimeError(f"the {mode} requester failed (exit {requester.returncode})\n{tails}")
    finally:
        stop_all([requester] if agents is None else [requester, agents])
    return out


def median_session(runs: list[Measured]) -> Measured:
    ranked = sorted(runs, key=lambda m: m.rate)
    return ranked[len(ranked) // 2]


@dataclass
class Args:
    seconds: float = 5.0
    warmup: float = 1.5
    repeats: int = 3
    agents: int = 10
    inflight: int = 8
    loop: str = "asyncio"
    profile: str | None = None
    faststream: bool = True
    fs_shared: bool = False

    @property
    def modes(self) -> tuple[str, ...]:
        return ("raw", "accord", "faststream") if self.faststream else ("raw", "accord")


def run(args: Args) -> dict[str, dict[str, Measured]]:
    """Every workload for each mode (raw, Accord, FastStream), alternated ``repeats`` times; the median session
    of each."""
    root = Path(tempfile.mkdtemp(prefix="accord-peers-"))
    runs: dict[str, dict[str, list[Measured]]] = {m: {w: [] for w in WORKLOADS} for m in args.modes}
    try:
        mesh = Mesh(root, args.agents, 0)
        raw_user = Identity.generate()
        users = [*mesh_users(mesh.trust, now_ns()), NkeyUser(raw_user.id)]
        logs = root / "logs"
        logs.mkdir()
        with NatsServer(jetstream=False, users=users, store_dir=root / "nats") as server:
            assert server.pid is not None
            setup = Setup(
                str(root), server.url, server.pid, raw_user.seed, args.seconds, args.warmup, args.agents,
                args.inflight, args.loop, args.profile, args.fs_shared,
            )  # fmt: skip
            setup_file = root / "setup.json"
            setup.save(setup_file)
            for _ in range(args.repeats):
                for mode in args.modes:
                    for workload, measured in session(setup_file, mode, logs).items():
                        runs[mode][workload].append(measured)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {mode: {w: median_session(r) for w, r in by.items()} for mode, by in runs.items()}


_TITLES = {"w3_seq": "W3, 1 at a time", "w3_par": "W3, {n} in flight", "w1": "W1, one agent"}
_GOALS = {"w3_seq": (0.5, 2.2), "w3_par": (0.5, None), "w1": (0.5, 2.0)}


def print_tables(result: dict[str, dict[str, Measured]], args: Args) -> None:
    console = Console(width=220)
    load = os.getloadavg()
    table = Table(
        title=f"raw nats-py (unsigned) vs Accord (signed, authenticated bus), {args.agents} agents in one "
        f"process, the requester in another; loop {args.loop}; median of {args.repeats} sessions of "
        f"{args.seconds:.0f} s; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    for col in ("workload", "raw ops/s", "raw p50", "raw p99", "Accord ops/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for col in (
        "ops / raw",
        "p50 / raw",
        "goal",
        "CPU ms/op req raw|Accord",
        "agents raw|Accord",
        "server raw|Accord",
    ):
        table.add_column(col, justify="right")
    for w in WORKLOADS:
        raw, ours = result["raw"][w], result["accord"][w]
        rate_goal, p50_goal = _GOALS[w]
        ratio, p50_ratio = ours.rate / raw.rate, ours.pct(0.5) / raw.pct(0.5)
        met = ratio >= rate_goal and (p50_goal is None or p50_ratio <= p50_goal)
        goal = f">={rate_goal}" + (f", <={p50_goal}" if p50_goal else "") + (" met" if met else " MISSED")
        table.add_row(
            _TITLES[w].format(n=args.inflight),
            f"{raw.rate:,.0f}",
            f"{raw.pct(0.5):.2f}",
            f"{raw.pct(0.99):.2f}",
            f"{ours.rate:,.0f}",
            f"{ours.pct(0.5):.2f}",
            f"{ours.pct(0.99):.2f}",
            f"{ratio:.2f}",
            f"{p50_ratio:.2f}",
            goal,
            *(
                f"{raw.per_op(k) * 1e3:.2f} | {ours.per_op(k) * 1e3:.2f}"
                for k in ("requester_cpu", "agents_cpu", "server_cpu")
            ),
        )
    console.print(table)
    if "faststream" in result:
        brokers = "one broker for all agents" if args.fs_shared else "one broker (connection) per agent"
        peer = Table(title=f"FastStream over NATS (unsigned, pydantic JSON, {brokers}), same run")
        for col in ("workload", "FastStream ops/s", "p50 ms", "p99 ms", "Accord / FastStream ops", "CPU ms/op req",
                    "agents", "server"):  # fmt: skip
            peer.add_column(col, justify="right")
        for w in WORKLOADS:
            fs, ours = result["faststream"][w], result["accord"][w]
            peer.add_row(
                _TITLES[w].format(n=args.inflight),
                f"{fs.rate:,.0f}",
                f"{fs.pct(0.5):.2f}",
                f"{fs.pct(0.99):.2f}",
                f"{ours.rate / fs.rate:.2f}",
                *(f"{fs.per_op(k) * 1e3:.2f}" for k in ("requester_cpu", "agents_cpu", "server_cpu")),
            )
        console.print(peer)
    crypto = Table(title="Accord: Ed25519 signatures made / checked per op, by role")
    for col in ("workload", "requester", "agents (all)", "the winner", "an agent that lost"):
        crypto.add_column(col, justify="right")
    for w in WORKLOADS:
        m = result["accord"][w]
        c = m.cpu
        awards = max(1.0, c.get("agents_awards", 0.0))
        losers = max(0.0, c.get("agents_tasks", 0.0) - c.get("agents_awards", 0.0))
        # the winner signs its bid (none after a direct award), result and attestation, and an AwardAck when its
        # Result did not come within the ack delay (spec 5.6); it checks the award
        winner_signed = (3.0 if w != "w1" else 2.0) * awards + c.get("agents_acks", 0.0)
        loser = "-"
        if losers:
            signed, checked = c["agents_signed"] - winner_signed, c["agents_checked"] - awards
            loser = f"{signed / losers:.2f} / {checked / losers:.2f}"
        crypto.add_row(
            _TITLES[w].format(n=args.inflight),
            f"{m.per_op('requester_signed'):.2f} / {m.per_op('requester_checked'):.2f}",
            f"{m.per_op('agents_signed'):.2f} / {m.per_op('agents_checked'):.2f}",
            f"{winner_signed / awards:.0f} / 1",
            loser,
        )
    console.print(crypto)


def print_profiles(directory: Path, lines: int = 30) -> None:
    for role in ("requester", "agents"):
        path = directory / f"{role}.prof"
        if path.exists():
            buf = io.StringIO()
            pstats.Stats(str(path), stream=buf).sort_stats("tottime").print_stats(lines)
            print(f"--- {role} (cProfile, by own time) ---\n{buf.getvalue()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--repeats", type=int, default=3, help="sessions per mode, alternating; medians")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--profile", default=None, help="a directory: profile the Accord processes into it")
    parser.add_argument(
        "--faststream", action=argparse.BooleanOptionalAction, default=True, help="also run FastStream's round"
    )
    parser.add_argument("--serve", choices=("agents", "requester"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--fs-shared",
        action="store_true",
        help="FastStream's agents on one broker (one connection) in their process",
    )
    parser.add_argument("--mode", choices=("raw", "accord", "faststream"), help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.serve is not None:
        import logging

        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        setup = Setup.load(ns.setup)
        if ns.mode != "accord":
            setup = Setup(**{**setup.__dict__, "profile": None})
        if ns.serve == "agents":
            with _profiled(setup, "agents"):
                _run(lambda: serve_agents(setup, ns.mode), setup.loop)
        else:
            _run(lambda: serve_requester(setup, ns.mode), setup.loop)
        return
    args = Args(
        ns.seconds, ns.warmup, ns.repeats, ns.agents, ns.inflight, ns.loop, ns.profile, ns.faststream, ns.fs_shared
    )
    if args.profile is not None:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    print_tables(run(args), args)
    if args.profile is not None:
        print_profiles(Path(args.profile))


if __name__ == "__main__":
    main()
