"""The Agent shell: a contractor machine on a bus, with LLM backends doing the work.

Thin by design (STYLE section 1): receive bytes -> verify -> decode -> ``machine.handle`` -> carry out the
actions -> encode -> sign -> publish. Every decision (whether to bid, at what price, whether to accept an award,
when to give up) is the machine's; this module only does I/O and runs backends.

Verification follows docs/VERIFICATION.md. On a bus that authenticates publishers (``authenticated_bus``: every
party is its own NATS user and may publish only as itself, spec 11.6), a call for proposals (Task) is only peeked
(its key's certificate checked before the payload is decoded, its signature not: answering it costs one bid and
starts no work), and so is a Cancel for a task this agent runs no award of (it only frees the slot a bid holds:
an agent that loses a round spends one signature, its bid, and no signature check, spec 5.9); an Award, and a
Cancel that would stop running work, are fully verified and recorded in the replay guard. On any other bus every
frame is verified (key, signature, then decoding, then freshness) before it changes anything. Every frame must
arrive on a subject whose last token is its sender (spec 4.1).

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
from functools import partial
from typing import ClassVar, assert_never

import anyio
from anyio.abc import TaskGroup, TaskStatus

from accord.backends.base import (
    Backend,
    BackendError,
    Completion,
    CompletionRequest,
    Delta,
    DeltaCallback,
    TokenCounter,
)
from accord.bus.base import Bus, BusMessage, EndpointCounts, ServiceEndpoint
from accord.errors import AccordError, RemoteProtocolError
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
    new_message_id,
)
from accord.protocol.contractor import AgentState, ContractorMachine, ContractorProfile, JobState
from accord.protocol.digests import output_digest, payload_digest, prompt_digest
from accord.protocol.events import (
    DeviceChanged,
    Distrusted,
    Event,
    ExecutionDone,
    ExecutionFailed,
    ExecutionProgress,
    Received,
    Shutdown,
    Solicited,
    Start,
    TimerFired,
    TimerKind,
)
from accord.protocol.market import Offer, contradicts
from accord.protocol.messages import (
    MAX_SKEW_NS,
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
from accord.runtime.device import DeviceProbe, RateMeter, SystemProbe
from accord.runtime.endpoint import Endpoint, EndpointLimits
from accord.runtime.timers import Clock, now_ns
from accord.security import (
    Identity,
    ReplayGuard,
    SecurityError,
    TrustStore,
    attest,
    credentials_of,
    verify,
)

__all__ = ["SERVICE_NAME", "Agent", "AgentStats"]

log = get_logger(__name__)

DEFAULT_SYSTEM = "You are a helpful assistant. Answer briefly and precisely."
_MAX_TOKEN_COUNTS = 4096

WARM_UP_PROMPT = "Count from 1 to 50, the numbers separated by spaces."
"""What :meth:`Agent.warm_up` asks each model: a reply of a predictable, long enough length to time decoding."""
_WARM_UP_TOKENS = 32
_WARM_UP_TIMEOUT_S = 60.0

SERVICE_NAME = subjects.AGENT_SERVICE
"""The NATS service kind every agent registers as (``nats micro ls`` groups them under it)."""

_TimerKey = tuple[TimerKind, str]


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


class Agent(Endpoint[_TimerKey]):
    """One LLM endpoint in the mesh (see the module docstring)."""

    service_name: ClassVar[str] = SERVICE_NAME

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
        probe: DeviceProbe | None = None,
        sample_interval_ms: int = 5_000,
        clock: Clock = now_ns,
        authenticated_bus: bool = False,
        limits: EndpointLimits | None = None,
        warm_up: bool = False,
    ) -> None:
        missing = {m.name for m in profile.models} - set(backends)
        if missing:
            raise AccordError(f"agent {profile.name}: no backend for models {sorted(missing)}")
        super().__init__(
            identity,
            bus=bus,
            trust=trust,
            replay_guard=replay_guard,
            rng=rng,
            service=service,
            log=log.bind(agent_id=identity.id, agent=profile.name),
            clock=clock,
            authenticated_bus=authenticated_bus,
            limits=limits,
        )
        self.profile = profile
        _check_profile(profile, trust, identity.id, clock())
        self.backends = dict(backends)
        self.probe: DeviceProbe = probe if probe is not None else SystemProbe(profile.tier)
        self.rates = RateMeter()
        self.warm_up_on_start = warm_up
        """Run :meth:`warm_up` before subscribing and advertising (the mesh file's ``warm_up``)."""
        self.sample_interval_ms = sample_interval_ms
        self._device = self.probe.sample()
        self.machine = ContractorMachine(self.id, profile, rng=self._rng, device=self._device)
        self._counters = {m: b for m, b in self.backends.items() if isinstance(b, TokenCounter)}
        self._token_counts: dict[str, int] = {}
        """Prompt digest -> the tokenizer's count (bounded): a re-announce or duplicate is not counted twice."""
        self._counting = 0
        """Prompts being counted now (at most ``limits.token_counts``: each holds its Task)."""
        self.system_prompt = system_prompt
        self.stream_progress = stream_progress
        self.stats = AgentStats()
        self._running: dict[tuple[str, int], anyio.CancelScope] = {}
        self._award_digests: dict[tuple[str, int], str] = {}
        """SHA-256 of the payload of each running attempt's Award, as received (its attestation binds it)."""
        self._incoming_award: tuple[str, str] | None = None
        self.left_because = ""
        """Why the agent left the mesh on its own (a backend that can no longer serve), empty otherwise."""
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()
        self._done = anyio.Event()

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

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, advertise, serve until :meth:`stop`; then fail running work, withdraw and return."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self._timers.run)
                await tg.start(self._outbox.run)
                if self.warm_up_on_start:
                    await self.warm_up()
                for subject in self.subscriptions():
                    broadcast = subject.startswith(f"{subjects.PREFIX}.cfp.")
                    await self._listen(tg, subject, partial(self._receive, broadcast=broadcast), max_pending=4096)
                await self._register_service()
                self._apply(self.machine.handle(Start(), now=self.clock()))
                tg.start_soon(self._sample_device)
                tg.start_soon(self._watch_trust)
                self._log.info("agent.online", tier=self.profile.tier.value, models=list(self.backends))
                task_status.started()
                await self._stop.wait()
                self._apply(self.machine.handle(Shutdown(), now=self.clock()))
                await self._outbox.drain()
                tg.cancel_scope.cancel()
        finally:
            await self._stop_service()
            self._done.set()
        self._log.info("agent.offline", **_stats(self.stats), limited=dict(self.limited))

    async def stop(self) -> None:
        """Leave gracefully: running work fails with ``shutdown``, a Withdraw goes out, ``run`` returns."""
        self._stop.set()

    async def _sample_device(self) -> None:
        """Every ``sample_interval_ms``: probe the device, add the measured decode rates, tell the machine when
        anything changed (it re-advertises if its price sheet moved)."""
        while True:
            await anyio.sleep(self.sample_interval_ms / 1000)
            await self.resample()

    async def resample(self) -> None:
        """Probe the device now and feed the machine the new state if it changed (tests call it directly)."""
        state = self.rates.state(self.probe.sample())
        if state != self._device:
            self._device = state
            self._outbox.hold()
            try:
                self._feed(DeviceChanged(state))
            finally:
                await self._outbox.flush()

    async def warm_up(self) -> None:
        """Time one short completion of each model (:data:`WARM_UP_PROMPT`) and feed its decode rate to the
        machine, so the first advert and bids promise what was measured here rather than the configured
        ``tokens_per_s`` (a lease is twice the promise: an optimistic claim loses it). Later completions keep
        the rate current. A model whose warm-up fails or times out keeps the configured rate (logged)."""
        for model, backend in self.backends.items():
            request = CompletionRequest(
                messages=[ChatMessage(role=Role.USER, content=WARM_UP_PROMPT)],
                model=model,
                max_tokens=_WARM_UP_TOKENS,
                seed=0,
                timeout_ms=int(_WARM_UP_TIMEOUT_S * 1000),
            )
            try:
                with anyio.fail_after(_WARM_UP_TIMEOUT_S):
                    completion = await backend.complete(request)
            except (BackendError, TimeoutError) as exc:
                self._log.warning("warm_up.failed", model=model, error=str(exc) or type(exc).__name__)
                continue
            self.rates.observe(model, completion.usage.output_tokens, completion.timings)
            measured = dict(self.rates.rates()).get(model)
            self._log.info("warm_up.measured", model=model, tokens_per_s=measured, timings=completion.timings)
        await self.resample()

    async def _register_service(self) -> None:
        p = self.profile
        await self._register_as_service(
            description=f"Accord agent {p.name}",
            metadata={
                "agent_id": self.id,
                "name": p.name,
                "tier": p.tier.value,
                "region": p.region,
                "models": ",".join(m.name for m in p.models),
                "protocol": subjects.PREFIX,
            },
            endpoints=(
                ServiceEndpoint(
                    "cfp", f"{subjects.PREFIX}.cfp.>", {"what": "calls for proposals; errors: frames refused"}
                ),
                ServiceEndpoint(
                    "award",
                    subjects.direct_filter(self.id),
                    {"what": "awards; errors: rejects, failures, refusals"},
                ),
            ),
            on_ping=self._on_ping,
        )

    def _on_ping(self) -> None:
        """A service PING (someone looking for agents): advertise soon rather than at the next heartbeat."""
        self._feed(Solicited())  # sets the heartbeat timer earlier: nothing to send from here

    def service_counts(self) -> dict[str, EndpointCounts]:
        """The per-endpoint counts ``$SRV.STATS`` reports (see the module docstring)."""
        s = self.stats
        return {
            "cfp": EndpointCounts(
                requests=s.tasks,
                errors=s.refused_cfp,
                last_error=s.last_error,
                data={
                    "bids": s.bids,
                    "declines": s.declines,
                    "free_slots": self.machine.free_slots,
                    "limited": sum(self.limited.values()),
                },
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
    def _refuse(self, msg: BusMessage, broadcast: bool, exc: AccordError) -> None:
        if broadcast:
            self.stats.refused_cfp += 1
        else:
            self.stats.refused_inbox += 1
        self.stats.last_error = str(exc)[:200]
        self._log_refusal(exc, msg.subject)

    def _receive(self, msg: BusMessage, *, broadcast: bool) -> None:
        """Receive one frame (docs/VERIFICATION.md). On a bus that authenticates publishers a Task, and a Cancel
        that only frees a bid's slot, are peeked (the key trusted, the payload decoded only then); an Award, and a
        Cancel that would stop running work, are verified. On any other bus every frame is verified in full before
        it is decoded or changes anything."""
        self.stats.received += 1
        now = self.clock()
        try:
            opened = self._open(msg, now, acted_on=not self.authenticated_bus)
            message = opened.message
            if isinstance(message, Task):
                if message.messages and prompt_digest(message.messages) != message.prompt_digest:
                    # spec 3.4: never bid on a prompt that is not the one the digest (and the award) binds
                    raise RemoteProtocolError("prompt_mismatch", "prompt_digest is not the prompt's digest")
            elif isinstance(message, Award) or (
                isinstance(message, Cancel) and self.machine.job_state(message.task_id) is JobState.RUNNING
            ):
                if not opened.verified:
                    opened = verify(opened, self.trust, now, replay_guard=self.replay_guard)
                    message = opened.message
            elif not isinstance(message, Cancel):  # nothing else is addressed to a contractor
                self.stats.rejected += 1
                self._log.debug("message.unexpected", type=type(message).__name__)
                return
        except AccordError as exc:
            self._refuse(msg, broadcast, exc)
            return
        if isinstance(message, Task):
            self.stats.tasks += 1
            if self._counters and message.messages:
                counted = self._token_counts.get(message.prompt_digest)
                if counted is None:
                    if self._counting >= self.limits.token_counts:
                        self._limit_reached("token_counts", task_id=message.task_id)
                        return
                    assert self._tg is not None
                    self._counting += 1
                    self._tg.start_soon(self._count_then_feed, message, broadcast)
                    return
                self._feed(Received(message, broadcast=broadcast, prompt_tokens=counted), now)
                return
        elif isinstance(message, Award):
            self.stats.awards += 1
            # bound to the attempt only if the machine accepts this very Award (an Execute naming its id): an
            # Award the machine refuses must change nothing, the digest of a running award least of all
            self._incoming_award = (message.id, payload_digest(opened.payload))
        else:
            self.stats.cancels += 1
        try:
            self._feed(Received(message, broadcast=broadcast), now)
        finally:
            self._incoming_award = None

    async def _count_then_feed(self, task: Task, broadcast: bool) -> None:
        """Count the prompt with the model's own tokenizer (the largest count over the agent's tokenizers), then
        let the machine decide; a count that fails falls back to the documented estimate (None)."""
        counts: list[int] = []
        try:
            for backend in self._counters.values():
                try:
                    counts.append(await backend.count_prompt_tokens(self._prompt(task)))
                except BackendError as exc:
                    self._log.warning("tokens.count_failed", task_id=task.task_id, error=str(exc))
        finally:
            self._counting -= 1
        counted = max(counts) if counts else None
        if counted is not None:
            if len(self._token_counts) >= _MAX_TOKEN_COUNTS:
                self._token_counts.clear()
            self._token_counts[task.prompt_digest] = counted
        self._outbox.hold()
        try:
            self._feed(Received(task, broadcast=broadcast, prompt_tokens=counted))
        finally:
            await self._outbox.flush()

    def _feed(self, event: Event, now: int | None = None) -> None:
        try:
            actions = self.machine.handle(event, now=self.clock() if now is None else now)
        except AccordError as exc:
            self.stats.rejected += 1
            self._log_machine_refusal(event, exc)
            return
        self._apply(actions)

    def _distrusted_peers(self, now: int) -> None:
        for requester in sorted(self.machine.open_requesters()):
            if self._untrusted(requester, now):
                self._log.warning("peer.distrusted", requester=requester)
                self._feed(Distrusted(requester), now)

    def _on_timer(self, key: tuple[TimerKind, str]) -> None:
        self._feed(TimerFired(key[0], key[1]))

    # --- carrying out actions ---------------------------------------------------------------------------------
    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(to=to, message=message):
                    counter = _SENT_COUNTERS.get(type(message))
                    if counter is not None:
                        counter(self.stats, message)
                    if isinstance(to, Broadcast):
                        subject = subjects.advertise(self.profile.tier, self.profile.region, self.id)
                    else:
                        subject = self._inbox_of(to)
                    self._outbox.send(subject, message)
                case Multicast(to=to, message=message):
                    self._outbox.multicast([self._inbox_of(peer) for peer in to], message)
                case SetTimer(kind=kind, at_ns=at_ns, task_id=task_id):
                    self._timers.set((kind, task_id), at_ns)
                case CancelTimer(kind=kind, task_id=task_id):
                    self._timers.cancel((kind, task_id))
                case Execute():
                    self._start_execution(action)
                case Abort(task_id=task_id, attempt=attempt):
                    self._abort((task_id, attempt))
                case Reject(reason=reason, detail=detail):
                    self.stats.rejected += 1
                    if reason is RejectReason.TOO_MANY:
                        self._limit_reached(detail or reason.value)
                    else:
                        self._log.debug("message.rejected", reason=reason.value, detail=detail)
                case Accept() | Fail() | ReportProgress() | AttemptEnded():
                    # requester-side reports never come from a contractor machine
                    self._log.warning("action.unexpected", action=type(action).__name__)
                case _:
                    assert_never(action)

    def _abort(self, key: tuple[str, int]) -> None:
        self._award_digests.pop(key, None)
        scope = self._running.pop(key, None)
        if scope is not None:
            self.stats.aborted += 1
            scope.cancel()

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
                    if exc.lasting:  # it would fail every task it wins: leave the market, saying why
                        self.left_because = str(exc)[:500]
                        self._log.error("agent.withdrawing", cause=self.left_because)
                        self._stop.set()
                except Exception as exc:  # a backend bug must not take the agent down: report it as a Failure
                    self._log.exception("task.crashed", task_id=award.task_id)
                    report = ExecutionFailed(
                        award.task_id,
                        award.attempt,
                        reason=ReasonCode.BACKEND_ERROR,
                        detail=f"{type(exc).__name__}: {exc}"[:500],
                    )
                else:
                    self.rates.observe(action.model, completion.usage.output_tokens, completion.timings)
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

    def _prompt(self, task: Task) -> list[ChatMessage]:
        """What the backend is sent: the task's messages, after this agent's system prompt if they have none."""
        messages = list(task.messages)
        if not messages or messages[0].role is not Role.SYSTEM:
            messages.insert(0, ChatMessage(role=Role.SYSTEM, content=self.system_prompt))
        return messages

    def _request(self, task: Task, award: Award, model: str) -> CompletionRequest:
        # the requester's clock wrote both; ours may be up to max_skew apart (spec 9.3): the lease timer decides
        deadline = min(award.lease_until_ns, task.constraints.deadline_ns) + MAX_SKEW_NS
        return CompletionRequest(
            messages=self._prompt(task), model=model, max_tokens=task.max_output_tokens, deadline_ns=deadline
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
            ts=self.clock(),
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


def _check_profile(profile: ContractorProfile, trust: TrustStore, agent_id: str, now: int) -> None:
    """Refuse to start an agent whose profile claims what its own certificate does not grant: every requester
    would refuse its bids (``claim``), so it would serve nothing, silently (spec 10.2)."""
    if trust.is_revoked(agent_id):
        raise AccordError(f"agent {profile.name}: its key {agent_id} is revoked; give it a new key")
    try:
        creds = credentials_of(trust.check(agent_id, now))
    except SecurityError:
        return  # not in its own trust store (a test, or certified elsewhere): requesters decide
    offer = Offer(
        agent_id=agent_id,
        bid_id="",
        digest="",
        model="",
        price_micros=0,
        latency_ms=0,
        quality=0.0,
        valid_until_ns=0,
        tier=profile.tier,
        region=profile.region,
        residency=profile.residency,
    )
    if contradicts(offer, creds):
        raise AccordError(
            f"agent {profile.name}: its profile (tier {profile.tier.value}, region {profile.region}, residency "
            f"{list(profile.residency)}) contradicts its certificate (tier {creds.tier.value}, region "
            f"{creds.region}, residency {sorted(creds.residency)}); requesters would refuse every bid"
        )


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
