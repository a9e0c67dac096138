"""The contractor machine (spec section 5): one per agent, sans-I/O, holding one job per task it has seen.

Per task (job)::

    NONE --Task, can do it, slot free--> BIDDING (slot reserved until the bid lapses)
    NONE --Task(direct), can do it--> OFFERED (no slot yet)
    NONE --Task, cannot--> RELEASED (+ Decline unless the Task was broadcast)
    BIDDING | OFFERED --Award, acceptable--> RUNNING (Execute; slot held; the AwardAck held a moment, below)
    BIDDING | OFFERED --Award, not acceptable--> RELEASED (AwardReject)
    BIDDING --bid lapses--> RELEASED
    BIDDING | OFFERED --Cancel from the requester (any attempt, or all)--> RELEASED, closed (bid forgotten)
    RUNNING --ExecutionDone--> DONE (Result);  --ExecutionFailed / lease over--> DONE (Failure)
    RUNNING --Cancel of its attempt (or all)--> RELEASED, closed (Abort)
    RELEASED (not closed) --Task of a later attempt (re-announce)--> evaluated afresh

The agent itself: INIT --Start--> ONLINE (Advertise every ttl/3, and soon after a Solicited, at most one per
``SOLICITED_ADVERT_GAP_MS``) --Shutdown--> STOPPED (running work fails with
``shutdown``, Withdraw). The transition table is keyed by the job's state for task events while ONLINE, and by
the agent's state otherwise.

Capacity: ``slots`` concurrent jobs; a slot is held exactly while a job is BIDDING or RUNNING, and released on
every other path (bid lapse, cancel, reject, done, failed, lease over, shutdown). A crash loses everything:
restart means a fresh machine (all slots free; Awards for bids made before the crash are rejected with
``unknown_task``, and their requesters re-award after the ack timeout).

Losing: a requester tells every bidder when the task ends (one Cancel for all attempts, spec 5.9), and tells an
awardee whose attempt it revoked (a Cancel naming the attempt). Either way a job that only holds a bid releases
its slot at once: the requester never awards an agent twice, so the bid can no longer win. A job closed by a
Cancel stays closed: a re-announce of the task that arrives later (reordered, delayed) gets no new bid.

Acknowledging: the AwardAck waits up to ``ack_delay_ms`` (at most a quarter of the award's ack window). A
Result, Progress or Failure sent meanwhile acknowledges the award (spec 5.1), and the AwardAck is never sent: a
task done within the delay costs one frame, one signature and one check less. Otherwise the SEND_ACK timer sends
it, as does a repeated Award (the requester is waiting for it).

The shell verifies the signature of every Task, Award and Cancel before feeding it; the machine checks that an
Award names this agent and the bid it made (id and digest), and that Award and Cancel come from the task's
requester. The shell publishes ``encode(message)`` as the payload: the machine computes its bids' digests from
that canonical encoding to check the Award's ``bid_digest``.
"""

from __future__ import annotations

import enum
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
from msgspec import Struct

from accord.errors import LocalProtocolError
from accord.protocol.actions import (
    BROADCAST,
    Abort,
    Action,
    CancelTimer,
    Execute,
    Reject,
    RejectReason,
    Send,
    SetTimer,
    new_message_id,
)
from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.events import (
    DeviceChanged,
    Distrusted,
    Event,
    EventType,
    ExecutionDone,
    ExecutionFailed,
    ExecutionProgress,
    Received,
    TimerFired,
    TimerKind,
    event_type,
)
from accord.protocol.market import NS_PER_MS, score, sheet_quote
from accord.protocol.messages import (
    ALLOWED_REASONS,
    MAX_SKEW_NS,
    Advertise,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    Decline,
    Failure,
    Mechanism,
    ModelOffer,
    Privacy,
    Progress,
    ReasonCode,
    Result,
    Task,
    Tier,
    Withdraw,
)
from accord.protocol.pricing import DeviceState, Quote, Refusal, ResourceModel, estimate_prompt_tokens

__all__ = [
    "AgentState",
    "ContractorMachine",
    "ContractorProfile",
    "SOLICITED_ADVERT_GAP_MS",
    "JobState",
    "prompt_tokens_of",
    "quote_task",
]

SOLICITED_ADVERT_GAP_MS: Final = 250
"""The least time between two adverts when the second one is solicited (a NATS service PING): a burst of pings
from starting requesters costs each agent at most four adverts a second."""


class AgentState(enum.Enum):
    __hash__ = object.__hash__  # identity hash: faster table lookups (members are singletons)

    INIT = "init"
    ONLINE = "online"
    STOPPED = "stopped"


class JobState(enum.Enum):
    __hash__ = object.__hash__  # identity hash: faster table lookups (members are singletons)

    NONE = "none"
    """No record of the task (never seen, or forgotten after its deadline)."""
    BIDDING = "bidding"
    OFFERED = "offered"
    RUNNING = "running"
    DONE = "done"
    RELEASED = "released"


_J = JobState
_HOLDS_SLOT: Final = frozenset({_J.BIDDING, _J.RUNNING})
_OPEN: Final = frozenset({_J.BIDDING, _J.OFFERED, _J.RUNNING})
"""Jobs that keep their Task's prompt (and count against its requester's quota)."""


def _prompt_bytes(task: Task) -> int:
    return sum(len(m.content) for m in task.messages)


def _without_prompt(task: Task) -> Task:
    """What a finished job keeps of its Task: everything but the prompt (the digest still names it)."""
    return msgspec.structs.replace(task, messages=[]) if task.messages else task


class ContractorProfile(Struct, frozen=True, kw_only=True):
    """What an agent serves and at what cost; the Advertise it sends is built from this and the device's state.

    ``tier``, ``region``, ``residency`` and ``privacy`` must be what the agent's certificate says (spec 10.2):
    requesters check every claim against the certificate and refuse an offer that contradicts it."""

    name: str
    tier: Tier
    region: str
    models: tuple[ResourceModel, ...]
    """Each model it serves, with its price sheet, capacity, link and battery policy (protocol/pricing.py)."""
    residency: tuple[str, ...] = ()
    """Residency classes it is certified to serve."""
    privacy: tuple[Privacy, ...] = (Privacy.PUBLIC,)
    """Privacy classes it is certified to serve."""
    skills: tuple[str, ...] = ("chat",)
    """Task kinds it takes; empty: any kind."""
    slots: int = 1
    overhead_ms: int = 0
    """Added to every latency estimate (queueing in the shell, anything the resource model does not see)."""
    bid_hold_ms: int = 1000
    """How long after the bid window a bid stays valid (and its slot reserved), so it can win a re-award."""
    max_hold_ms: int = 30_000
    """The longest a bid or a direct offer holds anything, whatever the Task's bid window asks (spec 5.6)."""
    max_reservations_per_requester: int | None = None
    """Slots one requester's open bids may hold at once (None: all of them)."""
    max_prompt_bytes_per_requester: int = 16 * 1024 * 1024
    """Prompt characters one requester's open jobs (bids, offers, running attempts) may hold at this agent."""
    max_prompt_bytes: int = 64 * 1024 * 1024
    """Prompt characters all open jobs together may hold at this agent."""
    max_jobs: int = 10_000
    """Tasks remembered at once (open and finished). At the bound the oldest finished records (a refused Task, a
    lapsed or cancelled bid, work done or failed) are forgotten first; open jobs never are: a Task that finds no
    room is refused (spec 11.9)."""
    max_jobs_per_requester: int = 1_000
    """Tasks of one requester remembered at once (open and finished); at the bound its own oldest record that
    holds nothing goes, else its Task is refused."""
    ttl_ms: int = 10_000
    """Advertise TTL; heartbeats go out every third of it."""
    ack_delay_ms: int = 20
    """How long the AwardAck may wait for a Result (or Progress, or Failure) that makes it redundant; never more
    than a quarter of the award's ack window (``ack_by_ns - ts``, both on the requester's clock). 0: at once."""

    def offers(self) -> tuple[ModelOffer, ...]:
        """The price sheets as configured (before any device state applies)."""
        return tuple(m.offer() for m in self.models)


def prompt_tokens_of(task: Task, counted: int | None = None) -> int:
    """The prompt size an agent prices: the shell's count with the model's tokenizer if it made one, else the
    documented estimate of the prompt it holds; the requester's ``est_input_tokens`` only when the prompt is
    not inline (``prompt_ref``), since then it is all there is."""
    if counted is not None:
        return counted
    if task.messages:
        return estimate_prompt_tokens(task.messages)
    return task.est_input_tokens


def quote_task(
    profile: ContractorProfile,
    task: Task,
    *,
    now: int,
    prompt_tokens: int | None = None,
    in_flight: int = 0,
    models: Sequence[ResourceModel] | None = None,
) -> Quote | Refusal:
    """The best of ``models`` (default: the profile's; the machine passes them as the device is now) for
    ``task`` at ``now``, or why the agent cannot take it. ``prompt_tokens``: the shell's count, else
    :func:`prompt_tokens_of` the task.

    Checks, in order: kind among skills, residency class, privacy class, tier preference, deadline not passed;
    then per model (:meth:`~accord.protocol.pricing.ResourceModel.refusal`): the prompt plus the output fit the
    context window, battery above its floor, no metered-link refusal, the queue not full; then the claimed
    quality reaches ``min_quality``, the price (battery premium and metered surcharge included) is within
    budget, and the latency estimate (queue + prefill + decode + network + overhead) finishes by the deadline
    when work starts at the end of the bid window (now, for a direct task). Among feasible models it picks the
    best by the task's own score (truthful: the price is the cost).
    """
    c = task.constraints
    if profile.skills and task.kind not in profile.skills:
        return Refusal(reason=ReasonCode.UNSUPPORTED_KIND)
    if c.residency is not None and c.residency not in profile.residency:
        return Refusal(reason=ReasonCode.RESIDENCY)
    if c.privacy not in profile.privacy:
        return Refusal(reason=ReasonCode.PRIVACY)
    if c.preferred_tiers and profile.tier not in c.preferred_tiers:
        return Refusal(reason=ReasonCode.OTHER, detail="tier")
    # Timing is judged on the requester's clock, which wrote ts and the deadline (spec 9.3): our now may read
    # up to MAX_SKEW_NS ahead of it, so the earliest start on its clock is now - skew, but never before the
    # bid window it set closes (a deadline inside the window is infeasible whatever the clocks say).
    deadline = c.deadline_ns
    earliest = now - MAX_SKEW_NS
    if earliest >= deadline:
        return Refusal(reason=ReasonCode.DEADLINE_INFEASIBLE)
    window_end = task.ts if task.mechanism is Mechanism.DIRECT else task.ts + task.bid_window_ms * NS_PER_MS
    start = max(earliest, window_end)
    out_tokens = task.max_output_tokens
    prompt_tokens = prompt_tokens_of(task, prompt_tokens)
    best: tuple[float, int, int, str] | None = None
    best_quality = 0.0
    refusal = Refusal(reason=ReasonCode.OTHER)
    for m in profile.models if models is None else models:
        why = m.refusal(prompt_tokens, out_tokens, in_flight)
        if why is not None:
            refusal = why
            continue
        if m.quality < c.min_quality:
            refusal = Refusal(reason=ReasonCode.QUALITY_BELOW_MIN)
            continue
        price = m.price_micros(prompt_tokens, out_tokens)
        if price > c.max_price_micros:
            refusal = Refusal(reason=ReasonCode.OVER_BUDGET)
            continue
        latency = m.estimate_latency_ms(prompt_tokens, out_tokens, in_flight) + profile.overhead_ms
        if start + latency * NS_PER_MS > deadline:
            refusal = Refusal(reason=ReasonCode.DEADLINE_INFEASIBLE)
            continue
        key = (-score(m.quality, price, latency, task.policy), price, latency, m.model)
        if best is None or key < best:
            best = key
            best_quality = m.quality
    if best is None:
        return refusal
    return Quote(model=best[3], price_micros=best[1], est_latency_ms=best[2], quality=best_quality)


_FOREIGN_BID: Final = "award names another bid"


class _Job:
    """One task as this contractor sees it."""

    __slots__ = (
        "ack",
        "award",
        "bid",
        "bid_digest",
        "closed",
        "idle",
        "progress_seq",
        "prompt_bytes",
        "prompt_tokens",
        "quote",
        "reason",
        "state",
        "task",
    )

    def __init__(self, task: Task, state: JobState, prompt_tokens: int = 0) -> None:
        self.task = task if state in _OPEN else _without_prompt(task)
        self.prompt_bytes = _prompt_bytes(task) if state in _OPEN else 0
        """What this job holds against its requester's byte quota (0 once it is over)."""
        self.state = state
        self.prompt_tokens = prompt_tokens
        """The prompt's size as this agent priced it (its own count, never the requester's claim)."""
        self.quote: Quote | None = None
        self.bid: Bid | None = None
        self.bid_digest = ""
        self.award: Award | None = None
        self.ack: AwardAck | None = None
        self.reason: ReasonCode | None = None
        self.progress_seq = 0
        self.closed = False
        """A Cancel from the requester ended this job: later Tasks of the task are not bid on."""
        self.idle = False
        """Filed among the records that hold nothing (:meth:`ContractorMachine._settle`): the first to go."""

    @property
    def holds_nothing(self) -> bool:
        """Finished (a refused Task, a lapsed or cancelled bid, work done or failed): it holds no slot, no
        reservation and no prompt, and only tells a duplicate frame apart, which the replay guard does for every
        frame that acts (an Award, a Cancel). Forgetting it loses nothing anyone relies on: at worst a late copy of
        the Task gets a bid the requester ignores. A requester that runs many tasks at once is not throttled by
        the records of the ones that ended (spec 11.9)."""
        return self.state not in _OPEN


Handler = Callable[["ContractorMachine", Event, "_Job | None", int], list[Action]]

_TASK_EVENTS: Final = frozenset(
    {
        EventType.TASK,
        EventType.AWARD,
        EventType.CANCEL,
        EventType.BID_EXPIRED,
        EventType.LEASE_EXPIRED,
        EventType.SEND_ACK_DUE,
        EventType.EXECUTION_PROGRESS,
        EventType.EXECUTION_DONE,
        EventType.EXECUTION_FAILED,
    }
)


def _task_id(event: Event) -> str:
    if isinstance(event, Received):
        msg = event.message
        if isinstance(msg, Task | Award | Cancel):
            return msg.task_id
        raise LocalProtocolError(f"not a task message: {type(msg).__name__}")  # pragma: no cover
    if isinstance(event, TimerFired | ExecutionProgress | ExecutionDone | ExecutionFailed):
        return event.task_id
    raise LocalProtocolError(f"not a task event: {type(event).__name__}")  # pragma: no cover


class ContractorMachine:
    """One agent's contractor side. See the module docstring for the contract."""

    __slots__ = (
        "_advertised_ns",
        "_bytes",
        "_bytes_total",
        "_device",
        "_idle",
        "_idle_by",
        "_jobs",
        "_live",
        "_records",
        "_reserved",
        "_rng",
        "_seq",
        "_sheet",
        "_state",
        "_timers",
        "_used",
        "agent_id",
        "profile",
    )

    def __init__(
        self, agent_id: str, profile: ContractorProfile, *, rng: random.Random, device: DeviceState | None = None
    ) -> None:
        """``agent_id``: this agent's id (sender of what it sends). ``rng``: the source of message ids.
        ``device``: the device's state when the machine starts (default: mains power, the configured link)."""
        if profile.slots < 1:
            raise LocalProtocolError("a contractor needs at least one slot")
        if not profile.models:
            raise LocalProtocolError("a contractor serves at least one model")
        self.agent_id = agent_id
        self.profile = profile
        self._rng = rng
        self._device = device if device is not None else DeviceState()
        self._reserved: Counter[str] = Counter()
        """Slots held by each requester's open bids."""
        self._bytes: Counter[str] = Counter()
        """Prompt characters held by each requester's open jobs."""
        self._bytes_total = 0
        self._records: Counter[str] = Counter()
        """Jobs (open and finished) remembered per requester."""
        self._idle: OrderedDict[str, None] = OrderedDict()
        """Task ids of the jobs that hold nothing (:attr:`_Job.holds_nothing`), oldest first (an OrderedDict:
        taking the first of a dict whose head was deleted over and over costs a scan)."""
        self._idle_by: dict[str, OrderedDict[str, None]] = {}
        """The same, per requester."""
        self._live = tuple(m.with_state(self._device) for m in profile.models)
        self._sheet: tuple[object, ...] = ()
        """What the last Advertise said about prices, battery and link (a change re-advertises at once)."""
        self._state = AgentState.INIT
        self._jobs: dict[str, _Job] = {}
        self._used = 0
        self._seq = 0
        self._advertised_ns = 0
        self._timers: dict[tuple[TimerKind, str], int] = {}

    # --- read-only view -----------------------------------------------------------------------------------------
    @property
    def state(self) -> AgentState:
        return self._state

    @property
    def used_slots(self) -> int:
        return self._used

    @property
    def free_slots(self) -> int:
        return self.profile.slots - self._used

    @property
    def jobs_held(self) -> int:
        """Tasks remembered now, open and finished (at most ``max_jobs``)."""
        return len(self._jobs)

    @property
    def prompt_bytes_held(self) -> int:
        """Prompt characters the open jobs hold now (at most ``max_prompt_bytes``)."""
        return self._bytes_total

    @property
    def models(self) -> tuple[ResourceModel, ...]:
        """The served models as the device is now (battery, link and measured rates applied)."""
        return self._live

    @property
    def device(self) -> DeviceState:
        return self._device

    def job_state(self, task_id: str) -> JobState:
        job = self._jobs.get(task_id)
        return job.state if job is not None else JobState.NONE

    @property
    def timers(self) -> dict[tuple[TimerKind, str], int]:
        """Armed timers ((kind, task_id) -> at_ns); a copy."""
        return dict(self._timers)

    # --- the one entry point ------------------------------------------------------------------------------------
    def handle(self, event: Event, *, now: int) -> list[Action]:
        """Apply one event at ``now`` (ns); the actions for the shell, in order.

        Raises LocalProtocolError for a pair missing from the transition table (an event before Start, Start
        twice, an event meant for a requester such as an Advertise or a Recovered).
        """
        etype = event_type(event)
        job: _Job | None = None
        if self._state is AgentState.ONLINE and etype in _TASK_EVENTS:
            job = self._jobs.get(_task_id(event))
            key: tuple[AgentState | JobState, EventType] = (job.state if job is not None else _J.NONE, etype)
        else:
            key = (self._state, etype)
        handler = _TABLE.get(key)
        if handler is None:
            raise LocalProtocolError(f"contractor: no transition for {etype.name} in state {key[0].name}")
        return handler(self, event, job, now)

    # --- helpers ------------------------------------------------------------------------------------------------
    def _arm(self, kind: TimerKind, at_ns: int, task_id: str = "") -> SetTimer:
        self._timers[(kind, task_id)] = at_ns
        return SetTimer(kind, at_ns, task_id)

    def _disarm(self, kind: TimerKind, task_id: str = "") -> list[Action]:
        if self._timers.pop((kind, task_id), None) is None:
            return []
        return [CancelTimer(kind, task_id)]

    def _due(self, kind: TimerKind, task_id: str, now: int) -> bool:
        at = self._timers.get((kind, task_id))
        if at is None or now < at:
            return False
        del self._timers[(kind, task_id)]
        return True

    def _release(self, job: _Job, state: JobState, reason: ReasonCode | None) -> list[Action]:
        """Leave BIDDING/OFFERED/RUNNING: free the slot, disarm the job's timers."""
        task_id = job.task.task_id
        out: list[Action] = []
        if job.state in _HOLDS_SLOT:
            self._used -= 1
        sender = job.task.sender
        if job.state is _J.BIDDING:
            self._unreserve(sender)
        if job.prompt_bytes and state not in _OPEN:
            self._bytes[sender] -= job.prompt_bytes
            self._bytes_total -= job.prompt_bytes
            if not self._bytes[sender]:
                del self._bytes[sender]
            job.prompt_bytes = 0
            job.task = _without_prompt(job.task)
        out += self._disarm(TimerKind.BID_EXPIRY, task_id)
        out += self._disarm(TimerKind.LEASE, task_id)
        out += self._disarm(TimerKind.SEND_ACK, task_id)  # a held AwardAck: the attempt's end answers the award
        job.state = state
        job.reason = reason
        self._settle(job)
        return out

    def _hold_ack(self, job: _Job, award: Award, ack: AwardAck, now: int) -> Action:
        """Send ``ack`` now, or hold it for ``ack_delay_ms`` (at most a quarter of the award's ack window): while
        the SEND_ACK timer is armed the AwardAck is held, and a Result, Progress or Failure disarms it."""
        delay = min(self.profile.ack_delay_ms * NS_PER_MS, (award.ack_by_ns - award.ts) // 4)
        if delay <= 0:
            return Send(job.task.sender, ack)
        return self._arm(TimerKind.SEND_ACK, now + delay, job.task.task_id)

    def _sheet_key(self) -> tuple[object, ...]:
        offers = tuple((o.name, o.price_in_per_1k_micros, o.price_out_per_1k_micros) for o in self._offers())
        battery = self._live[0].battery
        return (*offers, None if battery is None else round(battery, 2), self._live[0].metered)

    def _offers(self) -> list[ModelOffer]:
        return [m.offer() for m in self._live]

    def _advertise(self, now: int) -> list[Action]:
        p = self.profile
        adv = Advertise(
            id=new_message_id(self._rng),
            sender=self.agent_id,
            ts=now,
            name=p.name,
            tier=p.tier,
            region=p.region,
            residency=list(p.residency),
            skills=list(p.skills),
            models=self._offers(),
            slots=p.slots,
            load=self._used,
            connectivity=self._live[0].connectivity(),
            battery=self._live[0].battery,
            ttl_ms=p.ttl_ms,
            seq=self._seq,
        )
        self._seq += 1
        self._sheet = self._sheet_key()
        self._advertised_ns = now
        return [Send(BROADCAST, adv), self._arm(TimerKind.HEARTBEAT, now + p.ttl_ms * NS_PER_MS // 3)]

    def _decline(self, task: Task, refusal: Refusal, now: int) -> Send:
        return Send(
            task.sender,
            Decline(
                id=new_message_id(self._rng),
                sender=self.agent_id,
                ts=now,
                task_id=task.task_id,
                attempt=task.attempt,
                reason=refusal.reason.value,
                detail=refusal.detail,
            ),
        )

    def _reject(self, award: Award, reason: ReasonCode, now: int, detail: str = "") -> Send:
        if reason not in ALLOWED_REASONS["award_reject"]:  # e.g. a task we dropped because it was cancelled
            reason, detail = ReasonCode.OTHER, detail or reason.value
        return Send(
            award.sender,
            AwardReject(
                id=new_message_id(self._rng),
                sender=self.agent_id,
                ts=now,
                task_id=award.task_id,
                attempt=award.attempt,
                award_id=award.id,
                reason=reason.value,
                detail=detail,
            ),
        )

    def _failure(self, job: _Job, reason: ReasonCode, now: int, detail: str = "") -> Send:
        assert job.award is not None
        return Send(
            job.task.sender,
            Failure(
                id=new_message_id(self._rng),
                sender=self.agent_id,
                ts=now,
                task_id=job.task.task_id,
                attempt=job.award.attempt,
                reason=reason.value,
                detail=detail,
            ),
        )

    def _unreserve(self, requester: str) -> None:
        self._reserved[requester] -= 1
        if not self._reserved[requester]:
            del self._reserved[requester]

    def _quota(self, task: Task, direct: bool) -> Refusal | None:
        """Why this requester may not hold more here: its open bids hold their share of the slots, or its open
        jobs (or everyone's) the prompt bytes they may keep (spec 5.6: no requester fills an agent's memory or
        slots alone)."""
        p = self.profile
        cap = p.max_reservations_per_requester
        if not direct and cap is not None and self._reserved[task.sender] >= cap:
            return Refusal(reason=ReasonCode.BUSY, detail="requester_reservations")
        size = _prompt_bytes(task)
        if self._bytes[task.sender] + size > p.max_prompt_bytes_per_requester:
            return Refusal(reason=ReasonCode.BUSY, detail="requester_bytes")
        if self._bytes_total + size > p.max_prompt_bytes:
            return Refusal(reason=ReasonCode.BUSY, detail="prompt_bytes")
        return None

    # --- records: bounded per requester and in total (spec 11.9) ------------------------------------------------
    def _file(self, job: _Job) -> _Job:
        """Remember a new job (after :meth:`_make_room` found room for it)."""
        tid, sender = job.task.task_id, job.task.sender
        self._jobs[tid] = job
        self._records[sender] += 1
        if job.prompt_bytes:
            self._bytes[sender] += job.prompt_bytes
            self._bytes_total += job.prompt_bytes
        self._settle(job)
        return job

    def _settle(self, job: _Job) -> None:
        """File ``job`` among the records that hold nothing, or take it out, as its state now says."""
        if job.holds_nothing == job.idle:
            return
        tid, sender = job.task.task_id, job.task.sender
        job.idle = not job.idle
        if job.idle:
            self._idle[tid] = None
            mine = self._idle_by.get(sender)
            if mine is None:
                mine = self._idle_by[sender] = OrderedDict()
            mine[tid] = None
        else:
            self._unfile_idle(tid, sender)

    def _unfile_idle(self, tid: str, sender: str) -> None:
        del self._idle[tid]
        mine = self._idle_by[sender]
        del mine[tid]
        if not mine:
            del self._idle_by[sender]

    def _forget(self, tid: str) -> None:
        """Drop one finished job and its bookkeeping."""
        job = self._jobs.pop(tid)
        sender = job.task.sender
        if job.idle:
            self._unfile_idle(tid, sender)
        self._records[sender] -= 1
        if not self._records[sender]:
            del self._records[sender]

    def _make_room(self, requester: str) -> str | None:
        """Before a new job of ``requester``: room under ``max_jobs_per_requester`` and ``max_jobs``, made by
        forgetting the oldest record that holds nothing (its own first). The bound that could not be kept, else
        None. O(1): nothing is scanned (deadlines are swept at heartbeats, :meth:`_gc`)."""
        p = self.profile
        if self._records[requester] >= p.max_jobs_per_requester:
            mine = self._idle_by.get(requester)
            if not mine:
                return "requester_jobs"
            self._forget(next(iter(mine)))
        if len(self._jobs) >= p.max_jobs:
            if not self._idle:
                return "max_jobs"
            self._forget(next(iter(self._idle)))
        return None

    def _gc(self, now: int) -> None:
        """Forget finished or unused jobs whose task deadline (on the requester's clock) has passed."""
        stale = [
            tid
            for tid, job in self._jobs.items()
            if job.state not in _OPEN and job.task.constraints.deadline_ns + MAX_SKEW_NS <= now
        ]
        for tid in stale:
            self._forget(tid)

    # --- agent-level handlers -----------------------------------------------------------------------------------
    def _on_start(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        self._state = AgentState.ONLINE
        return self._advertise(now)

    def _on_heartbeat(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        if not self._due(TimerKind.HEARTBEAT, "", now):
            return []
        self._gc(now)
        return self._advertise(now)

    def _on_distrusted(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        """A requester is no longer trusted (revoked): its running work stops, its bids and offers go, and it is
        told nothing more (spec 10.4)."""
        assert isinstance(event, Distrusted)
        out: list[Action] = []
        for j in self._jobs.values():
            if j.task.sender != event.agent_id or j.state not in _OPEN:
                continue
            if j.state is _J.RUNNING and j.award is not None:
                out.append(Abort(j.task.task_id, j.award.attempt, ReasonCode.VERIFICATION_FAILED))
                out += self._release(j, _J.DONE, ReasonCode.VERIFICATION_FAILED)
            else:
                out += self._release(j, _J.RELEASED, ReasonCode.VERIFICATION_FAILED)
            j.closed = True
            self._settle(j)
        return out

    def open_requesters(self) -> set[str]:
        """The requesters this agent holds bids, offers or running work for (their trust is re-checked)."""
        return {j.task.sender for j in self._jobs.values() if j.state in _OPEN}

    def _on_device_changed(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, DeviceChanged)
        self._device = event.state
        self._live = tuple(m.with_state(event.state) for m in self.profile.models)
        if self._state is AgentState.ONLINE and self._sheet_key() != self._sheet:
            return self._advertise(now)  # the price sheet moved (battery, link): tell requesters now
        return []

    def _on_solicited(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        """Bring the next heartbeat forward, not sooner than the gap after the last advert (offline: no-op)."""
        due = self._timers.get((TimerKind.HEARTBEAT, ""))
        at = max(now, self._advertised_ns + SOLICITED_ADVERT_GAP_MS * NS_PER_MS)
        if self._state is not AgentState.ONLINE or due is None or at >= due:
            return []
        return [self._arm(TimerKind.HEARTBEAT, at)]

    def _on_shutdown(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        out: list[Action] = []
        for j in self._jobs.values():
            if j.state is _J.RUNNING and j.award is not None:
                out.append(Abort(j.task.task_id, j.award.attempt, ReasonCode.SHUTDOWN))
                out.append(self._failure(j, ReasonCode.SHUTDOWN, now))
            if j.state in _HOLDS_SLOT:
                out += self._release(j, _J.RELEASED, ReasonCode.SHUTDOWN)
        self._jobs.clear()
        self._reserved.clear()
        self._bytes.clear()
        self._bytes_total = 0
        self._records.clear()
        self._idle.clear()
        self._idle_by.clear()
        out += self._disarm(TimerKind.HEARTBEAT)
        out.append(Send(BROADCAST, Withdraw(id=new_message_id(self._rng), sender=self.agent_id, ts=now)))
        self._state = AgentState.STOPPED
        return out

    def _on_unexpected(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, Received)
        return [Reject(RejectReason.UNEXPECTED, event.message)]

    def _on_stale(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        if isinstance(event, TimerFired):
            return []
        return [Reject(RejectReason.STALE, None, f"{type(event).__name__} for a job not running")]

    def _on_stopped(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        if isinstance(msg, Award) and msg.winner == self.agent_id:
            return [self._reject(msg, ReasonCode.SHUTDOWN, now), Reject(RejectReason.STOPPED, msg)]
        return [Reject(RejectReason.STOPPED, msg)]

    # --- Task ---------------------------------------------------------------------------------------------------
    def _on_task(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, Received)
        task = event.message
        assert isinstance(task, Task)
        if task.sender == self.agent_id:
            return [Reject(RejectReason.UNEXPECTED, task, "own task")]
        if job is not None:
            if job.closed:
                return [Reject(RejectReason.TERMINAL, task, "cancelled by its requester")]
            if job.state is _J.RELEASED and task.attempt > job.task.attempt:
                self._forget(task.task_id)  # a re-announce: evaluate it afresh
            elif job.state is _J.BIDDING and task.attempt > job.task.attempt and job.bid is not None:
                return [Send(task.sender, job.bid)]  # our bid may have been lost: it stands, send it again
            else:
                return [Reject(RejectReason.DUPLICATE, task)]
        p = self.profile
        full = self._make_room(task.sender)
        if full is not None:  # no record is kept: a bound is reached and nothing may be forgotten for this Task
            refused: list[Action] = [Reject(RejectReason.TOO_MANY, task, full)]
            if not event.broadcast:
                refused.append(self._decline(task, Refusal(reason=ReasonCode.BUSY, detail=full), now))
            return refused
        tokens = prompt_tokens_of(task, event.prompt_tokens)
        q = quote_task(p, task, now=now, prompt_tokens=tokens, in_flight=self._used, models=self._live)
        direct = task.mechanism is Mechanism.DIRECT
        if isinstance(q, Quote) and not direct and self._used >= p.slots:
            q = Refusal(reason=ReasonCode.BUSY, detail="no_free_slot")
        out: list[Action] = []
        if isinstance(q, Quote):
            over = self._quota(task, direct)
            if over is not None:
                q = over
                out.append(Reject(RejectReason.TOO_MANY, task, over.detail))
        deadline = task.constraints.deadline_ns
        hold_ms = min(p.max_hold_ms, task.bid_window_ms + p.bid_hold_ms)
        valid_until = min(deadline, now + hold_ms * NS_PER_MS)
        if not isinstance(q, Quote):
            self._file(_Job(task, _J.RELEASED, tokens)).reason = q.reason
            return out if event.broadcast else [*out, self._decline(task, q, now)]
        if direct:
            self._file(_Job(task, _J.OFFERED, tokens)).quote = q
            return [self._arm(TimerKind.BID_EXPIRY, min(deadline, now + p.max_hold_ms * NS_PER_MS), task.task_id)]
        price = task.constraints.max_price_micros if task.mechanism is Mechanism.POSTED_PRICE else q.price_micros
        bid = Bid(
            id=new_message_id(self._rng),
            sender=self.agent_id,
            ts=now,
            expires_ns=valid_until,
            task_id=task.task_id,
            attempt=task.attempt,
            model=q.model,
            price_micros=price,
            est_latency_ms=q.est_latency_ms,
            quality=q.quality,
            valid_until_ns=valid_until,
            tier=p.tier,
            region=p.region,
            residency=list(p.residency),
        )
        new = self._file(_Job(task, _J.BIDDING, tokens))
        new.quote = q
        new.bid = bid
        self._used += 1
        self._reserved[task.sender] += 1
        return [Send(task.sender, bid), self._arm(TimerKind.BID_EXPIRY, valid_until, task.task_id)]

    # --- Award --------------------------------------------------------------------------------------------------
    def _award_problem(self, job: _Job, award: Award, now: int) -> tuple[ReasonCode, str] | None:
        q = job.quote
        assert q is not None
        if job.state is _J.BIDDING:
            bid = job.bid
            assert bid is not None
            if not job.bid_digest:  # computed only for bids that win: the shell publishes encode(bid)
                job.bid_digest = payload_digest(encode(bid))
            if award.bid_id != bid.id or award.bid_digest != job.bid_digest:
                return ReasonCode.OTHER, _FOREIGN_BID
            if now >= bid.valid_until_ns:
                return ReasonCode.BID_EXPIRED, ""
            floor = bid.price_micros
        else:
            if self._used >= self.profile.slots:
                return ReasonCode.BUSY, ""
            floor = self._sheet_floor(job, q.model)
        if award.price_micros < floor:
            return ReasonCode.OVER_BUDGET, f"price {award.price_micros} below {floor}"
        if now >= award.ack_by_ns + MAX_SKEW_NS:  # the requester's clock (spec 9.3)
            return ReasonCode.OTHER, "ack deadline passed"
        if now + q.est_latency_ms * NS_PER_MS > award.lease_until_ns + MAX_SKEW_NS:
            return ReasonCode.DEADLINE_INFEASIBLE, "lease too short"
        return None

    def _sheet_floor(self, job: _Job, model: str) -> int:
        """A direct award pays the advertised sheet (spec 6.5), for the prompt as this agent counted it."""
        offer = next(o for o in self._offers() if o.name == model)
        return sheet_quote(offer, input_tokens=job.prompt_tokens, output_tokens=job.task.max_output_tokens)[0]

    def _on_award(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, Received)
        award = event.message
        assert isinstance(award, Award)
        if award.winner != self.agent_id:
            return [Reject(RejectReason.MISMATCH, award, "award names another agent")]
        if job is None:
            return [self._reject(award, ReasonCode.UNKNOWN_TASK, now)]
        task = job.task
        if award.sender != task.sender:
            return [Reject(RejectReason.NOT_REQUESTER, award)]
        if job.state is _J.RUNNING or job.state is _J.DONE:
            current = job.award
            assert current is not None
            if award.id == current.id:
                if job.state is _J.RUNNING and job.ack is not None:  # the requester is waiting for it: now
                    held = self._disarm(TimerKind.SEND_ACK, task.task_id)
                    return [*held, Send(task.sender, job.ack), Reject(RejectReason.DUPLICATE, award)]
                return [Reject(RejectReason.DUPLICATE, award)]
            if award.attempt < current.attempt:
                return [Reject(RejectReason.FENCED, award)]
            return [self._reject(award, ReasonCode.BUSY, now, "already took another attempt of this task")]
        if job.state is _J.RELEASED:
            return [self._reject(award, job.reason or ReasonCode.OTHER, now)]
        problem = self._award_problem(job, award, now)
        if problem is not None and problem[1] == _FOREIGN_BID:
            # A refused frame changes no state (spec 7.5): our own bid still binds us until it lapses (3.5).
            return [self._reject(award, problem[0], now, problem[1])]
        if problem is not None:
            out = self._release(job, _J.RELEASED, problem[0])
            out.append(self._reject(award, problem[0], now, problem[1]))
            return out
        q = job.quote
        assert q is not None
        out = self._disarm(TimerKind.BID_EXPIRY, task.task_id)
        if job.state is _J.OFFERED:
            self._used += 1
        ack = AwardAck(
            id=new_message_id(self._rng),
            sender=self.agent_id,
            ts=now,
            task_id=task.task_id,
            attempt=award.attempt,
            award_id=award.id,
        )
        if job.state is _J.BIDDING:
            self._unreserve(task.sender)  # a running attempt holds its slot as work, not as an open bid
        job.state = _J.RUNNING
        job.award = award
        job.ack = ack
        out.append(self._hold_ack(job, award, ack, now))
        out.append(Execute(task, award, q.model))
        out.append(self._arm(TimerKind.LEASE, award.lease_until_ns + MAX_SKEW_NS, task.task_id))
        return out

    # --- Cancel -------------------------------------------------------------------------------------------------
    def _on_cancel(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        assert isinstance(msg, Cancel)
        if job is None:
            return [Reject(RejectReason.UNKNOWN_TASK, msg)]
        if msg.sender != job.task.sender:
            return [Reject(RejectReason.NOT_REQUESTER, msg)]
        if job.state is _J.RUNNING:
            assert job.award is not None
            if msg.attempt is not None and msg.attempt != job.award.attempt:
                return [Reject(RejectReason.FENCED, msg)]
            out: list[Action] = [Abort(job.task.task_id, job.award.attempt, ReasonCode.CANCELLED)]
            job.closed = True
            return out + self._release(job, _J.RELEASED, ReasonCode.CANCELLED)
        if job.state is _J.BIDDING or job.state is _J.OFFERED:
            # The task ended (attempt null: we lost), or the attempt the requester awarded us was revoked before
            # its Award reached us (a Cancel naming an attempt goes only to that attempt's awardee). Either way
            # our bid can no longer win (no agent gets two attempts, spec 5.3): release the slot now, forget it.
            out = self._release(job, _J.RELEASED, ReasonCode.CANCELLED)
            job.closed = True
            job.bid = None
            job.bid_digest = ""
            self._settle(job)
            return out
        job.closed = True  # released or done: nothing is held, but this agent is finished with the task
        self._settle(job)
        return [Reject(RejectReason.DUPLICATE, msg)]

    # --- timers -------------------------------------------------------------------------------------------------
    def _on_bid_expired(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        """A bid lapsed, or a direct offer was not awarded within ``max_hold_ms``: let it go."""
        assert job is not None
        if not self._due(TimerKind.BID_EXPIRY, job.task.task_id, now):
            return []
        return self._release(job, _J.RELEASED, ReasonCode.BID_EXPIRED)

    def _on_send_ack(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        """Nothing acknowledged the award within the delay: the held AwardAck goes out."""
        assert job is not None and job.ack is not None
        if not self._due(TimerKind.SEND_ACK, job.task.task_id, now):
            return []
        return [Send(job.task.sender, job.ack)]

    def _on_lease_expired(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert job is not None and job.award is not None
        if not self._due(TimerKind.LEASE, job.task.task_id, now):
            return []
        attempt = job.award.attempt
        out: list[Action] = [
            Abort(job.task.task_id, attempt, ReasonCode.LEASE_EXPIRED),
            self._failure(job, ReasonCode.LEASE_EXPIRED, now),
        ]
        return out + self._release(job, _J.DONE, ReasonCode.LEASE_EXPIRED)

    # --- execution reports --------------------------------------------------------------------------------------
    def _running_attempt(self, job: _Job | None, attempt: int) -> bool:
        return job is not None and job.award is not None and job.award.attempt == attempt

    def _on_exec_progress(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, ExecutionProgress)
        if not self._running_attempt(job, event.attempt):
            return [Reject(RejectReason.STALE, None, "progress for another attempt")]
        assert job is not None
        msg = Progress(
            id=new_message_id(self._rng),
            sender=self.agent_id,
            ts=now,
            task_id=event.task_id,
            attempt=event.attempt,
            seq=job.progress_seq,
            delta=event.delta,
            output_tokens=event.output_tokens,
        )
        job.progress_seq += 1
        return [*self._disarm(TimerKind.SEND_ACK, job.task.task_id), Send(job.task.sender, msg)]

    def _on_exec_done(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, ExecutionDone)
        if not self._running_attempt(job, event.attempt):
            return [Reject(RejectReason.STALE, None, "result for another attempt")]
        assert job is not None and job.award is not None and job.quote is not None
        result = Result(
            id=new_message_id(self._rng),
            sender=self.agent_id,
            ts=now,
            task_id=event.task_id,
            attempt=event.attempt,
            award_id=job.award.id,
            model=job.quote.model,
            output=event.output,
            usage=event.usage,
            timings=event.timings,
            attestation=event.attestation,
        )
        out: list[Action] = [Send(job.task.sender, result)]
        return out + self._release(job, _J.DONE, None)

    def _on_exec_failed(self, event: Event, job: _Job | None, now: int) -> list[Action]:
        assert isinstance(event, ExecutionFailed)
        if not self._running_attempt(job, event.attempt):
            return [Reject(RejectReason.STALE, None, "failure for another attempt")]
        assert job is not None
        out: list[Action] = [self._failure(job, event.reason, now, event.detail)]
        return out + self._release(job, _J.DONE, event.reason)

    # --- invariants ---------------------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if the state is inconsistent (tests call this after every step)."""

        def check(cond: bool, what: str) -> None:
            if not cond:
                raise AssertionError(f"contractor {self.profile.name} ({self._state.name}): {what}")

        held = sum(1 for j in self._jobs.values() if j.state in _HOLDS_SLOT)
        check(0 <= self._used <= self.profile.slots, f"used slots {self._used} out of [0, {self.profile.slots}]")
        check(held == self._used, f"{held} jobs hold slots but {self._used} counted")
        job_timers = {(k, t) for (k, t) in self._timers if k is not TimerKind.HEARTBEAT}
        expected = set()
        for tid, j in self._jobs.items():
            check(j.task.task_id == tid, "job filed under another task id")
            if j.state is _J.BIDDING:
                check(j.bid is not None and j.quote is not None, "bidding without a bid")
                expected.add((TimerKind.BID_EXPIRY, tid))
            elif j.state is _J.RUNNING:
                check(j.award is not None and j.ack is not None, "running without an acked award")
                expected.add((TimerKind.LEASE, tid))
                if (TimerKind.SEND_ACK, tid) in self._timers:  # its AwardAck held (only a running job's may be)
                    expected.add((TimerKind.SEND_ACK, tid))
            elif j.state is _J.OFFERED:
                check(j.quote is not None, "offered without a quote")
                expected.add((TimerKind.BID_EXPIRY, tid))
            if j.state not in _OPEN:
                check(not j.task.messages and not j.prompt_bytes, "a finished job keeps its prompt")
            if j.closed:
                check(j.state not in _HOLDS_SLOT, "a job closed by a Cancel still holds a slot")
        check(job_timers == expected, f"job timers {job_timers} != expected {expected}")
        check(len(self._jobs) <= self.profile.max_jobs, f"{len(self._jobs)} jobs > max_jobs")
        records = Counter(j.task.sender for j in self._jobs.values())
        check(records == self._records, f"records {dict(self._records)} != {dict(records)}")
        check(
            all(n <= self.profile.max_jobs_per_requester for n in records.values()),
            "records over the requester cap",
        )
        idle = [tid for tid, j in self._jobs.items() if j.holds_nothing]
        check(set(idle) == set(self._idle), "the records that hold nothing are filed wrong")
        check(all(self._jobs[tid].idle for tid in self._idle), "an idle record is not marked")
        by: dict[str, set[str]] = {}
        for tid in idle:
            by.setdefault(self._jobs[tid].task.sender, set()).add(tid)
        check(
            by == {r: set(tids) for r, tids in self._idle_by.items()}, "idle records filed under another requester"
        )
        reserved = Counter(j.task.sender for j in self._jobs.values() if j.state is _J.BIDDING)
        check(reserved == self._reserved, f"reservations {dict(self._reserved)} != {dict(reserved)}")
        prompt_bytes: Counter[str] = Counter()
        for j in self._jobs.values():
            prompt_bytes[j.task.sender] += j.prompt_bytes
        check(+prompt_bytes == self._bytes, f"prompt bytes {dict(self._bytes)} != {dict(+prompt_bytes)}")
        check(self._bytes_total == sum(prompt_bytes.values()), "total prompt bytes miscounted")
        check(self._bytes_total <= self.profile.max_prompt_bytes, "prompt bytes over max_prompt_bytes")
        check(
            ((TimerKind.HEARTBEAT, "") in self._timers) == (self._state is AgentState.ONLINE),
            "heartbeat timer iff online",
        )
        if self._state is not AgentState.ONLINE:
            check(not self._jobs and self._used == 0, "jobs held while not online")


def _build_table() -> dict[tuple[AgentState | JobState, EventType], Handler]:
    M = ContractorMachine
    E = EventType
    t: dict[tuple[AgentState | JobState, EventType], Handler] = {}
    to_requester = (
        E.BID,
        E.DECLINE,
        E.AWARD_ACK,
        E.AWARD_REJECT,
        E.PROGRESS,
        E.RESULT,
        E.FAILURE,
    )
    execution = (E.EXECUTION_PROGRESS, E.EXECUTION_DONE, E.EXECUTION_FAILED)
    t[(AgentState.INIT, E.START)] = M._on_start
    for s in AgentState:
        t[(s, E.DISTRUSTED)] = M._on_distrusted
    for s in AgentState:
        t[(s, E.DEVICE_CHANGED)] = M._on_device_changed
    t[(AgentState.ONLINE, E.SHUTDOWN)] = M._on_shutdown
    t[(AgentState.ONLINE, E.HEARTBEAT_DUE)] = M._on_heartbeat
    t[(AgentState.STOPPED, E.HEARTBEAT_DUE)] = M._on_stale
    for state in AgentState:
        t[(state, E.SOLICITED)] = M._on_solicited
    for s in (AgentState.ONLINE, AgentState.STOPPED):
        for e in to_requester:
            t[(s, e)] = M._on_unexpected
    for e in (E.TASK, E.AWARD, E.CANCEL):
        t[(AgentState.STOPPED, e)] = M._on_stopped
    for e in (E.BID_EXPIRED, E.LEASE_EXPIRED, E.SEND_ACK_DUE, *execution):
        t[(AgentState.STOPPED, e)] = M._on_stale
    for js in JobState:
        t[(js, E.TASK)] = M._on_task
        t[(js, E.AWARD)] = M._on_award
        t[(js, E.CANCEL)] = M._on_cancel
        t[(js, E.BID_EXPIRED)] = M._on_bid_expired if js in (_J.BIDDING, _J.OFFERED) else M._on_stale
        t[(js, E.LEASE_EXPIRED)] = M._on_lease_expired if js is _J.RUNNING else M._on_stale
        t[(js, E.SEND_ACK_DUE)] = M._on_send_ack if js is _J.RUNNING else M._on_stale
        if js is _J.RUNNING:
            t[(js, E.EXECUTION_PROGRESS)] = M._on_exec_progress
            t[(js, E.EXECUTION_DONE)] = M._on_exec_done
            t[(js, E.EXECUTION_FAILED)] = M._on_exec_failed
        else:
            for e in execution:
                t[(js, e)] = M._on_stale
    return t


_TABLE: Final = _build_table()
TRANSITIONS: Final = frozenset(_TABLE)
"""Every (state, event type) pair the contractor handles; any other pair raises LocalProtocolError."""
