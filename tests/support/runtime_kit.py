"""Helpers for the runtime tests: agents and requesters wired over a bus with a test PKI, and history checks.

Used by tests/unit/test_runtime_*.py (MemoryBus) and tests/integration/test_runtime_*.py (real nats-server).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from accord.backends import SimProfile, SimulatedBackend
from accord.backends.base import Backend, Completion, CompletionRequest, DeltaCallback
from accord.bus.base import Bus
from accord.protocol.actions import Accept, Action, Fail, Send
from accord.protocol.contractor import ContractorProfile
from accord.protocol.digests import output_digest
from accord.protocol.messages import Award, ChatMessage, Constraints, Policy, Role, Tier
from accord.protocol.requester import TaskSpec
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester, TaskFailed, TaskOutcome
from accord.security import SecurityError, TrustStore, verify_attestation
from accord.security.testing import Pki

__all__ = [
    "AgentSpec",
    "BlockingBackend",
    "History",
    "make_agent",
    "make_profile",
    "service_answers",
    "sim_backend",
    "spec",
    "wait_for",
    "wait_registry",
]


def sim_backend(
    model: str = "sim-small",
    *,
    seed: int = 0,
    realtime: bool = False,
    ttft_ms: float = 5.0,
    tokens_per_s: float = 1000.0,
    **profile: object,
) -> Backend:
    """A simulated backend (instant unless ``realtime``) serving one ``sim-*`` model; by default as fast as
    :func:`make_profile` advertises (so its simulated latency fits the lease the requester grants)."""
    sim = SimProfile(model=model, ttft_ms=ttft_ms, tokens_per_s=tokens_per_s, ttft_sigma=0.0, **profile)  # type: ignore[arg-type]
    return SimulatedBackend(sim, seed=seed, realtime=realtime)


def make_profile(
    name: str,
    *,
    model: str = "sim-small",
    price_out_per_1k_micros: int = 100,
    tokens_per_s: float = 1000.0,
    ttft_ms: int = 5,
    quality: float = 0.6,
    tier: Tier = Tier.CLOUD,
    region: str = "local",
    slots: int = 4,
    residency: tuple[str, ...] = (),
    **extra: object,
) -> ContractorProfile:
    """A contractor profile whose single model is priced and timed as given (latency estimates follow it)."""
    profile = SimProfile(
        model=model,
        price_out_per_1k_micros=price_out_per_1k_micros,
        tokens_per_s=tokens_per_s,
        ttft_ms=ttft_ms,
        quality_mean=quality,
        slots=slots,
    )
    return ContractorProfile(
        name=name,
        tier=tier,
        region=region,
        models=(profile.resources(),),
        slots=slots,
        residency=residency,
        **extra,  # type: ignore[arg-type]
    )


@dataclass
class AgentSpec:
    name: str
    price: int = 100
    backend: Backend | None = None
    tokens_per_s: float = 1000.0
    slots: int = 4
    tier: Tier = Tier.CLOUD


def make_agent(pki: Pki, bus: Bus, spec_: AgentSpec, *, trust: TrustStore | None = None, **kw: object) -> Agent:
    """A certified agent on ``bus`` (its own identity from the PKI's seeded rng)."""
    identity = pki.agent(spec_.name, tier=spec_.tier, region="local", residency=("eu",))
    profile = make_profile(
        spec_.name,
        price_out_per_1k_micros=spec_.price,
        tokens_per_s=spec_.tokens_per_s,
        slots=spec_.slots,
        tier=spec_.tier,
    )
    backend = (
        spec_.backend
        if spec_.backend is not None
        else sim_backend(seed=len(spec_.name), tokens_per_s=spec_.tokens_per_s)
    )
    return Agent(
        identity,
        profile,
        {"sim-small": backend},
        bus=bus,
        trust=trust if trust is not None else pki.trust,
        rng=random.Random(spec_.name),
        **kw,  # type: ignore[arg-type]
    )


def spec(
    content: str = "What is 2+2?",
    *,
    deadline_ms: int = 5_000,
    max_price_micros: int = 100_000,
    max_output_tokens: int = 32,
    bid_window_ms: int = 50,
    **constraints: object,
) -> TaskSpec:
    return TaskSpec(
        messages=[ChatMessage(role=Role.USER, content=content)],
        constraints=Constraints(
            deadline_ns=time.time_ns() + deadline_ms * 1_000_000,
            max_price_micros=max_price_micros,
            **constraints,  # type: ignore[arg-type]
        ),
        max_output_tokens=max_output_tokens,
        est_input_tokens=8,
        bid_window_ms=bid_window_ms,
        policy=Policy(lambda_price=1000.0),
    )


async def wait_for(cond: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "condition") -> None:
    with anyio.fail_after(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling state that has no event of its own
            await anyio.sleep(0.01)


async def wait_registry(requester: Requester, agents: Sequence[Agent | str], *, timeout_s: float = 10.0) -> None:
    """Wait until the requester's registry holds every agent's advert."""
    ids = [a if isinstance(a, str) else a.id for a in agents]
    await wait_for(
        lambda: all(requester.registry.get(i, now=time.time_ns()) is not None for i in ids),
        timeout_s=timeout_s,
        what="adverts",
    )


async def service_answers(bus: Bus, subject: str, *, expect: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Publish a NATS service-protocol request ($SRV.PING, INFO, STATS) and return its answers as soon as
    ``expect`` have come; with ``expect=0``, once the server reports that nobody listens (status 503). Waits on
    the answers themselves, never on a time window: more time only fails the test later."""
    inbox = f"_INBOX.accord-test.{random.getrandbits(64):x}"
    answers: list[dict[str, Any]] = []
    with anyio.fail_after(timeout_s):
        async with await bus.subscribe(inbox) as sub:
            await bus.publish(subject, b"", reply=inbox)
            async for msg in sub:
                if msg.data:
                    answers.append(json.loads(msg.data))
                else:  # a status message: 503, nobody listens
                    assert msg.headers is not None and msg.headers.get("Status") == "503", msg.headers
                    assert expect == 0, f"no responders on {subject}, {expect} expected"
                if len(answers) >= expect:
                    break
    return answers


class BlockingBackend:
    """A backend that blocks until released (or cancelled), recording what happened to each call."""

    def __init__(self, model: str = "sim-small") -> None:
        self._model = model
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.calls = 0
        self.cancelled = 0
        self._called = anyio.Event()

    @property
    def name(self) -> str:
        return "blocking"

    async def wait_calls(self, n: int) -> None:
        """Return once ``n`` calls have started (each of them waits for ``release``)."""
        while self.calls < n:
            self._called = anyio.Event()
            await self._called.wait()

    @property
    def model(self) -> str:
        return self._model

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        from accord.protocol.messages import Timings, Usage

        self.calls += 1
        self.started.set()
        self._called.set()
        try:
            await self.release.wait()
        except BaseException:
            self.cancelled += 1
            raise
        return Completion(text="released", model=self._model, usage=Usage(), timings=Timings())

    async def aclose(self) -> None:
        return None


# --- history: what the market did, and the invariants it must keep ----------------------------------------------
@dataclass
class TaskRecord:
    requester: str
    task_id: str
    deadline_ns: int = 0
    awards: list[Award] = field(default_factory=list)
    accepted: list[Accept] = field(default_factory=list)
    failed: list[Fail] = field(default_factory=list)
    ended_ns: int | None = None
    outcome: TaskOutcome | None = None
    error: TaskFailed | None = None
    attestation_ok: bool | None = None


class History:
    """Records every award, accept and fail the requesters' machines produce (through ``Requester.observer``),
    and what ``submit`` returned; :meth:`violations` checks the market's invariants on it."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self.tasks: dict[tuple[str, str], TaskRecord] = {}
        self.by_task: dict[str, TaskRecord] = {}

    def observer(self, requester: str) -> Callable[[str, Action, int], None]:
        def observe(task_id: str, action: Action, now: int) -> None:
            rec = self.by_task.get(task_id)
            if rec is None:
                rec = self.by_task[task_id] = self.tasks[(requester, task_id)] = TaskRecord(requester, task_id)
            if isinstance(action, Send) and isinstance(action.message, Award):
                rec.awards.append(action.message)
            elif isinstance(action, Accept):
                rec.accepted.append(action)
                rec.ended_ns = now if rec.ended_ns is None else rec.ended_ns
            elif isinstance(action, Fail):
                rec.failed.append(action)
                rec.ended_ns = now if rec.ended_ns is None else rec.ended_ns

        return observe

    async def submit(self, requester: Requester, spec_: TaskSpec) -> TaskOutcome | TaskFailed:
        """Submit through ``requester`` and record what came back (the outcome, or the TaskFailed)."""
        try:
            outcome: TaskOutcome | TaskFailed = await requester.submit(spec_)
        except TaskFailed as exc:
            outcome = exc
        rec = self.by_task.get(outcome.task_id)
        if rec is None:  # failed before the machine produced any action (cannot happen: Fail is an action)
            rec = self.by_task[outcome.task_id] = TaskRecord(requester.id, outcome.task_id)
        rec.deadline_ns = spec_.constraints.deadline_ns
        if isinstance(outcome, TaskOutcome):
            rec.outcome = outcome
            rec.attestation_ok = self._attestation_ok(outcome)
        else:
            rec.error = outcome
        return outcome

    def _attestation_ok(self, outcome: TaskOutcome) -> bool:
        """Verify the accepted result's attestation again, independently of the requester."""
        result = outcome.result
        try:
            verified = verify_attestation(result.attestation, self.trust, time.time_ns())
        except SecurityError:
            return False
        st = verified.statement
        return (
            verified.signer == result.sender
            and st.task_id == result.task_id
            and st.attempt == result.attempt
            and st.output_digest == output_digest(result.output)
        )

    def counts(self) -> dict[str, object]:
        completed = sum(1 for r in self.by_task.values() if r.outcome is not None)
        failed = Counter(r.error.reason.value for r in self.by_task.values() if r.error is not None)
        reawards = sum(max(0, len(r.awards) - 1) for r in self.by_task.values())
        return {"tasks": len(self.by_task), "completed": completed, "failed": dict(failed), "reawards": reawards}

    def violations(self, *, lateness_ns: int = 0) -> list[str]:
        """Every broken invariant, as text (empty: the history is fine).

        - every task ended exactly once: completed (one Accept, an outcome) or failed (one Fail, a TaskFailed);
        - no task has two accepted results;
        - the accepted result comes from the awardee of the current (latest) attempt, answers that award, and its
          attestation verifies (checked again here, independently of the requester);
        - attempts are numbered 1, 2, ... and no agent is awarded a task twice;
        - every task ended by its deadline plus ``lateness_ns`` (the shell's timer lateness, spec 5.7).
        """
        out: list[str] = []
        for rec in self.by_task.values():
            tid = rec.task_id[:12]
            if len(rec.accepted) > 1:
                out.append(f"{tid}: {len(rec.accepted)} accepted results")
            if len(rec.accepted) + len(rec.failed) != 1:
                out.append(f"{tid}: {len(rec.accepted)} accepts and {len(rec.failed)} fails")
            if (rec.outcome is None) == (rec.error is None):
                out.append(f"{tid}: submit returned {'both' if rec.outcome else 'nothing'}")
            attempts = [a.attempt for a in rec.awards]
            if attempts != list(range(1, len(attempts) + 1)):
                out.append(f"{tid}: attempts {attempts}")
            winners = [a.winner for a in rec.awards]
            if len(set(winners)) != len(winners):
                out.append(f"{tid}: an agent was awarded twice")
            for acc in rec.accepted:
                current = rec.awards[-1] if rec.awards else None
                r = acc.result
                if current is None or r.attempt != current.attempt or r.sender != current.winner:
                    out.append(f"{tid}: accepted attempt {r.attempt} from {r.sender[:8]}, not the current awardee")
                elif r.award_id != current.id or acc.award.id != current.id:
                    out.append(f"{tid}: accepted result answers another award")
            if rec.outcome is not None and not rec.attestation_ok:
                out.append(f"{tid}: accepted result's attestation does not verify")
            if rec.ended_ns is None:
                out.append(f"{tid}: never ended")
            elif rec.deadline_ns and rec.ended_ns > rec.deadline_ns + lateness_ns:
                late_ms = (rec.ended_ns - rec.deadline_ns) / 1e6
                out.append(f"{tid}: ended {late_ms:.0f} ms after its deadline (bound {lateness_ns / 1e6:.0f} ms)")
        return out


def by_reason(records: dict[str, TaskRecord]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records.values():
        if r.error is not None:
            counts[r.error.reason.value] += 1
    return dict(counts)
