"""The Agent shell: a contractor machine on a bus, with LLM backends doing the work.

Thin by design (STYLE section 1): receive bytes -> verify -> decode -> ``machine.handle`` -> carry out the
actions -> encode -> sign -> publish. Every decision (whether to bid, at what price, whether to accept an award,
when to give up) is the machine's; this module only does I/O and runs backends.

Verification follows docs/VERIFICATION.md: a call for proposals (Task) is only peeked (decoded, its sender's
key checked against the trust store, no signature check: answering it costs one bid and starts no work); an
Award and a Cancel, which start and stop paid work, are fully verified and recorded in the replay guard. Every
frame must arrive on a subject whose last token is its sender (spec 4.1).

Operability: on a bus that can host it (:class:`accord.bus.ServiceHost`, e.g. NatsBus) the agent also answers
the NATS service protocol as an instance of ``accord-agent`` (``$SRV.PING|INFO|STATS``), with two endpoints:
``cfp`` (calls for proposals received; errors: refused frames) and ``award`` (awards received; errors: award
rejects and failures sent, refused frames).

Use::

    agent = Agent(identity, profile, {"sim-small": backend}, bus=bus, trust=trust)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        ...
        await agent.stop()          # Failure(shutdown) for running work, Withdraw; ``run`` returns

Cancelling ``run`` instead is a crash: nothing more is sent (requesters recover by their timers).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

import accord
from accord.backends.base import (
    Backend,
    BackendError,
    Completion,
    CompletionRequest,
    Delta,
    DeltaCallback,
)
from accord.bus.base import (
    Bus,
    BusError,
    BusMessage,
    EndpointCounts,
    ServiceEndpoint,
    ServiceHandle,
    ServiceHost,
    Subscription,
)
from accord.errors import AccordError, RemoteProtocolError
from accord.protocol import subjects
from accord.protocol.actions import (
    Abort,
    Accept,
    Action,
    Broadcast,
    CancelTimer,
    Execute,
    Fail,
    Multicast,
    Outcome,
    Rejected,
    ReportProgress,
    Send,
    SetTimer,
    new_message_id,
)
from accord.protocol.contractor import AgentState, ContractorMachine, ContractorProfile
from accord.protocol.digests import output_digest, payload_digest, prompt_digest
from accord.protocol.events import (
    Event,
    ExecutionDone,
    ExecutionFailed,
    ExecutionProgress,
    Received,
    Shutdown,
    Start,
    TimerFired,
    TimerKind,
)
from accord.protocol.messages import (
    Attestation,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    ChatMessage,
    Decline,
    Failure,
    Message,
    ReasonCode,
    Result,
    Role,
    Task,
)
from accord.runtime.outbox import Outbox
from accord.runtime.timers import TimerService, now_ns
from accord.security import (
    Identity,
    Reason,
    ReplayError,
    ReplayGuard,
    SignatureError,
    TrustStore,
    attest,
    peek,
    verify,
)

__all__ = ["SERVICE_NAME", "Agent", "AgentStats"]

log = structlog.get_logger(__name__)

DEFAULT_SYSTEM = "You are a helpful assistant. Answer briefly and precisely."
SERVICE_NAME = "accord-agent"
"""The NATS service kind every agent registers as (``nats micro ls`` groups them under it)."""


@dataclass(slots=True)
class AgentStats:
    """Monotonic counters of one agent (also reported through ``$SRV.STATS``)."""

    received: int = 0
    refused_cfp: int = 0
    """Frames refused on the announcement subjects before the machine saw them (unknown key, malformed...)."""
    refused_inbox: int = 0
    """Frames refused on the inbox (bad signature, unknown key, replay, wrong subject, malformed...)."""
    rejected: int = 0
    """Messages the machine refused (late, fenced, duplicate, not for us...)."""
    tasks: int = 0
    awards: int = 0
    cancels: int = 0
    bids: int = 0
    declines: int = 0
    acks: int = 0
    award_rejects: int = 0
    executed: int = 0
    results: int = 0
    failures: int = 0
    """Failure messages sent (backend error or timeout, lease over, shutdown)."""
    aborted: int = 0
    last_error: str = ""

    @property
    def refused(self) -> int:
        return self.refused_cfp + self.refused_inbox


class Agent:
    """One LLM endpoint in the mesh (see the module docstring)."""

    def __init__(
        self,
        identity: Identity,
        profile: ContractorProfile,
        backends: Mapping[str, Backend],
        *,
        bus: Bus,
        trust: TrustStore,
        replay_guard: ReplayGuard | None = None,
        rng: random.Random | None = None,
        system_prompt: str = DEFAULT_SYSTEM,
        stream_progress: bool = True,
        service: bool = True,
    ) -> None:
        missing = {m.name for m in profile.models} - set(backends)
        if missing:
            raise AccordError(f"agent {profile.name}: no backend for models {sorted(missing)}")
        self.identity = identity
        self.id = identity.id
        self.profile = profile
        self.backends = dict(backends)
        self.bus = bus
        self.trust = trust
        self.replay_guard = replay_guard if replay_guard is not None else ReplayGuard(start_ns=now_ns())
        self._rng = rng if rng is not None else random.Random()
        self.machine = ContractorMachine(self.id, profile, rng=self._rng)
        self.system_prompt = system_prompt
        self.stream_progress = stream_progress
        self.stats = AgentStats()
        self._want_service = service
        self._service: ServiceHandle | None = None
        self._outbox = Outbox(bus, identity)
        self._timers: TimerService[tuple[TimerKind, str]] = TimerService(self._on_timer)
        self._running: dict[tuple[str, int], anyio.CancelScope] = {}
        self._award_digests: dict[tuple[str, int], str] = {}
        """SHA-256 of the payload of each running attempt's Award, as received (its attestation binds it)."""
        self._incoming_award: tuple[str, str] | None = None
        self._inboxes: dict[str, str] = {}
        self._handlers: dict[type[Action], Callable[[Action], None]] = {
            Send: self._do_send,
            Multicast: self._do_multicast,
            SetTimer: self._do_set_timer,
            CancelTimer: self._do_cancel_timer,
            Execute: self._do_execute,
            Abort: self._do_abort,
            Rejected: self._do_rejected,
            Accept: self._do_nothing,
            Fail: self._do_nothing,
            ReportProgress: self._do_nothing,
            Outcome: self._do_nothing,
        }
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._log = log.bind(agent_id=self.id[:12], agent=profile.name)

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        """Announcement filters for this agent's tier, residency classes and skills, plus its inbox."""
        skills = list(self.profile.skills) or None
        filters = subjects.announce_filters(self.profile.tier, self.profile.residency, skills)
        return [*filters, subjects.direct_filter(self.id)]

    @property
    def done(self) -> anyio.Event:
        """Set when :meth:`run` has returned (after a stop, a crash or a cancellation)."""
        return self._done

    @property
    def service_id(self) -> str | None:
        """This agent's instance id in the NATS service protocol (None when the bus hosts no service)."""
        return self._service.id if self._service is not None else None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, advertise, serve until :meth:`stop`; then fail running work, withdraw and return."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self._timers.run)
                await tg.start(self._outbox.run)
                for subject in self.subscriptions():
                    sub = await self.bus.subscribe(subject, max_pending=4096)
                    tg.start_soon(self._pump, sub, subject.startswith(f"{subjects.PREFIX}.cfp."))
                await self._register_service()
                self._apply(self.machine.handle(Start(), now=now_ns()))
                self._log.info("agent.online", tier=self.profile.tier.value, models=list(self.backends))
                task_status.started()
                await self._stop.wait()
                self._apply(self.machine.handle(Shutdown(), now=now_ns()))
                await self._outbox.drain()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                if self._service is not None:
                    await self._service.stop()
            self._done.set()
        self._log.info("agent.offline", **_stats(self.stats))

    async def stop(self) -> None:
        """Leave gracefully: running work fails with ``shutdown``, a Withdraw goes out, ``run`` returns."""
        self._stop.set()

    async def _register_service(self) -> None:
        if not self._want_service or not isinstance(self.bus, ServiceHost):
            return
        p = self.profile
        metadata = {
            "agent_id": self.id,
            "name": p.name,
            "tier": p.tier.value,
            "region": p.region,
            "models": ",".join(m.name for m in p.models),
            "protocol": subjects.PREFIX,
        }
        endpoints = (
            ServiceEndpoint(
                "cfp", f"{subjects.PREFIX}.cfp.>", {"what": "calls for proposals; errors: frames refused"}
            ),
            ServiceEndpoint(
                "award", subjects.direct_filter(self.id), {"what": "awards; errors: rejects, failures, refusals"}
            ),
        )
        try:
            self._service = await self.bus.add_service(
                SERVICE_NAME,
                accord.__version__,
                description=f"Accord agent {p.name}",
                metadata=metadata,
                endpoints=endpoints,
                stats=self.service_counts,
            )
        except BusError as exc:
            self._log.warning("service.unavailable", error=str(exc))

    def service_counts(self) -> dict[str, EndpointCounts]:
        """The per-endpoint counts ``$SRV.STATS`` reports (see the module docstring)."""
        s = self.stats
        return {
            "cfp": EndpointCounts(
                requests=s.tasks,
                errors=s.refused_cfp,
                last_error=s.last_error,
                data={"bids": s.bids, "declines": s.declines, "free_slots": self.machine.free_slots},
            ),
            "award": EndpointCounts(
                requests=s.awards,
                errors=s.award_rejects + s.failures + s.refused_inbox,
                last_error=s.last_error,
                data={
                    "acks": s.acks,
                    "executed": s.executed,
                    "results": s.results,
                    "failures": s.failures,
                    "award_rejects": s.award_rejects,
                    "cancels": s.cancels,
                    "aborted": s.aborted,
                    "refused": s.refused_inbox,
                },
            ),
        }

    # --- receiving ----------------------------------------------------------------------------------------------
    async def _pump(self, sub: Subscription, broadcast: bool) -> None:
        outbox = self._outbox
        async with sub:
            async for msg in sub:
                outbox.hold()  # what the machine sends in answer goes out from this task, before the next read
                try:
                    self._receive(msg, broadcast)
                except Exception:  # the top of a shell loop: log and go on (never swallow cancellation)
                    self._log.exception("frame.crashed", subject=msg.subject)
                await outbox.flush()

    def _refuse(self, msg: BusMessage, broadcast: bool, exc: AccordError) -> None:
        if broadcast:
            self.stats.refused_cfp += 1
        else:
            self.stats.refused_inbox += 1
        self.stats.last_error = str(exc)[:200]
        if isinstance(exc, ReplayError):  # duplicates happen on any at-least-once path: not alarming
            self._log.debug("frame.refused", subject=msg.subject, error=str(exc))
        else:
            self._log.warning("frame.refused", subject=msg.subject, error=str(exc))

    def _receive(self, msg: BusMessage, broadcast: bool) -> None:
        self.stats.received += 1
        now = now_ns()
        try:
            peeked = peek(msg.data)
            message = peeked.message
            if msg.subject.rpartition(".")[2] != message.sender:  # spec 4.1: the last token is the publisher
                raise SignatureError(Reason.SENDER_MISMATCH, f"{message.sender} published on {msg.subject}")
            if isinstance(message, Task):
                self.trust.check(message.sender, now)  # a dict lookup; the signature is not needed to bid
                if message.messages and prompt_digest(message.messages) != message.prompt_digest:
                    # spec 3.4: never bid on a prompt that is not the one the digest (and the award) binds
                    raise RemoteProtocolError("prompt_mismatch", "prompt_digest is not the prompt's digest")
            elif isinstance(message, Award | Cancel):
                message = verify(peeked, self.trust, now, replay_guard=self.replay_guard).message
            else:  # nothing else is addressed to a contractor: let the machine report it, unverified
                self.stats.rejected += 1
                self._log.debug("message.unexpected", type=type(message).__name__)
                return
        except AccordError as exc:
            self._refuse(msg, broadcast, exc)
            return
        if isinstance(message, Task):
            self.stats.tasks += 1
        elif isinstance(message, Award):
            self.stats.awards += 1
            # bound to the attempt only if the machine accepts this very Award (an Execute naming its id): an
            # Award the machine refuses must change nothing, the digest of a running award least of all
            self._incoming_award = (message.id, payload_digest(peeked.payload))
        else:
            self.stats.cancels += 1
        try:
            self._feed(Received(message, broadcast=broadcast), now)
        finally:
            self._incoming_award = None

    def _feed(self, event: Event, now: int | None = None) -> None:
        try:
            actions = self.machine.handle(event, now=now_ns() if now is None else now)
        except AccordError as exc:
            self.stats.rejected += 1
            self._log.warning("event.refused", event=type(event).__name__, error=str(exc))
            return
        self._apply(actions)

    def _on_timer(self, key: tuple[TimerKind, str]) -> None:
        self._feed(TimerFired(key[0], key[1]))

    # --- carrying out actions ---------------------------------------------------------------------------------
    def _apply(self, actions: list[Action]) -> None:
        handlers = self._handlers
        for action in actions:
            handlers[type(action)](action)

    def _do_send(self, action: Action) -> None:
        assert isinstance(action, Send)
        message = action.message
        counter = _SENT_COUNTERS.get(type(message))
        if counter is not None:
            counter(self.stats, message)
        to = action.to
        if isinstance(to, Broadcast):
            subject = subjects.advertise(self.profile.tier, self.profile.region, self.id)
        else:
            subject = self._inbox_of(to)
        self._outbox.send(subject, message)

    def _inbox_of(self, to: str) -> str:
        """``subjects.direct(to, self)``, validated once per peer (the cache is bounded)."""
        subject = self._inboxes.get(to)
        if subject is None:
            if len(self._inboxes) > 4096:
                self._inboxes.clear()
            subject = self._inboxes[to] = subjects.direct(to, self.id)
        return subject

    def _do_multicast(self, action: Action) -> None:
        assert isinstance(action, Multicast)
        self._outbox.multicast([self._inbox_of(to) for to in action.to], action.message)

    def _do_set_timer(self, action: Action) -> None:
        assert isinstance(action, SetTimer)
        self._timers.set((action.kind, action.task_id), action.at_ns)

    def _do_cancel_timer(self, action: Action) -> None:
        assert isinstance(action, CancelTimer)
        self._timers.cancel((action.kind, action.task_id))

    def _do_execute(self, action: Action) -> None:
        assert isinstance(action, Execute)
        self._start_execution(action)

    def _do_abort(self, action: Action) -> None:
        assert isinstance(action, Abort)
        key = (action.task_id, action.attempt)
        self._award_digests.pop(key, None)
        scope = self._running.pop(key, None)
        if scope is not None:
            self.stats.aborted += 1
            scope.cancel()

    def _do_rejected(self, action: Action) -> None:
        assert isinstance(action, Rejected)
        self.stats.rejected += 1
        self._log.debug("message.rejected", reason=action.reason.value, detail=action.detail)

    def _do_nothing(self, action: Action) -> None:
        """Requester-side reports (Accept, Fail, ReportProgress, Outcome) never come from a contractor."""
        self._log.warning("action.unexpected", action=type(action).__name__)

    # --- executing ----------------------------------------------------------------------------------------------
    def _start_execution(self, action: Execute) -> None:
        assert self._tg is not None
        key = (action.award.task_id, action.award.attempt)
        incoming = self._incoming_award
        if incoming is not None and incoming[0] == action.award.id:
            self._award_digests[key] = incoming[1]
        scope = anyio.CancelScope()
        self._running[key] = scope
        self.stats.executed += 1
        self._tg.start_soon(self._execute, action, scope)

    async def _execute(self, action: Execute, scope: anyio.CancelScope) -> None:
        task, award = action.task, action.award
        key = (award.task_id, award.attempt)
        backend = self.backends[action.model]
        report: Event | None = None
        with scope:
            if not task.messages:
                report = ExecutionFailed(
                    award.task_id, award.attempt, reason=ReasonCode.OTHER, detail="prompt_ref is not supported"
                )
            else:
                try:
                    completion = await backend.complete(
                        self._request(task, award, action.model),
                        on_delta=self._progress_callback(award) if self.stream_progress else None,
                    )
                except BackendError as exc:
                    self._log.warning(
                        "task.failed", task_id=award.task_id, reason=exc.reason.value, error=str(exc)
                    )
                    report = ExecutionFailed(
                        award.task_id, award.attempt, reason=exc.reason_code, detail=str(exc)[:500]
                    )
                except Exception as exc:  # a backend bug must not take the agent down: report it as a Failure
                    self._log.exception("task.crashed", task_id=award.task_id)
                    report = ExecutionFailed(
                        award.task_id,
                        award.attempt,
                        reason=ReasonCode.BACKEND_ERROR,
                        detail=f"{type(exc).__name__}: {exc}"[:500],
                    )
                else:
                    envelope = self._attest(task, award, action.model, backend.name, completion)
                    report = ExecutionDone(
                        award.task_id,
                        award.attempt,
                        completion.text,
                        usage=completion.usage,
                        timings=completion.timings,
                        attestation=envelope,
                    )
        self._award_digests.pop(key, None)
        if self._running.get(key) is scope:
            del self._running[key]
        if report is not None and not scope.cancel_called:
            self._outbox.hold()
            try:
                self._feed(report)
            finally:
                await self._outbox.flush()  # the Result goes out from this task: no hop to the outbox's

    def _request(self, task: Task, award: Award, model: str) -> CompletionRequest:
        messages = list(task.messages)
        if not messages or messages[0].role is not Role.SYSTEM:
            messages.insert(0, ChatMessage(role=Role.SYSTEM, content=self.system_prompt))
        deadline = min(award.lease_until_ns, task.constraints.deadline_ns)
        return CompletionRequest(
            messages=messages, model=model, max_tokens=task.max_output_tokens, deadline_ns=deadline
        )

    def _progress_callback(self, award: Award) -> DeltaCallback:
        async def on_delta(delta: Delta) -> None:
            self._feed(ExecutionProgress(award.task_id, award.attempt, delta.text, delta.output_tokens))

        return on_delta

    def _attest(self, task: Task, award: Award, model: str, backend: str, completion: Completion) -> bytes:
        key = (award.task_id, award.attempt)
        statement = Attestation(
            id=new_message_id(self._rng),
            sender=self.id,
            ts=now_ns(),
            task_id=award.task_id,
            attempt=award.attempt,
            agent=self.id,
            requester=award.sender,
            prompt_digest=task.prompt_digest,
            award_digest=self._award_digests.get(key) or payload_digest(b""),
            output_digest=output_digest(completion.text),
            model=model,
            backend=subjects.validate_token(backend, "backend"),
            usage=completion.usage,
            timings=completion.timings,
        )
        return attest(statement, self.identity)

    @property
    def is_online(self) -> bool:
        return self.machine.state is AgentState.ONLINE


def _count_bid(s: AgentStats, m: Message) -> None:
    s.bids += 1


def _count_decline(s: AgentStats, m: Message) -> None:
    s.declines += 1


def _count_ack(s: AgentStats, m: Message) -> None:
    s.acks += 1


def _count_reject(s: AgentStats, m: Message) -> None:
    s.award_rejects += 1


def _count_result(s: AgentStats, m: Message) -> None:
    s.results += 1


def _count_failure(s: AgentStats, m: Message) -> None:
    assert isinstance(m, Failure)
    s.failures += 1
    s.last_error = f"failure {m.reason}: {m.detail}"[:200]


_SENT_COUNTERS: dict[type[Message], Callable[[AgentStats, Message], None]] = {
    Bid: _count_bid,
    Decline: _count_decline,
    AwardAck: _count_ack,
    AwardReject: _count_reject,
    Result: _count_result,
    Failure: _count_failure,
}


def _stats(stats: AgentStats) -> dict[str, int | str]:
    return dataclasses.asdict(stats)
