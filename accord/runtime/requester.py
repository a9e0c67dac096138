"""The Requester shell: one requester machine per task, a shared inbox, and ``await submit(spec)``.

Verification follows docs/VERIFICATION.md: bids are only peeked (decoded, not verified) when they arrive; the
machine asks the ``verify_bid`` hook for the bid it is about to award. Every frame it acts on (AwardAck,
AwardReject, Result, Failure; a Progress while it still stands for the ack; a Decline while an award is out,
where it means AwardReject) is fully verified with the replay guard, and a Result's attestation is verified
against its output before the machine sees the Result: a result whose attestation fails is dropped (the lease
then runs out and the task is re-awarded), never accepted. Other Progress and Decline frames are only peeked.
An Advertise is verified when its card is new or changed, and a heartbeat repeating a verified card is peeked
(its sender's certificate still checked); a Withdraw is always verified. Every frame must arrive on a subject
whose last token is its sender (spec 4.1).

The registry is a :class:`~accord.protocol.shortlists.CachingRegistry` by default: shortlists are reused per
class of task for 250 ms, so a call for proposals costs the same with ten agents or a thousand.

Counters: :class:`RequesterStats` (``requester.stats``). On a bus that can host it
(:class:`accord.bus.ServiceHost`) the requester also answers the NATS service protocol as an instance of
``accord-requester`` with one endpoint, ``submit`` (requests: tasks submitted; errors: tasks failed).

Use::

    requester = Requester(identity, bus=bus, trust=trust)
    async with anyio.create_task_group() as tg:
        await tg.start(requester.run)
        outcome = await requester.submit(TaskSpec(messages=[...], constraints=Constraints(...)))
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict
from collections.abc import Callable, MutableSet
from dataclasses import dataclass, field
from typing import ClassVar, Final, assert_never

import anyio
import msgspec
from anyio.abc import TaskStatus

from accord.bus.base import Bus, BusMessage, EndpointCounts, PayloadTooLargeError, ServiceEndpoint
from accord.errors import AccordError
from accord.logs import get_logger
from accord.protocol import subjects
from accord.protocol.actions import (
    Abort,
    Accept,
    Action,
    AttemptEnded,
    Broadcast,
    CancelTimer,
    Execute,
    Fail,
    Multicast,
    Reject,
    RejectReason,
    ReportProgress,
    Send,
    SetTimer,
)
from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.events import CancelTask, Distrusted, Event, Received, Start, TimerFired, TimerKind
from accord.protocol.market import Credentials, QualityPredictor, Reputation, ReputationPredictor
from accord.protocol.messages import (
    Advertise,
    Award,
    Bid,
    Decline,
    Failure,
    Message,
    Progress,
    ReasonCode,
    Result,
    Task,
    Tier,
    Withdraw,
)
from accord.protocol.registry import Candidates, Registry
from accord.protocol.requester import (
    RequesterConfig,
    RequesterMachine,
    RequesterState,
    TaskSpec,
    fits_unencoded,
    frame_problem,
)
from accord.protocol.shortlists import CachingRegistry
from accord.routing.base import LearningPredictor
from accord.routing.store import OutcomeStore, StoredOutcome
from accord.runtime.endpoint import Endpoint, EndpointLimits
from accord.runtime.timers import Clock, now_ns
from accord.security import (
    Expect,
    Identity,
    Opened,
    Reason,
    ReplayError,
    ReplayGuard,
    SecurityError,
    TrustStore,
    VerifiedAttestation,
    credentials_of,
    verify,
    verify_result_attestation,
)

__all__ = [
    "SERVICE_NAME",
    "ActionObserver",
    "Requester",
    "RequesterStats",
    "TaskFailed",
    "TaskOutcome",
    "announce_subjects",
    "check_frame_size",
]

log = get_logger(__name__)

_AWARDED: Final = frozenset({RequesterState.AWARDED, RequesterState.ACKNOWLEDGED})
_REASONS: Final = frozenset(r.value for r in ReasonCode)

ProgressCallback = Callable[[Progress], None]
"""Called synchronously with each Progress of the current awardee, in order."""

ActionObserver = Callable[[str, Action, int], None]
"""Called synchronously with (task id, action, now ns) for every action a task's machine returns, before the
shell carries it out: a tap for audit logs and for tests that record the market's history."""

SERVICE_NAME = subjects.REQUESTER_SERVICE
"""The NATS service kind a requester registers as."""


class TaskFailed(AccordError):
    """A submitted task ended without an accepted result; ``reason`` is the protocol's ReasonCode."""

    def __init__(self, task_id: str, reason: ReasonCode, detail: str = "") -> None:
        self.task_id = task_id
        self.reason = reason
        self.detail = detail
        super().__init__(f"task {task_id} failed: {reason.value}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """What ``submit`` returns: the accepted answer and everything needed to account for it."""

    task_id: str
    answer: str
    agent_id: str
    model: str
    price_micros: int
    latency_ms: float
    attempt: int
    result: Result
    attestation: VerifiedAttestation


@dataclass(slots=True)
class RequesterStats:
    """Monotonic counters of one requester (also reported through ``$SRV.STATS``)."""

    submitted: int = 0
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    """Tasks that ended without a result, by reason code (``cancelled`` included)."""
    reawards: int = 0
    """Awards of an attempt after the first (another agent got the task after an attempt ended)."""
    verification_failures: int = 0
    """Frames this requester acted on (winning bid, ack, reject, result, failure) or attestations that failed a
    signature, trust or attestation check. Replays and malformed frames are not counted here."""
    refused_frames: int = 0
    """Every frame dropped before its machine saw it (malformed, wrong subject, replay, failed verification)."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Messages the machines refused (late, fenced, duplicate...) and frames for unknown tasks, by reason."""
    spent_micros: int = 0

    @property
    def in_flight(self) -> int:
        return self.submitted - self.completed - sum(self.failed.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "failed": dict(self.failed),
            "reawards": self.reawards,
            "verification_failures": self.verification_failures,
            "refused_frames": self.refused_frames,
            "rejected": dict(self.rejected),
            "spent_micros": self.spent_micros,
        }


class _Pending:
    """One submitted task: its machine, the raw bid frames it may verify, and how it ended."""

    __slots__ = (
        "avoid",
        "bids",
        "declines",
        "done",
        "error",
        "failure",
        "machine",
        "on_progress",
        "outcome",
        "started_ns",
        "verified",
    )

    def __init__(
        self,
        machine: RequesterMachine,
        bids: dict[str, Opened],
        started_ns: int,
        on_progress: ProgressCallback | None,
        avoid: MutableSet[str] | None = None,
    ) -> None:
        self.machine = machine
        self.avoid = avoid
        self.bids = bids
        self.verified: dict[str, VerifiedAttestation] = {}
        self.declines: Counter[str] = Counter()
        """Why agents declined or bids were ineligible: the detail of a no_bids / no_eligible_bids failure."""
        self.failure: Failure | None = None
        """The last Failure an awardee sent: its detail (the backend's cause) explains a task failed for it."""
        self.done = anyio.Event()
        self.outcome: TaskOutcome | None = None
        self.error: TaskFailed | None = None
        self.started_ns = started_ns
        self.on_progress = on_progress


_UNSCORED_KEPT = 1024
"""How many delivered, not yet scored attempts a requester keeps for its learning predictor."""


class Requester(Endpoint[tuple[str, TimerKind]]):
    """Submits tasks to the mesh and returns verified outcomes (see the module docstring)."""

    service_name: ClassVar[str] = SERVICE_NAME

    def __init__(
        self,
        identity: Identity,
        *,
        bus: Bus,
        trust: TrustStore,
        registry: Registry | None = None,
        config: RequesterConfig | None = None,
        reputation: Reputation | None = None,
        predictor: QualityPredictor | None = None,
        max_in_flight: int = 64,
        rng: random.Random | None = None,
        replay_guard: ReplayGuard | None = None,
        watch_adverts: bool = True,
        observer: ActionObserver | None = None,
        service: bool = True,
        outcomes: OutcomeStore | None = None,
        clock: Clock = now_ns,
        authenticated_bus: bool = False,
        limits: EndpointLimits | None = None,
    ) -> None:
        super().__init__(
            identity,
            bus=bus,
            trust=trust,
            replay_guard=replay_guard,
            rng=rng,
            service=service,
            log=log.bind(requester=identity.id),
            clock=clock,
            authenticated_bus=authenticated_bus,
            limits=limits,
        )
        self.registry = registry if registry is not None else CachingRegistry()
        self.config = config if config is not None else RequesterConfig()
        self.outcomes = outcomes
        """Where every ended attempt is recorded (None: nowhere); the reputation starts from it."""
        if reputation is None:
            reputation = Reputation(outcomes.records() if outcomes is not None else None)
        self.reputation = reputation
        self.predictor: QualityPredictor = (
            predictor if predictor is not None else ReputationPredictor(self.reputation)
        )
        self._learns: tuple[QualityPredictor, LearningPredictor | None] | None = None
        """The last predictor seen and, if it learns, it as a LearningPredictor (see :meth:`_learner`)."""
        self._unscored: OrderedDict[str, StoredOutcome] = OrderedDict()
        """Recent delivered attempts a learning predictor has not seen scored yet (at most _UNSCORED_KEPT)."""
        self.stats = RequesterStats()
        self.watch_adverts = watch_adverts
        self.observer = observer
        self._limit = anyio.CapacityLimiter(max_in_flight)
        self._tasks: dict[str, _Pending] = {}
        self._cards: dict[str, tuple[Advertise, int]] = {}
        self._ready = False

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen on the inbox (and for adverts) until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._timers.run)
                await tg.start(self._outbox.run)
                await self._listen(tg, subjects.direct_filter(self.id), self._receive, max_pending=65_536)
                if self.watch_adverts:
                    await self._listen(tg, subjects.advertise_filter(), self._receive_advert, max_pending=65_536)
                await self._register_service()
                tg.start_soon(self._watch_trust)
                self._ready = True
                task_status.started()
        finally:
            self._ready = False
            await self._stop_service()

    @property
    def timer_lateness_ns(self) -> int:
        """How late (at most) this requester's timers have been handled: with it, every task ends by its
        deadline plus this (spec 5.7)."""
        return self._timers.max_lateness_ns

    @property
    def in_flight(self) -> int:
        """Tasks submitted and not yet ended (those waiting for a slot under ``max_in_flight`` included)."""
        return self.stats.in_flight

    @property
    def running(self) -> int:
        """Tasks whose machine is running now (at most ``max_in_flight``)."""
        return len(self._tasks)

    async def _register_service(self) -> None:
        await self._register_as_service(
            description="Accord requester",
            metadata={"agent_id": self.id, "protocol": subjects.PREFIX},
            endpoints=(ServiceEndpoint("submit", subjects.direct_filter(self.id), {"what": "tasks"}),),
        )

    def service_counts(self) -> dict[str, EndpointCounts]:
        s = self.stats
        failed = sum(s.failed.values())
        data: dict[str, int | float | str] = {
            "completed": s.completed,
            "reawards": s.reawards,
            "verification_failures": s.verification_failures,
            "refused_frames": s.refused_frames,
            "spent_micros": s.spent_micros,
            "in_flight": s.in_flight,
            "limited": sum(self.limited.values()),
        }
        data.update({f"failed_{reason}": n for reason, n in sorted(s.failed.items())})
        last = max(s.failed, key=lambda r: s.failed[r]) if s.failed else ""
        return {"submit": EndpointCounts(requests=s.submitted, errors=failed, last_error=last, data=data)}

    # --- the API ------------------------------------------------------------------------------------------------
    async def submit(
        self,
        spec: TaskSpec,
        *,
        on_progress: ProgressCallback | None = None,
        avoid: MutableSet[str] | None = None,
        agent: str | None = None,
    ) -> TaskOutcome:
        """Run one task through the market; the verified outcome, or TaskFailed with the reason.

        ``agent``: ask this one agent (its id): a direct award from the price sheet it advertised (Task and
        Award in one go, then its ack and result: no bid round), or, when this requester holds no sheet of it
        that qualifies, a round that invites it alone. No other agent is awarded the task.

        ``avoid``: agents not to award this task to. The requester adds every agent it awards this task to, so
        sibling tasks that share one set (an ensemble's k calls) each go to a different agent.

        At most ``max_in_flight`` tasks run at once; further calls wait for a slot (backpressure), but never past
        the task's deadline: a task still queued then fails with ``deadline_exceeded``. Cancelling the caller
        cancels the task (one Cancel goes to the awardee and to every agent that bid, spec 5.9). A task whose call
        for proposals would not fit in one frame raises PayloadTooLargeError at once (nothing is sent).
        """
        if not self._ready:
            raise AccordError("Requester.run() must be started before submit()")
        check_frame_size(spec)
        bids: dict[str, Opened] = {}
        machine = RequesterMachine(
            self.id,
            spec,
            rng=self._rng,
            credentials=self.credentials,
            verify_bid=self._bid_verifier(bids),
            registry=self.registry,
            predictor=self.predictor,
            config=self.config,
            avoid=avoid if avoid is not None else (),
            agent=agent,
        )
        task_id = machine.task_id
        self.stats.submitted += 1
        acquired = False
        try:
            self._limit.acquire_nowait()  # a free slot (the common case): no cancel scope, no event-loop round
            acquired = True
        except anyio.WouldBlock:
            try:
                with anyio.move_on_after(max(0.0, (spec.constraints.deadline_ns - self.clock()) / 1e9)):
                    await self._limit.acquire()
                    acquired = True
            except BaseException:  # cancelled while waiting for a slot: it never started
                self.stats.failed[ReasonCode.CANCELLED.value] += 1
                raise
        pending = _Pending(machine, bids, self.clock(), on_progress, avoid)
        self._tasks[task_id] = pending
        try:
            self._outbox.hold()
            try:
                self._feed(pending, Start())  # fails at once if the deadline passed while it was queued
            finally:
                await self._outbox.flush()  # the call for proposals goes out from this task: no hop
            await pending.done.wait()
        except BaseException:
            if not machine.is_terminal:
                self._feed(pending, CancelTask())  # synchronous: the Cancel is queued even when cancelled
            raise
        finally:
            for kind in TimerKind:
                self._timers.cancel((task_id, kind))
            self._tasks.pop(task_id, None)
            if acquired:
                self._limit.release()
        if pending.error is not None:
            raise pending.error
        assert pending.outcome is not None
        return pending.outcome

    # --- hooks for the machine ----------------------------------------------------------------------------------
    def credentials(self, agent_id: str) -> Credentials | None:
        """The machine's credentials hook: what ``agent_id``'s valid certificate says now (None: untrusted)."""
        try:
            cert = self.trust.check(agent_id, self.clock())
        except SecurityError:
            return None
        return credentials_of(cert)

    def distrust(self, agent_id: str) -> str | None:
        """Why this requester's trust store refuses ``agent_id`` now (None: it holds a valid certificate)."""
        try:
            self.trust.check(agent_id, self.clock())
        except SecurityError as exc:
            return f"untrusted ({exc.reason.value})"
        return None

    def _bid_verifier(self, bids: dict[str, Opened]) -> Callable[[str, str], bool]:
        """The machine's ``verify_bid`` hook over one task's peeked bid frames (keyed by payload digest)."""

        def verify_bid(bid_id: str, digest: str) -> bool:
            opened = bids.get(digest)
            if opened is None or opened.message.id != bid_id:
                return False
            if opened.verified:  # checked in full when it arrived
                return True
            try:
                verify(opened, self.trust, self.clock())
            except SecurityError as exc:
                self.stats.verification_failures += 1
                self._log.warning("bid.forged", bid_id=bid_id, error=str(exc))
                return False
            return True

        return verify_bid

    # --- receiving ----------------------------------------------------------------------------------------------
    def _refuse(self, exc: AccordError, subject: str, *, task_id: str | None = None, quiet: bool = False) -> None:
        """Count a frame dropped before its machine saw it (a failed check of a frame from a known key also counts
        as a verification failure) and log it sparsely (``quiet``: at debug level, for adverts)."""
        self.stats.refused_frames += 1
        if (
            isinstance(exc, SecurityError)
            and not isinstance(exc, ReplayError)
            and exc.reason is not Reason.MALFORMED
        ):
            self.stats.verification_failures += 1
        self._log_refusal(exc, subject, quiet=quiet, task_id=task_id)

    def _receive_advert(self, msg: BusMessage) -> None:
        """Feed the registry. Every advert's key must hold a valid certificate before its payload is decoded. On a
        bus that authenticates publishers an Advertise is only peeked (adverts only shape shortlists); otherwise
        a heartbeat that repeats, load included, the card last verified for its sender only refreshes that
        card's liveness (no unverified frame may change its seq, time or load), and anything new is verified. A
        Withdraw is always verified. With a thousand agents this saves some 300 signature checks a second."""
        now = self.clock()
        try:
            peeked = self._peek(msg, now)
            message = peeked.message
            if isinstance(message, Advertise):
                card = (_card(message), message.load)  # a new load is news: only a verified frame may bring it
                if not self.authenticated_bus and self._cards.get(message.sender) == card:
                    self.registry.refresh(message.sender, now=now)
                    return
                if not self.authenticated_bus:
                    verify(peeked, self.trust, now, replay_guard=self.replay_guard)
                    if len(self._cards) >= self.registry.max_agents:
                        self._cards.clear()
                    self._cards[message.sender] = card
                full = self.registry.refused
                self.registry.observe(message, now=now, digest=payload_digest(peeked.payload))
                if self.registry.refused > full:
                    self._limit_reached("registry", agent=message.sender)
            elif isinstance(message, Withdraw):
                verify(peeked, self.trust, now, replay_guard=self.replay_guard)
                self._cards.pop(message.sender, None)
                self.registry.withdraw(message, now=now)
        except AccordError as exc:
            self._refuse(exc, msg.subject, quiet=True)

    def _receive(self, msg: BusMessage) -> None:
        """One frame for a task (docs/VERIFICATION.md): on a bus that authenticates publishers it is peeked (key
        trusted before decoding) and verified only when the machine acts on it; on any other bus it is verified
        in full (key, signature, decoding, freshness) before anything else."""
        now = self.clock()
        try:
            opened = self._open(msg, now, acted_on=not self.authenticated_bus)
        except AccordError as exc:
            self._refuse(exc, msg.subject)
            return
        message = opened.message
        task_id = getattr(message, "task_id", None)
        pending = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if pending is None:
            self.stats.rejected["unknown_task"] += 1
            return
        if isinstance(message, Bid):
            size = len(opened.payload)
            if size > pending.machine.config.max_bid_bytes:  # the machine refuses it: neither hashed nor kept
                self._feed(pending, Received(message, size=size), now)
                return
            digest = payload_digest(opened.payload)
            pending.bids[digest] = opened  # the machine may award it at once (the last invited agent bid)
            self._feed(pending, Received(message, digest=digest, size=size), now)
            if not pending.machine.has_bid(message.id):  # keep the frames only of bids the machine holds
                pending.bids.pop(digest, None)
            return
        if not opened.verified and self._acts_on(pending, message):
            try:
                opened = verify(
                    opened, self.trust, now, replay_guard=self.replay_guard, expect=Expect(task_id=task_id)
                )
            except SecurityError as exc:
                self._refuse(exc, msg.subject, task_id=task_id)
                return
        message = opened.message
        if isinstance(message, Result):
            if not self._check_attestation(pending, opened, now):
                return
            try:
                self._feed(pending, Received(message, digest=payload_digest(opened.payload)), now)
            finally:  # kept only while the machine decides (an accepted one is in the outcome by then)
                pending.verified.pop(message.id, None)
            return
        self._feed(pending, Received(message, digest=payload_digest(opened.payload)), now)

    @staticmethod
    def _acts_on(pending: _Pending, message: Message) -> bool:
        """Whether the machine may act on ``message`` (then it is verified first) or only look at it (peeked).

        A Progress is acted on while it may stand for the awardee's ack; a Decline while an award is out (after
        a direct award it means AwardReject; in a bid round it only removes a bidder). Everything else the
        machine acts on.
        """
        state = pending.machine.state
        if isinstance(message, Progress):
            return state is RequesterState.AWARDED
        if isinstance(message, Decline):
            return state is RequesterState.AWARDED or state is RequesterState.ACKNOWLEDGED
        return True

    def _check_attestation(self, pending: _Pending, opened: Opened, now: int) -> bool:
        """Bind a verified Result to its attestation, this requester and the Award this requester sent."""
        result = opened.message
        award = pending.machine.award
        assert isinstance(result, Result)
        try:
            verified = verify_result_attestation(
                opened,
                self.trust,
                now,
                requester=self.id,
                award_payload=encode(award) if award is not None and award.attempt == result.attempt else None,
            )
        except SecurityError as exc:
            self.stats.verification_failures += 1
            self.stats.refused_frames += 1
            self._log.warning("result.attestation_refused", task_id=result.task_id, error=str(exc))
            return False
        if verified.statement.prompt_digest != pending.machine.task.prompt_digest:
            self.stats.verification_failures += 1
            self.stats.refused_frames += 1
            self._log.warning("result.attestation_mismatch", task_id=result.task_id)
            return False
        pending.verified[result.id] = verified
        return True

    def _distrusted_peers(self, now: int) -> None:
        for pending in list(self._tasks.values()):
            award = pending.machine.award
            if award is None or pending.machine.state not in _AWARDED or not self._untrusted(award.winner, now):
                continue
            self._log.warning("peer.distrusted", agent=award.winner, task_id=pending.machine.task_id)
            self._feed(pending, Distrusted(award.winner), now)

    def _on_timer(self, key: tuple[str, TimerKind]) -> None:
        pending = self._tasks.get(key[0])
        if pending is not None:
            self._feed(pending, TimerFired(key[1], key[0]))

    # --- the machine and its actions ----------------------------------------------------------------------------
    def _feed(self, pending: _Pending, event: Event, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        try:
            actions = pending.machine.handle(event, now=now)
        except AccordError as exc:
            self._log_machine_refusal(event, exc)
            return
        if isinstance(event, Received) and isinstance(event.message, Decline):
            reason = event.message.reason  # any token on the wire: only the known ones get their own count
            pending.declines[f"declined {reason if reason in _REASONS else ReasonCode.OTHER.value}"] += 1
        elif isinstance(event, Received) and isinstance(event.message, Failure):
            pending.failure = event.message
        self._apply(pending, actions, now)

    def _apply(self, pending: _Pending, actions: list[Action], now: int) -> None:
        task_id = pending.machine.task_id
        observer = self.observer
        for action in actions:
            if observer is not None:
                observer(task_id, action, now)
            match action:
                case SetTimer(kind=kind, at_ns=at_ns):
                    self._timers.set((task_id, kind), at_ns)
                case CancelTimer(kind=kind):
                    self._timers.cancel((task_id, kind))
                case Send(to=to, message=message):
                    if isinstance(message, Award):
                        if message.attempt > 1:
                            self.stats.reawards += 1
                        if pending.avoid is not None:
                            pending.avoid.add(message.winner)
                    self._send(to, message)
                case Multicast(to=to, message=message):
                    self._outbox.multicast([self._inbox_of(peer) for peer in to], message)
                case Reject(reason=reason, detail=detail):
                    self.stats.rejected[reason.value] += 1
                    if reason is RejectReason.TOO_MANY:
                        self._limit_reached(detail or reason.value, task_id=task_id)
                    if reason is RejectReason.INELIGIBLE:
                        pending.declines[f"ineligible {detail.partition(':')[0]}"] += 1
                case AttemptEnded(success=True, agent_id=agent_id):
                    self.reputation.record_delivery(agent_id)  # the row is written with the result (Accept)
                case AttemptEnded():
                    self.reputation.record_failure(action.agent_id)
                    self._store_failure(pending, action, now)
                case Accept():
                    self._accept(pending, action, now)
                case Fail():
                    self._fail(pending, action)
                case ReportProgress(progress=progress):
                    if pending.on_progress is not None:
                        pending.on_progress(progress)
                case Execute() | Abort():  # contractor actions never come from a requester machine
                    self._log.warning("action.unexpected", action=type(action).__name__)
                case _:
                    assert_never(action)

    def _send(self, to: str | Broadcast, message: Message) -> None:
        if isinstance(to, Broadcast):
            assert isinstance(message, Task)
            for subject in announce_subjects(message, self.id):
                self._outbox.send(subject, message)
        else:
            self._outbox.send(self._inbox_of(to), message)

    def _fail(self, pending: _Pending, action: Fail) -> None:
        self.stats.failed[action.reason.value] += 1
        detail = action.detail
        failure = pending.failure
        if not detail and failure is not None and failure.reason == action.reason.value and failure.detail:
            detail = f"{failure.detail} (agent {failure.sender})"
        elif not detail and pending.declines:
            detail = ", ".join(f"{why} x{n}" for why, n in pending.declines.most_common())
        elif not detail and action.reason in (ReasonCode.NO_BIDS, ReasonCode.NO_ELIGIBLE_BIDS):
            detail = self._diagnose(pending.machine.task)
        pending.error = TaskFailed(action.task_id, action.reason, detail)
        pending.done.set()

    def _diagnose(self, task: Task) -> str:
        """Why no agent took ``task``, as far as the registry tells (for the message of a no-bids failure)."""
        return self.candidates(task, now=task.ts).why_none  # as of its last announce

    def candidates(self, task: Task, *, now: int) -> Candidates:
        """Agents this requester's registry knows that could take ``task`` now (spec 6.1 by their price sheets),
        best first, and why none could: the one diagnosis a no-bids failure and a wait for agents share."""
        return self.registry.candidates(
            task,
            now=now,
            credentials=self.credentials,
            predictor=self.predictor,
            explain_untrusted=self.distrust,
        )

    def record_quality(
        self, task_id: str, agent_id: str, quality: float, source: str, *, run_id: str = ""
    ) -> None:
        """A quality signal (0..1) for the accepted result of ``task_id``: a vote, a judge, ground truth. It
        scores the agent's record and the outcome store's row."""
        self.reputation.score_delivery(agent_id, quality)
        if self.outcomes is not None:
            self.outcomes.set_quality(task_id, quality, source, run_id=run_id or None)
        row = self._unscored.pop(task_id, None)
        if row is not None:
            self._learn(msgspec.structs.replace(row, quality=quality, quality_source=source))

    def _store_failure(self, pending: _Pending, ended: AttemptEnded, now: int) -> None:
        if self.outcomes is None and self._learner() is None:
            return
        task = pending.machine.task
        row = StoredOutcome(
            task_id=ended.task_id,
            attempt=ended.attempt,
            ts_ns=now,
            agent=ended.agent_id,
            model=ended.model or "?",
            tier=self._tier_of(ended.agent_id),
            kind=task.kind,
            privacy=task.constraints.privacy,
            residency=task.constraints.residency,
            delivered=False,
            quality=0.0,
            quality_source="failure",
            messages=tuple(task.messages),
        )
        if self.outcomes is not None:
            self.outcomes.add(row)
        self._learn(row)

    def _store_result(self, pending: _Pending, outcome: TaskOutcome, now: int) -> None:
        if self.outcomes is None and self._learner() is None:
            return
        task, result = pending.machine.task, outcome.result
        row = StoredOutcome(
            task_id=outcome.task_id,
            attempt=outcome.attempt,
            ts_ns=now,
            agent=outcome.agent_id,
            model=outcome.model,
            tier=self._tier_of(outcome.agent_id),
            kind=task.kind,
            privacy=task.constraints.privacy,
            residency=task.constraints.residency,
            delivered=True,
            price_micros=outcome.price_micros,
            latency_ms=round(outcome.latency_ms),
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            messages=tuple(task.messages),
            response=result.output,
            attestation_digest=payload_digest(result.attestation),
        )
        if self.outcomes is not None:
            self.outcomes.add(row)
        if self._learner() is not None:  # it learns when a signal scores the result
            self._unscored[row.task_id] = row
            if len(self._unscored) > _UNSCORED_KEPT:
                self._unscored.popitem(last=False)

    def _learner(self) -> LearningPredictor | None:
        """``self.predictor`` if it learns online, else None; the runtime protocol check (some 10 us) is made once
        per predictor, not once per task (``predictor`` may be replaced: the check follows it)."""
        learns = self._learns
        if learns is None or learns[0] is not self.predictor:
            p = self.predictor
            learns = self._learns = (p, p if isinstance(p, LearningPredictor) else None)
        return learns[1]

    def _learn(self, row: StoredOutcome) -> None:
        """Feed a scored attempt to a predictor that learns online (spec/OUTCOMES.md)."""
        learner = self._learner()
        if learner is not None:
            learner.observe(row.to_outcome())

    def _tier_of(self, agent_id: str) -> str:
        creds = self.credentials(agent_id)
        return creds.tier.value if creds is not None else ""

    def _accept(self, pending: _Pending, action: Accept, now: int) -> None:
        result = action.result
        verified = pending.verified.get(result.id)
        assert verified is not None, "an accepted result always passed attestation checks"
        self.stats.completed += 1
        self.stats.spent_micros += action.price_micros
        pending.outcome = TaskOutcome(
            task_id=action.task_id,
            answer=result.output,
            agent_id=result.sender,
            model=result.model,
            price_micros=action.price_micros,
            latency_ms=(now - pending.started_ns) / 1e6,
            attempt=result.attempt,
            result=result,
            attestation=verified,
        )
        self._store_result(pending, pending.outcome, now)
        pending.done.set()


def check_frame_size(spec: TaskSpec) -> None:
    """Raise PayloadTooLargeError if the Task of ``spec`` cannot travel in one frame (nothing is sent then). A
    prompt well within the bound is not built into a Task here (its digest costs more than the check)."""
    if fits_unencoded(spec.messages):
        return
    problem = frame_problem(spec.to_task(sender="U" + "A" * 55, task_id="0" * 32))
    if problem is not None:
        raise PayloadTooLargeError(problem)


def _card(advert: Advertise) -> Advertise:
    """The parts of an Advertise that a heartbeat repeats: without id, ts, seq, load and expiry."""
    return msgspec.structs.replace(advert, id="0" * 32, ts=0, seq=0, load=0, expires_ns=None)


def announce_subjects(task: Task, requester: str) -> list[str]:
    """The broadcast subjects of a Task: one per preferred tier (or ``any``), with its residency class."""
    tiers: list[Tier | None] = [*task.constraints.preferred_tiers] or [None]
    return [subjects.announce(t, task.constraints.residency, task.kind, requester) for t in tiers]
