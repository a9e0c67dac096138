"""What every strategy shares: the question (:class:`Ask`), one run's budget and trace (:class:`Session`), and
what a run returns (:class:`StrategyResult`).

A strategy is a requester-side policy: it turns one question into one or more market tasks (each an ordinary
announce / bid / award / result round with a verified attestation) and combines their answers. Every task of one
run goes through :meth:`Session.call`, which enforces the run's limits as a whole:

- money: each call may spend at most what it reserved, and a call reserves at most what is left
  (``budget - spent - reserved``); the sum of what a run pays therefore never exceeds its budget, however many
  calls run at once. A strategy that runs calls side by side gives each a share (``share=k``).
- time: every call carries the run's deadline (or an earlier one the strategy picks); no call starts when less
  than ``min_call_ms`` is left.

When either limit is reached the session records why (:attr:`Session.exhausted`) and refuses further calls
(they return None at once); the strategy then answers with what it has, and the result says it stopped early
(``StrategyResult.stopped``). A run with no answer at all raises :class:`StrategyFailed`.

Strategies nest: ``run(ask, session)`` returns an :class:`Answer`, so a cascade can escalate to an ensemble, on
the same session (one budget, one deadline, one trace).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, MutableSet, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import anyio

from accord.errors import AccordError
from accord.protocol.messages import ChatMessage, Constraints, Policy, Privacy, ReasonCode, Role, Tier
from accord.protocol.pricing import estimate_prompt_tokens
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import Requester, TaskFailed, TaskOutcome

__all__ = [
    "DEFAULT_SYSTEM",
    "Answer",
    "Ask",
    "CallRecord",
    "Session",
    "SiblingAvoid",
    "Strategy",
    "StrategyConfigError",
    "StrategyFailed",
    "StrategyResult",
    "answered",
    "as_answer",
]

DEFAULT_SYSTEM = "You are a helpful assistant. Answer concisely and correctly."


@dataclass(frozen=True, slots=True)
class Ask:
    """One question for a strategy.

    ``context``: private material (a document, a record) that must stay on device and edge agents: only the
    split strategy reads it (and sends it only to local tiers); no other strategy ever sends it. ``notes``: text a
    strategy adds for the next stage (a draft answer, the other debaters' answers); it goes into the system
    message, so the user message stays the question itself.
    """

    prompt: str
    system: str = DEFAULT_SYSTEM
    kind: str = "chat"
    """The market's task kind (a skill agents advertise, part of the announce subject)."""
    form: str = "chat"
    """What shape the answer takes, for comparing answers and for routers: ``math`` (a final number), ``mcq``
    (an option letter) or ``chat`` (free text)."""
    category: str | None = None
    context: str | None = None
    notes: str | None = None
    max_output_tokens: int = 256
    residency: str | None = None
    privacy: Privacy = Privacy.PUBLIC

    def with_notes(self, notes: str | None) -> Ask:
        return replace(self, notes=notes)

    def messages(self) -> list[ChatMessage]:
        system = self.system if not self.notes else f"{self.system}\n\n{self.notes}"
        return [ChatMessage(role=Role.SYSTEM, content=system), ChatMessage(role=Role.USER, content=self.prompt)]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One market task of a run (or one the run decided not to make: ``skipped``)."""

    role: str
    """What the call was for: ``answer``, ``draft``, ``verify``, ``escalate``, ``propose``, ``aggregate``,
    ``debate``, ``judge``, ``extract``..."""
    tiers: tuple[Tier, ...]
    max_price_micros: int
    task_id: str | None = None
    agent_id: str | None = None
    model: str | None = None
    price_micros: int = 0
    latency_ms: float = 0.0
    answer: str | None = None
    failure: str | None = None
    """The ReasonCode of a failed task, or ``budget`` / ``deadline`` for a call the session refused."""
    detail: str = ""
    outcome: TaskOutcome | None = None

    @property
    def ok(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True, slots=True)
class Answer:
    """What a strategy (or a nested one) concluded: the text and the calls that support it."""

    text: str
    calls: tuple[CallRecord, ...]
    """The answers this one rests on (for a vote: the calls that voted for it)."""
    confidence: float | None = None
    """Agreement or verifier confidence in 0..1 where the strategy has one."""


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """What :func:`run_strategy` returns."""

    strategy: str
    answer: str
    calls: tuple[CallRecord, ...]
    """Every call of the run in the order they ended (failures and refused calls included)."""
    spent_micros: int
    budget_micros: int
    latency_ms: float
    stopped: str | None = None
    """``budget`` or ``deadline`` when the run had to stop spending before the strategy was done."""
    confidence: float | None = None

    @property
    def answered_by(self) -> list[str]:
        return [c.agent_id for c in self.calls if c.ok and c.agent_id is not None]


class StrategyConfigError(AccordError):
    """A strategy table or ``--strategy`` value cannot be used (or cannot take this Ask); the message says why."""


class StrategyFailed(AccordError):
    """A run ended with no answer at all; ``reason`` is ``budget``, ``deadline`` or the last task's ReasonCode."""

    def __init__(self, strategy: str, reason: str, calls: Sequence[CallRecord]) -> None:
        self.strategy = strategy
        self.reason = reason
        self.calls = tuple(calls)
        tried = ", ".join(f"{c.role}:{c.failure}" for c in calls if c.failure) or "no call made"
        super().__init__(f"strategy {strategy} got no answer: {reason} ({tried})")


class SiblingAvoid(MutableSet[str]):
    """The agents one call must not be awarded to: its own exclusions plus a set it shares with its sibling calls.
    The requester adds each awardee, and that lands in the shared set, so siblings avoid it too."""

    def __init__(self, shared: set[str], own: Iterable[str] = ()) -> None:
        self.shared = shared
        self.own = frozenset(own)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.shared or agent_id in self.own

    def __iter__(self) -> Iterator[str]:
        return iter(self.shared | self.own)

    def __len__(self) -> int:
        return len(self.shared | self.own)

    def add(self, agent_id: str) -> None:
        self.shared.add(agent_id)

    def discard(self, agent_id: str) -> None:
        self.shared.discard(agent_id)


_BUDGET_REASONS = ("budget",)  # "declined over_budget", "ineligible budget", "ruled out by budget"


class Session:
    """One run's requester, limits and trace (see the module docstring)."""

    def __init__(
        self,
        requester: Requester,
        *,
        budget_micros: int,
        deadline_ns: int,
        bid_window_ms: int = 50,
        min_call_ms: int = 100,
        policy: Policy | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
    ) -> None:
        if budget_micros < 0:
            raise AccordError(f"budget must be >= 0 micro-USD, got {budget_micros}")
        self.requester = requester
        self.budget_micros = budget_micros
        self.deadline_ns = deadline_ns
        self.bid_window_ms = bid_window_ms
        self.min_call_ms = min_call_ms
        self.policy = policy if policy is not None else Policy()
        self.on_call = on_call
        self.spent_micros = 0
        self.reserved_micros = 0
        self.calls: list[CallRecord] = []
        self.exhausted: str | None = None
        """``budget`` or ``deadline`` once a call was refused or failed for lack of either."""
        self._stages: list[str] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Calls made inside are recorded with role ``name/role``: a nested strategy's calls say whose they are."""
        self._stages.append(name)
        try:
            yield
        finally:
            self._stages.pop()

    @property
    def remaining_micros(self) -> int:
        return self.budget_micros - self.spent_micros - self.reserved_micros

    def remaining_ms(self) -> float:
        return (self.deadline_ns - time.time_ns()) / 1e6

    def _record(self, call: CallRecord) -> None:
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)

    def _refuse(self, role: str, tiers: tuple[Tier, ...], why: str) -> None:
        self.exhausted = self.exhausted or why
        self._record(CallRecord(role=role, tiers=tiers, max_price_micros=0, failure=why))

    async def call(
        self,
        ask: Ask,
        *,
        role: str,
        tiers: Sequence[Tier] = (),
        share: int = 1,
        max_price_micros: int | None = None,
        avoid: MutableSet[str] | None = None,
        privacy: Privacy | None = None,
        deadline_ns: int | None = None,
        agent: str | None = None,
    ) -> CallRecord | None:
        """Run one market task for ``ask``; the record of a call that answered, else None (failures recorded).

        ``share``: this call may reserve at most ``remaining / share`` (for k calls started together).
        ``avoid``: a set shared by sibling calls so that each goes to a different agent.
        ``privacy``: the class this task declares (default: the Ask's); the split strategy lowers it for what
        may leave the device. ``agent``: ask this one agent (a direct award from its price sheet).
        """
        tier_tuple = tuple(tiers)
        if self._stages:
            role = "/".join([*self._stages, role])
        if self.exhausted is not None:
            self._refuse(role, tier_tuple, self.exhausted)
            return None
        deadline = self.deadline_ns if deadline_ns is None else min(deadline_ns, self.deadline_ns)
        if (deadline - time.time_ns()) / 1e6 < self.min_call_ms:
            self._refuse(role, tier_tuple, "deadline")
            return None
        cap = self.remaining_micros // max(1, share)
        if max_price_micros is not None:
            cap = min(cap, max_price_micros)
        if cap <= 0:
            self._refuse(role, tier_tuple, "budget")
            return None
        messages = ask.messages()
        spec = TaskSpec(
            kind=ask.kind,
            messages=messages,
            constraints=Constraints(
                deadline_ns=deadline,
                max_price_micros=cap,
                residency=ask.residency,
                privacy=ask.privacy if privacy is None else privacy,
                preferred_tiers=list(tier_tuple),
            ),
            est_input_tokens=estimate_prompt_tokens(messages),
            max_output_tokens=ask.max_output_tokens,
            policy=self.policy,
            bid_window_ms=self.bid_window_ms,
        )
        self.reserved_micros += cap
        record = CallRecord(role=role, tiers=tier_tuple, max_price_micros=cap)
        try:
            outcome = await self.requester.submit(spec, avoid=avoid, agent=agent)
        except TaskFailed as exc:
            failure = exc.reason.value
            if exc.reason in (ReasonCode.NO_BIDS, ReasonCode.NO_ELIGIBLE_BIDS) and any(
                why in exc.detail for why in _BUDGET_REASONS
            ):
                failure = "budget"
            if exc.reason is ReasonCode.DEADLINE_EXCEEDED or failure == "budget":
                self.exhausted = self.exhausted or ("deadline" if failure != "budget" else "budget")
            self._record(replace(record, task_id=exc.task_id, failure=failure, detail=exc.detail))
            return None
        finally:
            self.reserved_micros -= cap
        self.spent_micros += outcome.price_micros
        done = replace(
            record,
            task_id=outcome.task_id,
            agent_id=outcome.agent_id,
            model=outcome.model,
            price_micros=outcome.price_micros,
            latency_ms=outcome.latency_ms,
            answer=outcome.answer,
            outcome=outcome,
        )
        self._record(done)
        return done

    async def call_many(
        self,
        asks: Sequence[Ask],
        *,
        role: str,
        tiers: Sequence[Tier] = (),
        distinct: bool = True,
        keep: Sequence[str | None] = (),
    ) -> list[CallRecord | None]:
        """Run one call per ask side by side, each with an equal share of what is left, each (with
        ``distinct``) on a different agent; results in the order of ``asks``.

        ``keep``: per call, the agent that answered it last time (a debate seat's); call i then avoids the
        agents kept by the other calls, so with exactly k agents every seat stays with its agent."""
        results: list[CallRecord | None] = [None] * len(asks)
        shared: set[str] = set()
        n = len(asks)

        def avoid_for(i: int) -> MutableSet[str] | None:
            if not distinct:
                return None
            others = [a for j, a in enumerate(keep) if j != i and a is not None]
            return SiblingAvoid(shared, others)

        async def one(i: int) -> None:
            results[i] = await self.call(asks[i], role=role, tiers=tiers, share=n - i, avoid=avoid_for(i))

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        return results


@runtime_checkable
class Strategy(Protocol):
    """A requester-side policy. ``run`` may call ``session.call`` any number of times and nest other
    strategies; it returns None only when it got no answer at all."""

    @property
    def name(self) -> str: ...

    async def run(self, ask: Ask, session: Session) -> Answer | None: ...


def answered(records: Sequence[CallRecord | None]) -> list[CallRecord]:
    """The records of calls that answered, in order."""
    return [r for r in records if r is not None and r.ok]


def as_answer(record: CallRecord, confidence: float | None = None) -> Answer:
    assert record.answer is not None
    return Answer(text=record.answer, calls=(record,), confidence=confidence)
