"""Fuzzing the receive path (issue 15): valid signed frames of every message type, mutated, fed to every receive
path. Used by ``python -m tests.bench.fuzz_frames`` (10^6 frames) and tests/unit/security/test_receive_fuzz.py.

A frame must end received (the path took it) or refused with a typed :class:`~accord.errors.AccordError` (raised
by a security function, or counted by a shell, which catches its refusals); any other exception is a crash, kept
with the frame's hex. Targets: ``open_frame`` and ``peek`` (they raise their refusals), and the shells' receive
functions (they count theirs): ``Agent._receive`` (calls for proposals and the inbox), ``Requester._receive`` (its
inbox, with a task collecting bids) and ``Requester._receive_advert``, each on any bus and on a bus that
authenticates publishers. The shells' machines run for real on what gets through, so a fuzzed but valid message
(re-signed after its payload was mutated) reaches them; their invariants are checked as the run goes.

Mutations: bit flips, byte sets and truncation of the frame; two frames spliced; random bytes; random msgpack; a
random value at a random path of the envelope; a mutated payload (a bit flip, a random value at a random path, a
number swapped for a bound, a clock just off or a week out) re-signed by its true signer, so that it passes the
signature and tests decoding, validation and the machines, or not re-signed (peeked paths decode it); a valid
frame as is (a replay from the second time on); a valid frame on another publisher's subject.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from anyio.abc import TaskGroup

from accord.bus.base import BusMessage
from accord.bus.memory import MemoryBroker
from accord.errors import AccordError
from accord.protocol import subjects
from accord.protocol.codec import encode
from accord.protocol.events import Start
from accord.protocol.messages import Advertise, Award, Cancel, Message, Privacy, Task, Tier, Withdraw
from accord.runtime.agent import Agent
from accord.runtime.endpoint import Endpoint
from accord.runtime.requester import Requester
from accord.security import Identity, ReplayGuard, open_frame, peek, seal
from accord.security.envelope import PAYLOAD_TYPE_FRAME, encode_envelope, sign_envelope
from accord.security.testing import Pki
from accord.spec.message_vectors import CONTRACTOR, DEVICE_AGENT, REQUESTER, message_vectors
from accord.spec.story import T0_NS
from tests.support.mutations import (
    INTERESTING_BYTES,
    bitflip,
    byte_set,
    random_value,
    set_random_path,
    splice,
    truncate,
)
from tests.support.runtime_kit import make_profile, sim_backend, spec, wait_for

__all__ = ["MUTATIONS", "Crash", "FrameFuzzer", "FuzzReport"]

_NS_FIELDS = frozenset({"ts", "expires_ns", "valid_until_ns", "deadline_ns", "ack_by_ns", "lease_until_ns"})


@dataclass(frozen=True)
class Seed:
    message: Message
    frame: bytes
    signer: Identity
    to_agent: bool
    """Addressed to the agent (Task, Award, Cancel); else to the requester."""


@dataclass(frozen=True)
class Crash:
    mutation: str
    target: str
    error: str
    frame_hex: str


@dataclass
class FuzzReport:
    frames: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(mutation, outcome) -> frames; outcome: ``received``, ``refused:<reason>`` or ``crash``."""
    targets: Counter[str] = field(default_factory=Counter)
    crashes: list[Crash] = field(default_factory=list)
    crash_count: int = 0
    seconds: float = 0.0

    @property
    def typed_refusals(self) -> int:
        return sum(n for (_, outcome), n in self.outcomes.items() if outcome.startswith("refused:"))


Receive = Callable[[bytes], object]


def _shell_outcome(endpoint: Endpoint[Any], before: dict[str, int]) -> str:
    """What a shell did with a frame, from its refusal counts (it never raises a refusal)."""
    for reason, n in endpoint.refusals.items():
        if n != before.get(reason, 0):
            return f"refused:{reason}"
    return "received"


def _numbers(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The paths of the numbers in ``value`` (builtins)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, (*path, i))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``value`` with ``new`` at ``path``."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _set(value[head], rest, new)
    return copy


def _rebase(value: Any, shift: int, ids: dict[str, str]) -> Any:
    """``value`` (builtins) with its times moved by ``shift`` ns and its agent and task ids replaced."""
    if isinstance(value, dict):
        return {
            k: (v + shift if k in _NS_FIELDS and isinstance(v, int) else _rebase(v, shift, ids))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rebase(v, shift, ids) for v in value]
    if isinstance(value, str):
        return ids.get(value, value)
    return value


class FrameFuzzer:
    """The receivers, the seeds and the mutations of one seeded run: build it, ``await start(tg)`` in a task group,
    then :meth:`run` (synchronous: the requesters' timers wait, their tasks stay open)."""

    def __init__(self, seed: int, *, now: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.pki = Pki(random.Random(seed))
        self.requester_id = self.pki.agent("requester")
        self.contractor = self.pki.agent("contractor", tier=Tier.EDGE, region="eu-central", residency=("eu",))
        self.device = self.pki.agent("device", tier=Tier.DEVICE, region="eu-central", residency=("eu",))
        self.broker = MemoryBroker(seed=seed)
        profile = make_profile("fuzzed", residency=("eu",), privacy=(Privacy.PUBLIC, Privacy.INTERNAL))
        agent_id = self.pki.agent("fuzzed", tier=profile.tier, region=profile.region, residency=("eu",))
        self.agents = {  # one identity, so that every seed addressed to it reaches either
            auth: Agent(
                agent_id,
                profile,
                {"sim-small": sim_backend()},
                bus=self.broker.bus(),
                trust=self.pki.trust,
                rng=random.Random(seed),
                service=False,
                authenticated_bus=auth,
            )
            for auth in (False, True)
        }
        for agent in self.agents.values():
            agent._apply(agent.machine.handle(Start(), now=agent.clock()))
        self.requesters = {
            auth: Requester(
                self.requester_id,
                bus=self.broker.bus(),
                trust=self.pki.trust,
                authenticated_bus=auth,
                service=False,
            )
            for auth in (False, True)
        }
        self.now = now if now is not None else time.time_ns()
        self.seeds: list[Seed] = []
        self._guard = ReplayGuard(start_ns=self.now)
        n = self.now
        self._boundaries: tuple[int | float, ...] = (
            0, 1, 2, 1000, 2**31 - 1, 2**63 - 1, -1, 0.5, n, n - 10**9, n - 70 * 10**9, n + 4 * 10**9,
            n + 10 * 10**9, n + 7 * 24 * 3600 * 10**9,
        )  # fmt: skip
        """Numbers a re-signed payload may carry instead of one of its own: bounds, clocks just off, a week out."""

    async def start(self, tg: TaskGroup) -> None:
        """Run the requesters, each with a task collecting bids for the next half hour, and make the seeds."""
        task_ids: list[str] = []
        for requester in self.requesters.values():
            await tg.start(requester.run)
            tg.start_soon(requester.submit, spec(deadline_ms=3_600_000, bid_window_ms=1_800_000))
            await wait_for(lambda r=requester: bool(r._tasks), what="the requester's task")  # type: ignore[misc]
            task_ids.append(next(iter(requester._tasks)))
        self.make_seeds(task_ids)

    def make_seeds(self, task_ids: list[str]) -> None:
        """One valid signed frame of each message type per requester task, its times moved to now and its parties
        to this run's identities (Task, Award and Cancel go from the requester to the agent)."""
        signers = {i.id: i for i in (self.requester_id, self.contractor, self.device)}
        ids = {REQUESTER: self.requester_id.id, CONTRACTOR: self.contractor.id, DEVICE_AGENT: self.device.id}
        to_the_agent = {**ids, CONTRACTOR: self.agents[False].id}
        for task_id in task_ids:
            for vector in message_vectors():
                message = vector.message
                to_agent = isinstance(message, Task | Award | Cancel)
                data = msgspec.to_builtins(message, builtin_types=(bytes,))
                data = _rebase(data, self.now - T0_NS, to_the_agent if to_agent else ids)
                if "task_id" in data and not to_agent:
                    data["task_id"] = task_id
                rebuilt = msgspec.convert(data, type(message), builtin_types=(bytes,))
                signer = signers[rebuilt.sender]
                self.seeds.append(Seed(rebuilt, seal(rebuilt, signer), signer, to_agent))

    # --- mutations -----------------------------------------------------------------------------------------------
    def _signed(self, payload: bytes, signer: Identity) -> bytes:
        return encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, payload, signer))

    def _unsigned(self, payload: bytes, seed: Seed) -> bytes:
        envelope = msgspec.msgpack.decode(seed.frame)
        return msgspec.msgpack.encode({**envelope, "payload": payload})

    def mutate(self, name: str, seed: Seed, other: Seed) -> tuple[bytes, str]:
        """The mutated frame and the publisher it arrives as (the subject's last token)."""
        rng = self.rng
        publisher = seed.signer.id
        payload = encode(seed.message)
        if name == "bitflip":
            return bitflip(seed.frame, rng), publisher
        if name == "byte_set":
            return byte_set(seed.frame, rng, INTERESTING_BYTES), publisher
        if name == "truncate":
            return truncate(seed.frame, rng), publisher
        if name == "splice":
            return splice(seed.frame, other.frame, rng), publisher
        if name == "random_bytes":
            return rng.randbytes(rng.randint(0, 2048)), publisher
        if name == "random_msgpack":
            return msgspec.msgpack.encode(random_value(rng)), publisher
        if name == "envelope_field":
            envelope = msgspec.msgpack.decode(seed.frame)
            return msgspec.msgpack.encode(set_random_path(envelope, rng, random_value(rng))), publisher
        if name == "payload_bitflip_signed":
            return self._signed(bitflip(payload, rng), seed.signer), publisher
        if name in ("payload_field_signed", "payload_field_unsigned"):
            data = msgspec.msgpack.decode(payload)
            changed = msgspec.msgpack.encode(set_random_path(data, rng, random_value(rng)))
            signed = name == "payload_field_signed"
            return (self._signed(changed, seed.signer) if signed else self._unsigned(changed, seed)), publisher
        if name == "payload_number_signed":
            data = msgspec.msgpack.decode(payload)
            numbers = list(_numbers(data))
            if numbers:
                path = rng.choice(numbers)
                data = _set(data, path, rng.choice(self._boundaries))
            return self._signed(msgspec.msgpack.encode(data), seed.signer), publisher
        if name == "valid":
            return seed.frame, publisher
        if name == "wrong_publisher":
            return seed.frame, other.signer.id
        raise ValueError(name)

    # --- targets -------------------------------------------------------------------------------------------------
    def _targets(self, seed: Seed, publisher: str) -> list[tuple[str, Receive, Endpoint[Any] | None]]:
        """Where a frame like ``seed``'s may go: the security functions, and the shell path it is meant for on
        either bus (with the endpoint whose refusal counts tell its outcome)."""
        trust = self.pki.trust
        guard = self._guard

        def security(frame: bytes) -> object:
            return open_frame(frame, trust, guard, self.now, publisher=publisher)

        def peeked(frame: bytes) -> object:
            return peek(frame, trust=trust, now_ns=self.now, publisher=publisher)

        out: list[tuple[str, Receive, Endpoint[Any] | None]] = [
            ("open_frame", security, None),
            ("peek", peeked, None),
        ]
        for auth, label in ((False, "any bus"), (True, "authenticated bus")):
            path, receive, endpoint = self._shell(seed, publisher, auth)
            out.append((f"{path}, {label}", receive, endpoint))
        return out

    def _shell(self, seed: Seed, publisher: str, auth: bool) -> tuple[str, Receive, Endpoint[Any]]:
        """The shell's receive function for a frame like ``seed``'s, on the subject ``publisher`` publishes on."""
        agent, requester = self.agents[auth], self.requesters[auth]
        if isinstance(seed.message, Task):
            cfp = subjects.announce(None, None, "chat", publisher)
            return "agent cfp", lambda f: agent._receive(BusMessage(cfp, f), broadcast=True), agent
        if seed.to_agent:
            inbox = subjects.direct(agent.id, publisher)
            return "agent inbox", lambda f: agent._receive(BusMessage(inbox, f), broadcast=False), agent
        if isinstance(seed.message, Advertise | Withdraw):
            adverts = subjects.advertise(Tier.EDGE, "eu-central", publisher)
            return "requester adverts", lambda f: requester._receive_advert(BusMessage(adverts, f)), requester
        direct = subjects.direct(requester.id, publisher)
        return "requester inbox", lambda f: requester._receive(BusMessage(direct, f)), requester

    def run(self, n: int, *, on_progress: Callable[[int], None] | None = None, keep: int = 10) -> FuzzReport:
        """Fuzz ``n`` frames; keep the first ``keep`` crashes in full."""
        report = FuzzReport()
        rng = self.rng
        start = time.perf_counter()
        for i in range(n):
            seed, other = rng.choice(self.seeds), rng.choice(self.seeds)
            name = MUTATIONS[i % len(MUTATIONS)]
            frame, publisher = self.mutate(name, seed, other)
            targets = self._targets(seed, publisher)
            target, receive, endpoint = targets[(i // len(MUTATIONS)) % len(targets)]
            report.targets[target] += 1
            before = dict(endpoint.refusals) if endpoint is not None else {}
            try:
                receive(frame)
                outcome = "received" if endpoint is None else _shell_outcome(endpoint, before)
            except AccordError as exc:
                outcome = f"refused:{getattr(exc, 'reason', type(exc).__name__)}"
            except Exception as exc:
                outcome = "crash"
                report.crash_count += 1
                if len(report.crashes) < keep:
                    error = "".join(traceback.format_exception_only(exc)).strip()
                    report.crashes.append(Crash(name, target, error, frame.hex()))
            report.outcomes[(name, outcome)] += 1
            report.frames += 1
            if (i + 1) % 10_000 == 0:
                self.check_invariants()
                if on_progress is not None:
                    on_progress(i + 1)
        self.check_invariants()
        report.seconds = time.perf_counter() - start
        return report

    def check_invariants(self) -> None:
        for agent in self.agents.values():
            agent.machine.check_invariants()
        for requester in self.requesters.values():
            for pending in requester._tasks.values():
                pending.machine.check_invariants()


MUTATIONS = (
    "bitflip",
    "byte_set",
    "truncate",
    "splice",
    "random_bytes",
    "random_msgpack",
    "envelope_field",
    "payload_bitflip_signed",
    "payload_field_signed",
    "payload_field_unsigned",
    "payload_number_signed",
    "valid",
    "wrong_publisher",
)
