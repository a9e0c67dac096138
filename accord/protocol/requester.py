"""The requester machine (spec section 5): one per task, sans-I/O.

Lifecycle::

    CREATED --Start--> ANNOUNCED --bid--> COLLECTING --window closes--> AWARDED --ack--> ACKNOWLEDGED
                          |  ^                 |                          |  ^            |
                          |  +---re-announce---+--------------------------+  +-re-award---+
                          |  +--backoff timer-- BACKOFF <--window closes, the round got no bid--+
                          +--(direct award from the registry)--> AWARDED
    AWARDED / ACKNOWLEDGED --Result from the current awardee--> COMPLETED
    any live state --deadline / nothing left--> FAILED;  --CancelTask--> CANCELLED

Contract with the shell:

- Construct with the task's :class:`TaskSpec` and the injected hooks; the task id is drawn from ``rng`` at
  construction (:attr:`RequesterMachine.task_id`). Then ``handle(Start(), now=...)``.
- Feed every message about this task as ``Received(message, digest)``; ``digest`` is the SHA-256 of the
  payload bytes (needed for bids). The shell verifies the signature of every AwardAck, AwardReject, Progress,
  Result and Failure before feeding it; it does NOT verify bids: the machine calls ``verify_bid(bid_id,
  digest)`` for the bid it is about to award (and, under second price, for the runner-up that sets the price),
  and drops a bid that fails (``Reject(FORGED)``), moving on to the next best. Keep each bid's raw frame
  (keyed by digest) until the task is terminal so the hook can verify it.
- Carry out the returned actions in order; keep one timer per ``TimerKind`` (``task_id`` is this task's id)
  and report due timers with ``TimerFired``.
- Persistence (requester restart): after every ``handle`` call that returned actions, store
  :meth:`RequesterMachine.snapshot` (e.g. in a JetStream KV bucket keyed by task id) BEFORE carrying out the
  actions. After a crash, :meth:`RequesterMachine.restore` the last snapshot and ``handle(Recovered())``: the
  machine re-arms its timers (and fails at once if the deadline has passed). Messages that arrived while it was
  down are lost, as on any lossy link; the timers take care of them. A requester that does not persist
  snapshots loses its tasks on a crash (their awardees see no result accepted and their leases run out).

Rules the machine enforces (spec 5.3 - 5.6):

- Bids are sealed: they are only compared when the window closes (or when every agent of a targeted call has
  answered). Bids after the window are refused (``late``).
- The attempt number is the fencing epoch: each award increments it, and acks, rejects, progress, results and
  failures are accepted only from the current attempt's awardee (older attempts: ``Reject(FENCED)``).
- On ack timeout, award reject, lease expiry or Failure the attempt ends: the next eligible bid gets attempt
  n+1 (an agent never gets two attempts at one task), or the task is re-announced if the deadline leaves time
  for another round, or it fails with a typed reason. It fails with ``deadline_exceeded`` at its deadline at
  the latest: every event first checks ``now >= deadline_ns``.
- At most one result is accepted; it is the only one paid, at the award's price (<= ``max_price_micros``).
  Failed attempts are not paid.
- A round that closes without any bid is followed by a pause (``BACKOFF``) before the next round: bounded,
  exponential in the number of such rounds in a row, jittered from ``rng``, and never so long that the next
  round no longer fits before the deadline (spec 5.4).
- When the task ends (completed, failed, cancelled), the agents that may still hold a slot for it (every
  bidder recorded in any round, and a current awardee) get ONE ``Multicast`` of a ``Cancel`` for all attempts,
  except the agent whose Result was accepted and the agents already sent a Cancel for their attempt (spec 5.9).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Collection, Sequence
from typing import Final

import msgspec
from msgspec import Struct

from accord.errors import LocalProtocolError
from accord.protocol.actions import (
    BROADCAST,
    Accept,
    Action,
    AttemptEnded,
    CancelTimer,
    Fail,
    Multicast,
    Reject,
    RejectReason,
    ReportProgress,
    Send,
    SetTimer,
    new_message_id,
)
from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest, prompt_digest
from accord.protocol.events import Distrusted, Event, EventType, Received, TimerKind, event_type
from accord.protocol.market import (
    NS_PER_MS,
    CredentialLookup,
    Offer,
    QualityPredictor,
    ReputationPredictor,
    payment,
    rank,
)
from accord.protocol.messages import (
    ALLOWED_REASONS,
    MAX_FRAME_BYTES,
    MAX_SKEW_NS,
    MAX_TEXT,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    ChatMessage,
    Constraints,
    Decline,
    Failure,
    Mechanism,
    Policy,
    Progress,
    ReasonCode,
    Result,
    Task,
    reason_code,
)
from accord.protocol.pricing import estimate_prompt_tokens
from accord.protocol.registry import Registry

__all__ = [
    "BidVerifier",
    "RequesterConfig",
    "RequesterMachine",
    "RequesterSnapshot",
    "RequesterState",
    "TaskSpec",
    "fits_unencoded",
    "frame_problem",
]

BidVerifier = Callable[[str, str], bool]
"""``verify_bid(bid_id, digest)``: True iff the bid's signed frame verifies (signature by the sender's key)."""


class RequesterState(enum.Enum):
    __hash__ = object.__hash__  # identity hash: faster table lookups (members are singletons)

    CREATED = "created"
    ANNOUNCED = "announced"
    """Task published, no bid yet in this round."""
    COLLECTING = "collecting"
    """At least one bid is held; the window is open."""
    AWARDED = "awarded"
    """An award is out; its ack is due."""
    ACKNOWLEDGED = "acknowledged"
    """The awardee acked (or showed progress); its result is due by the lease."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BACKOFF = "backoff"
    """A round closed without any bid; the next Task goes out when the re-announce timer fires."""


_S = RequesterState
LIVE: Final = frozenset({_S.ANNOUNCED, _S.COLLECTING, _S.AWARDED, _S.ACKNOWLEDGED, _S.BACKOFF})
TERMINAL: Final = frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED})
_OPEN: Final = frozenset({_S.ANNOUNCED, _S.COLLECTING})
_ON_AWARD: Final = frozenset({_S.AWARDED, _S.ACKNOWLEDGED})


class RequesterConfig(Struct, frozen=True, kw_only=True):
    """Requester-side policy; none of it is on the wire."""

    ack_timeout_ms: int = 200
    """How long an awardee has to ack (the Award's ``ack_by_ns`` is ``now`` plus this, within the lease)."""
    lease_factor: float = 2.0
    lease_margin_ms: int = 200
    """Lease = min(deadline, now + max(ceil(promised latency * lease_factor), ack_timeout + lease_margin)): the
    promise (``est_latency_ms``, from award to result) bounds the lease whatever the deadline, so an awardee
    that never delivers is replaced within ``lease_factor`` times what it promised."""
    max_attempts: int = 5
    """Awards per task at most (each to a different agent)."""
    max_announces: int = 3
    """Bid rounds per task at most (the first announce counts)."""
    min_exec_ms: int = 50
    """A bid round is only started if the deadline leaves the window plus this much; with less time and a
    registry the requester awards directly from price sheets."""
    shortlist_k: int = 8
    """Agents invited per targeted call (doubled at each re-announce); 0: always broadcast."""
    max_bids: int = 1024
    """Bids recorded per task at most (all rounds)."""
    max_bid_bytes: int = 16 * 1024
    """The largest bid payload a task keeps (an honest Bid encodes in under 2 KiB; the shell holds the frame of
    every bid the machine keeps, until the task ends)."""
    max_bids_per_sender: int = 4
    """Bids one sender may hold in a task (all rounds): its advertised slots when the registry knows it, never more
    than this (an honest agent bids once a round), so no sender crowds the others out of ``max_bids``."""
    early_close: bool = True
    """Close the window as soon as every shortlisted agent has bid or declined."""
    reannounce_backoff_ms: int = 50
    """Pause before the next round after a round that got no bid; doubled for every further such round in a
    row. 0: re-announce at once (the behaviour before backoff existed)."""
    reannounce_backoff_max_ms: int = 1_000
    """Upper bound of that pause."""
    reannounce_jitter: float = 0.5
    """Fraction of the pause drawn at random (from the injected rng), in [0, 1]: the pause is uniform in
    [(1 - jitter) * p, p], so requesters that found an empty mesh at the same moment do not return together."""


class TaskSpec(Struct, frozen=True, kw_only=True):
    """What to ask (the body of the Task the machine builds). ``prompt_digest`` None: computed from
    ``messages``."""

    constraints: Constraints
    kind: str = "chat"
    messages: list[ChatMessage] = []
    prompt_digest: str | None = None
    prompt_ref: str | None = None
    est_input_tokens: int = 0
    max_output_tokens: int = 256
    policy: Policy = Policy()
    mechanism: Mechanism = Mechanism.FIRST_PRICE
    bid_window_ms: int = 50

    def to_task(self, *, sender: str, task_id: str, ts: int = 0) -> Task:
        """The Task this spec asks for, announced by ``sender`` (the one place a Task is built from a spec).

        ``est_input_tokens`` left at 0 with the prompt inline is the documented estimate of that prompt: a
        requester states honestly what it asks (agents price the prompt they receive, not this estimate)."""
        digest = self.prompt_digest if self.prompt_digest is not None else prompt_digest(self.messages)
        est = self.est_input_tokens or estimate_prompt_tokens(self.messages)
        return Task(
            id=task_id,
            sender=sender,
            ts=ts,
            task_id=task_id,
            kind=self.kind,
            messages=self.messages,
            prompt_digest=digest,
            prompt_ref=self.prompt_ref,
            est_input_tokens=est,
            max_output_tokens=self.max_output_tokens,
            constraints=self.constraints,
            policy=self.policy,
            mechanism=self.mechanism,
            bid_window_ms=self.bid_window_ms,
        )


class RequesterSnapshot(Struct, kw_only=True):
    """The machine's whole state; :meth:`RequesterMachine.snapshot` is its msgpack encoding."""

    agent_id: str
    task: Task
    """The Task as last sent (before Start: the template, ts 0)."""
    mechanism: Mechanism
    """The mechanism asked for (the Task's may differ: a direct award sends ``direct``)."""
    state: RequesterState = RequesterState.CREATED
    attempt: int = 0
    announces: int = 0
    direct: bool = False
    offers: dict[str, Offer] = {}
    dropped: set[str] = set()
    verified: set[str] = set()
    tried: list[str] = []
    invited: list[str] = []
    responded: set[str] = set()
    award: Award | None = None
    awarded: Offer | None = None
    progress_seq: int = -1
    timers: dict[TimerKind, int] = {}
    last_failure: ReasonCode | None = None
    result_id: str | None = None
    paid_micros: int = 0
    outcome: ReasonCode | None = None
    ever_offered: bool = False
    bidders: set[str] = set()
    """Agents that bid in any round and may still hold a slot for this task (at most ``max_bids``); an agent is
    removed when it is sent a Cancel for its attempt. They get the Cancel multicast when the task ends."""
    round_bids: int = 0
    """Bids received since the last bid window closed (those of the current round, or held for the next)."""
    empty_rounds: int = 0
    """Rounds in a row that closed without any bid (the backoff exponent)."""
    per_sender: dict[str, int] = {}
    """Bids recorded per sender, in any round (capped by :meth:`RequesterMachine._sender_cap`)."""
    agent: str | None = None
    """The one agent the asker named (spec 6.5): a direct award from its price sheet, else a round that invites
    it alone; no other agent is ever awarded this task."""


MAX_TASK_BYTES: Final = MAX_FRAME_BYTES - 512
"""The largest encoded Task a requester sends: a frame's bound less room for the signed envelope around it."""


def fits_unencoded(messages: Sequence[ChatMessage]) -> bool:
    """True when a Task with these messages surely fits in one frame and in the text bound, without encoding it:
    no message over MAX_TEXT characters, and four bytes a character (UTF-8's most) plus 2 KiB for the rest of the
    Task within MAX_TASK_BYTES. :func:`frame_problem` is None for every such Task."""
    total = 0
    for m in messages:
        n = len(m.content)
        if n > MAX_TEXT:
            return False
        total += n
    return 4 * total + 2048 <= MAX_TASK_BYTES


def frame_problem(task: Task) -> str | None:
    """Why ``task`` cannot travel in one frame (spec 2.1, 3.17: a message's text bound, the frame bound), or None.
    Encodes the Task only when its text could come near the bound (UTF-8 takes at most 4 bytes a character)."""
    if fits_unencoded(task.messages):
        return None
    longest = max((len(m.content) for m in task.messages), default=0)
    if longest > MAX_TEXT:
        return f"a message of {longest} characters; a message holds at most {MAX_TEXT}"
    size = len(encode(task))
    if size > MAX_TASK_BYTES:
        return f"the task is {size} bytes; a frame holds at most {MAX_FRAME_BYTES} bytes with its envelope"
    return None


_snapshot_encoder: Final = msgspec.msgpack.Encoder(order="deterministic")
_snapshot_decoder: Final = msgspec.msgpack.Decoder(RequesterSnapshot)

Handler = Callable[["RequesterMachine", Event, int], list[Action]]


class RequesterMachine:
    """One task's requester side. See the module docstring for the contract."""

    __slots__ = ("_d", "_rng", "avoid", "config", "credentials", "predictor", "registry", "verify_bid")

    def __init__(
        self,
        agent_id: str,
        spec: TaskSpec,
        *,
        rng: random.Random,
        credentials: CredentialLookup,
        verify_bid: BidVerifier,
        registry: Registry | None = None,
        predictor: QualityPredictor | None = None,
        config: RequesterConfig | None = None,
        avoid: Collection[str] = (),
        agent: str | None = None,
    ) -> None:
        """``agent_id``: this requester's own id (the ``sender`` of what it sends). ``rng``: the source of the
        task id and every message id. ``credentials``: an agent's certified credentials (None: untrusted), the
        only source of tier, region, residency and privacy for eligibility. ``verify_bid``: the signature hook
        for bids. ``registry``: enables targeted calls and direct awards (None: always
        broadcast). ``predictor``: predicted quality (default: ReputationPredictor with an empty record).
        ``avoid``: agents this task must not be awarded to, read at every award (the shell may keep adding to
        it: sibling tasks of one strategy share a set so that each goes to a different agent); like ``tried``
        they are skipped silently. Not part of the snapshot. ``agent``: ask this one agent only (a direct award
        from its advertised price sheet when the registry holds one, else a round inviting it alone)."""
        task = spec.to_task(sender=agent_id, task_id=new_message_id(rng))
        self._d = RequesterSnapshot(agent_id=agent_id, task=task, mechanism=spec.mechanism, agent=agent)
        self._rng = rng
        self.credentials = credentials
        self.verify_bid = verify_bid
        self.registry = registry
        self.predictor: QualityPredictor = predictor if predictor is not None else ReputationPredictor()
        self.config = config if config is not None else RequesterConfig()
        self.avoid = avoid

    # --- persistence --------------------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The whole state as deterministic msgpack (store it before executing a handle call's actions)."""
        return _snapshot_encoder.encode(self._d)

    @classmethod
    def restore(
        cls,
        data: bytes,
        *,
        rng: random.Random,
        credentials: CredentialLookup,
        verify_bid: BidVerifier,
        registry: Registry | None = None,
        predictor: QualityPredictor | None = None,
        config: RequesterConfig | None = None,
        avoid: Collection[str] = (),
    ) -> RequesterMachine:
        """A machine in the state of ``data``; call ``handle(Recovered(), now=...)`` next to re-arm timers."""
        self = cls.__new__(cls)
        self._d = _snapshot_decoder.decode(data)
        self._rng = rng
        self.credentials = credentials
        self.verify_bid = verify_bid
        self.registry = registry
        self.predictor = predictor if predictor is not None else ReputationPredictor()
        self.config = config if config is not None else RequesterConfig()
        self.avoid = avoid
        return self

    # --- read-only view -----------------------------------------------------------------------------------------
    @property
    def agent_id(self) -> str:
        return self._d.agent_id

    @property
    def task_id(self) -> str:
        return self._d.task.task_id

    @property
    def task(self) -> Task:
        """The Task as last announced (before Start: the template; a direct award sends a copy with mechanism
        ``direct``)."""
        return self._d.task

    @property
    def state(self) -> RequesterState:
        return self._d.state

    @property
    def attempt(self) -> int:
        """Awards made so far; the current award's attempt (the fencing epoch)."""
        return self._d.attempt

    @property
    def award(self) -> Award | None:
        """The latest Award (current while AWARDED or ACKNOWLEDGED)."""
        return self._d.award

    @property
    def is_terminal(self) -> bool:
        return self._d.state in TERMINAL

    @property
    def outcome(self) -> ReasonCode | None:
        """Why the task failed or was cancelled (None while live or when completed)."""
        return self._d.outcome

    def has_bid(self, bid_id: str) -> bool:
        """Whether the machine holds this bid (the shell keeps a bid's frame only then)."""
        return bid_id in self._d.offers

    @property
    def bids_held(self) -> int:
        """Bids recorded for this task, in any round, dropped ones included (at most ``max_bids``)."""
        return len(self._d.offers) + len(self._d.dropped)

    @property
    def paid_micros(self) -> int:
        return self._d.paid_micros

    @property
    def timers(self) -> dict[TimerKind, int]:
        """Armed timers (kind -> at_ns); a copy."""
        return dict(self._d.timers)

    # --- the one entry point ------------------------------------------------------------------------------------
    def handle(self, event: Event, *, now: int) -> list[Action]:
        """Apply one event at ``now`` (ns); the actions for the shell, in order.

        Raises LocalProtocolError for a (state, event) pair missing from the transition table (a shell bug:
        Start twice, CancelTask after the end, an Advertise or execution report fed to a requester).
        """
        d = self._d
        etype = event_type(event)
        handler = _TABLE.get((d.state, etype))
        if handler is None:
            raise LocalProtocolError(f"requester: no transition for {etype.name} in state {d.state.name}")
        if d.state in LIVE and now >= d.task.constraints.deadline_ns:
            actions = self._fail(ReasonCode.DEADLINE_EXCEEDED, now)
            if etype is EventType.CANCEL_TASK:
                return actions
            late = _TABLE.get((d.state, etype))
            if late is not None:
                actions += late(self, event, now)
            return actions
        return handler(self, event, now)

    # --- helpers ------------------------------------------------------------------------------------------------
    def _arm(self, kind: TimerKind, at_ns: int) -> SetTimer:
        self._d.timers[kind] = at_ns
        return SetTimer(kind, at_ns, self._d.task.task_id)

    def _disarm(self, *kinds: TimerKind) -> list[Action]:
        timers = self._d.timers
        out: list[Action] = []
        for kind in kinds:
            if timers.pop(kind, None) is not None:
                out.append(CancelTimer(kind, self._d.task.task_id))
        return out

    def _due(self, kind: TimerKind, now: int) -> bool:
        """True (and disarmed) if timer ``kind`` is armed and due; a stale or early firing is ignored."""
        at = self._d.timers.get(kind)
        if at is None or now < at:
            return False
        del self._d.timers[kind]
        return True

    def _cancel_msg(self, now: int, attempt: int | None, reason: ReasonCode) -> Cancel:
        d = self._d
        return Cancel(
            id=new_message_id(self._rng),
            sender=d.agent_id,
            ts=now,
            task_id=d.task.task_id,
            attempt=attempt,
            reason=reason.value,
        )

    def _release_all(self, now: int, reason: ReasonCode, *, keep: str | None = None) -> list[Action]:
        """The task is ending: ONE Cancel (all attempts) to every agent that may still hold a slot for it, the
        recorded bidders and a current awardee, except ``keep`` (the agent whose Result was accepted)."""
        d = self._d
        to = set(d.bidders)
        if d.state in _ON_AWARD and d.award is not None:
            to.add(d.award.winner)
        if keep is not None:
            to.discard(keep)
        if not to:
            return []
        if reason not in _CANCEL_REASONS:  # e.g. the backend_error of the last attempt
            reason = ReasonCode.OTHER
        return [Multicast(tuple(sorted(to)), self._cancel_msg(now, None, reason))]

    def _fail(self, reason: ReasonCode, now: int, detail: str = "") -> list[Action]:
        d = self._d
        out = self._release_all(now, reason)
        if d.state in _ON_AWARD and d.award is not None:
            out.append(AttemptEnded(d.award.winner, d.task.task_id, d.award.attempt, False, reason, self._model()))
        out += self._disarm(*sorted(d.timers))
        d.state = _S.FAILED
        d.outcome = reason
        out.append(Fail(d.task.task_id, reason, detail))
        return out

    def _model(self) -> str:
        """The model of the current award's offer (a direct award from a price sheet names one too)."""
        return self._d.awarded.model if self._d.awarded is not None else ""

    def _current(self, attempt: int, sender: str, award_id: str | None) -> RejectReason | None:
        """None if a message about ``attempt`` from ``sender`` concerns the live award; else why not."""
        d = self._d
        a = d.award
        if a is None:
            return RejectReason.UNEXPECTED
        if d.state not in _ON_AWARD:
            return RejectReason.FENCED if attempt <= a.attempt else RejectReason.UNEXPECTED
        if attempt < a.attempt:
            return RejectReason.FENCED
        if attempt > a.attempt:
            return RejectReason.UNEXPECTED
        if sender != a.winner:
            return RejectReason.NOT_AWARDEE
        if award_id is not None and award_id != a.id:
            return RejectReason.MISMATCH
        return None

    def _announce(self, now: int) -> list[Action]:
        d = self._d
        cfg = self.config
        d.announces += 1
        mechanism = Mechanism.FIRST_PRICE if d.mechanism is Mechanism.DIRECT else d.mechanism
        window_end = now + d.task.bid_window_ms * NS_PER_MS
        task = msgspec.structs.replace(
            d.task,
            id=new_message_id(self._rng),
            ts=now,
            expires_ns=d.task.constraints.deadline_ns,
            attempt=d.attempt + 1,
            mechanism=mechanism,
        )
        d.task = task
        invited: list[str] = []
        silent = bool(d.invited) and not d.responded  # nobody invited last round answered: the view is stale
        if d.agent is not None:  # the asker named the agent: a shortlist of one, whatever the registry says
            invited = [d.agent]
        elif self.registry is not None and cfg.shortlist_k > 0 and not silent:
            invited = self.registry.shortlist(
                task,
                now=window_end,
                k=cfg.shortlist_k << (d.announces - 1),
                credentials=self.credentials,
                predictor=self.predictor,
                exclude=frozenset(d.tried).union(self.avoid),
            )
        d.invited = invited
        d.responded = set()
        tried = d.tried
        d.state = (
            _S.COLLECTING
            if any(o.agent_id not in tried and o.valid_until_ns > now for o in d.offers.values())
            else _S.ANNOUNCED
        )
        send: Action = Multicast(tuple(invited), task) if invited else Send(BROADCAST, task)
        return [send, self._arm(TimerKind.BID_WINDOW, window_end)]

    def _verified(self, offer: Offer, out: list[Action]) -> bool:
        d = self._d
        if offer.direct or offer.bid_id in d.verified:
            return True
        if self.verify_bid(offer.bid_id, offer.digest):
            d.verified.add(offer.bid_id)
            return True
        d.offers.pop(offer.bid_id, None)
        d.dropped.add(offer.bid_id)
        out.append(Reject(RejectReason.FORGED, None, f"bid {offer.bid_id} claiming {offer.agent_id}"))
        return False

    def _award_next(self, now: int) -> tuple[list[Action], bool]:
        """Award the best eligible, verified, untried offer; (actions, True) if an award went out."""
        d = self._d
        out: list[Action] = []
        if d.attempt >= self.config.max_attempts:
            return out, False
        tried = frozenset(d.tried).union(self.avoid)
        if d.direct:
            if self.registry is None:
                return out, False
            candidates = self.registry.offers(d.task, now=now, exclude=tried, only=d.agent)
            if candidates:
                d.ever_offered = True
            mechanism = Mechanism.DIRECT
        else:
            candidates = [o for o in d.offers.values() if d.agent is None or o.agent_id == d.agent]
            mechanism = d.task.mechanism
        ranking = rank(
            candidates, d.task, now=now, credentials=self.credentials, predictor=self.predictor, exclude=tried
        )
        if not d.direct:
            for offer, why in ranking.ineligible:  # eligibility only gets worse with time: drop for good
                del d.offers[offer.bid_id]
                d.dropped.add(offer.bid_id)
                out.append(Reject(RejectReason.INELIGIBLE, None, f"{why.value}: bid {offer.bid_id}"))
        eligible = ranking.eligible
        while eligible:
            if not self._verified(eligible[0].offer, out):
                del eligible[0]
                continue
            # under second price the runner-up sets the price: verify it too
            if (
                mechanism is Mechanism.SECOND_PRICE
                and len(eligible) > 1
                and not self._verified(eligible[1].offer, out)
            ):
                del eligible[1]
                continue
            price = payment(eligible, d.task, mechanism)
            out += self._award(eligible[0].offer, price, now)
            return out, True
        return out, False

    def _award(self, offer: Offer, price: int, now: int) -> list[Action]:
        d = self._d
        cfg = self.config
        deadline = d.task.constraints.deadline_ns
        d.attempt += 1
        d.tried.append(offer.agent_id)
        lease_ms = max(math.ceil(offer.latency_ms * cfg.lease_factor), cfg.ack_timeout_ms + cfg.lease_margin_ms)
        lease = min(deadline, now + lease_ms * NS_PER_MS)
        ack_by = min(lease, now + cfg.ack_timeout_ms * NS_PER_MS)
        out: list[Action] = []
        if d.direct:  # the awardee has not seen the task: send it first (it bids nothing, it just acks)
            direct_task = msgspec.structs.replace(
                d.task,
                id=new_message_id(self._rng),
                ts=now,
                expires_ns=deadline,
                attempt=d.attempt,
                mechanism=Mechanism.DIRECT,
                bid_window_ms=0,
            )
            out.append(Send(offer.agent_id, direct_task))
        award = Award(
            id=new_message_id(self._rng),
            sender=d.agent_id,
            ts=now,
            expires_ns=ack_by,
            task_id=d.task.task_id,
            attempt=d.attempt,
            winner=offer.agent_id,
            bid_id=offer.bid_id,
            bid_digest=offer.digest,
            price_micros=price,
            ack_by_ns=ack_by,
            lease_until_ns=lease,
        )
        d.award = award
        d.awarded = offer
        d.progress_seq = -1
        d.state = _S.AWARDED
        out.append(Send(offer.agent_id, award))
        out += self._disarm(TimerKind.BID_WINDOW)
        out.append(self._arm(TimerKind.ACK, ack_by))
        out.append(self._arm(TimerKind.LEASE, lease))
        return out

    def _close_window(self, now: int) -> list[Action]:
        d = self._d
        empty = d.round_bids == 0
        d.round_bids = 0  # bids that arrive from now on (during a backoff) count for the next round
        out, awarded = self._award_next(now)
        d.empty_rounds = d.empty_rounds + 1 if empty and not awarded else 0
        if not awarded:
            out += self._reannounce_or_fail(now, backoff=empty)
        return out

    def _last_round_ns(self) -> int:
        """The latest time a new round may start: its window plus ``min_exec_ms`` must end before the deadline."""
        d = self._d
        return d.task.constraints.deadline_ns - (d.task.bid_window_ms + self.config.min_exec_ms) * NS_PER_MS - 1

    def _backoff_ns(self) -> int:
        """The pause before the next round after ``empty_rounds`` rounds in a row without a bid (spec 5.4)."""
        cfg = self.config
        shift = min(self._d.empty_rounds - 1, 30)
        pause_ns = min(cfg.reannounce_backoff_max_ms, cfg.reannounce_backoff_ms << shift) * NS_PER_MS
        jitter = min(1.0, max(0.0, cfg.reannounce_jitter))
        return pause_ns - int(pause_ns * jitter * self._rng.random())

    def _reannounce_or_fail(self, now: int, *, backoff: bool = False) -> list[Action]:
        d = self._d
        cfg = self.config
        if d.attempt >= cfg.max_attempts:
            return self._fail(ReasonCode.ATTEMPTS_EXHAUSTED, now)
        last = self._last_round_ns()
        named_tried = d.agent is not None and (d.agent in d.tried or d.agent in self.avoid)
        if d.announces < cfg.max_announces and now <= last and not named_tried:
            d.direct = False
            if backoff and cfg.reannounce_backoff_ms > 0:
                at = min(now + self._backoff_ns(), last)
                if at > now:
                    d.state = _S.BACKOFF
                    return [self._arm(TimerKind.REANNOUNCE, at)]
            return self._announce(now)
        return self._fail(self._no_round_reason(), now)

    def _no_round_reason(self) -> ReasonCode:
        d = self._d
        if d.last_failure is not None:
            return d.last_failure
        if d.ever_offered:
            return ReasonCode.NO_ELIGIBLE_BIDS
        return ReasonCode.NO_BIDS

    def _attempt_failed(self, now: int, reason: ReasonCode, *, notify: bool) -> list[Action]:
        d = self._d
        a = d.award
        if a is None:  # pragma: no cover - guarded by the transition table and _current
            raise LocalProtocolError("no award to fail")
        out: list[Action] = [AttemptEnded(a.winner, d.task.task_id, a.attempt, False, reason, self._model())]
        if notify:
            out.append(Send(a.winner, self._cancel_msg(now, a.attempt, reason)))
            d.bidders.discard(a.winner)  # told already: its slot is released by this Cancel (spec 5.9)
        out += self._disarm(TimerKind.ACK, TimerKind.LEASE)
        d.last_failure = reason
        d.state = _S.ANNOUNCED  # no award is current any more; what follows sets the real state
        more, awarded = self._award_next(now)
        out += more
        if not awarded:
            out += self._reannounce_or_fail(now)
        return out

    # --- handlers -----------------------------------------------------------------------------------------------
    def _on_distrusted(self, event: Event, now: int) -> list[Action]:
        """Its trust store stopped vouching for an agent (revoked): the attempt it holds ends at once, unpaid and
        without a word to it, and the task goes on; its bids are dropped (never awarded again)."""
        assert isinstance(event, Distrusted)
        d = self._d
        for bid_id in [b for b, offer in d.offers.items() if offer.agent_id == event.agent_id]:
            del d.offers[bid_id]
            d.dropped.add(bid_id)
        d.bidders.discard(event.agent_id)
        if d.state in _ON_AWARD and d.award is not None and d.award.winner == event.agent_id:
            return self._attempt_failed(now, ReasonCode.VERIFICATION_FAILED, notify=False)
        return []

    def _on_start(self, event: Event, now: int) -> list[Action]:
        d = self._d
        cfg = self.config
        deadline = d.task.constraints.deadline_ns
        d.task = msgspec.structs.replace(d.task, ts=now)
        if now >= deadline:
            d.state = _S.ANNOUNCED  # a live state, so that _fail cleans up uniformly
            return self._fail(ReasonCode.DEADLINE_EXCEEDED, now)
        unsendable = self._unsendable(now)
        if unsendable is not None:
            d.state = _S.ANNOUNCED
            return self._fail(unsendable[0], now, unsendable[1])
        out: list[Action] = [self._arm(TimerKind.DEADLINE, deadline)]
        window_ns = d.task.bid_window_ms * NS_PER_MS
        no_time = deadline - now < window_ns + cfg.min_exec_ms * NS_PER_MS
        if self.registry is not None and (d.mechanism is Mechanism.DIRECT or no_time or d.agent is not None):
            d.direct = True
            more, awarded = self._award_next(now)
            out += more
            if awarded:
                return out
            d.direct = False
        if now + window_ns < deadline:
            return out + self._announce(now)
        d.state = _S.ANNOUNCED
        return out + self._fail(ReasonCode.NO_ELIGIBLE_BIDS if d.ever_offered else ReasonCode.NO_BIDS, now)

    def _unsendable(self, now: int) -> tuple[ReasonCode, str] | None:
        """Why the task cannot go out at all (spec 5.1): it does not fit in a frame, or no agent the registry
        knows could read the prompt plus the answer. Checked before anything is published."""
        task = self._d.task
        too_large = frame_problem(task)
        if too_large is not None:
            return ReasonCode.PAYLOAD_TOO_LARGE, too_large
        need = task.est_input_tokens + task.max_output_tokens
        if self.registry is not None and self.registry.count(now=now) > 0:
            largest = self.registry.largest_context(task.kind, now=now)
            if largest < need:
                return ReasonCode.CONTEXT_TOO_LONG, (
                    f"about {task.est_input_tokens} prompt + {task.max_output_tokens} output tokens; the largest "
                    f"context window advertised for kind {task.kind!r} is {largest}"
                )
        return None

    def _on_cancel_task(self, event: Event, now: int) -> list[Action]:
        d = self._d
        out = self._release_all(now, ReasonCode.CANCELLED)
        out += self._disarm(*sorted(d.timers))
        d.state = _S.CANCELLED
        d.outcome = ReasonCode.CANCELLED
        out.append(Fail(d.task.task_id, ReasonCode.CANCELLED))
        return out

    def _on_recovered(self, event: Event, now: int) -> list[Action]:
        task_id = self._d.task.task_id
        return [SetTimer(kind, at, task_id) for kind, at in sorted(self._d.timers.items())]

    def _on_stale_timer(self, event: Event, now: int) -> list[Action]:
        return []

    def _on_window_closed(self, event: Event, now: int) -> list[Action]:
        if not self._due(TimerKind.BID_WINDOW, now):
            return []
        return self._close_window(now)

    def _on_reannounce_due(self, event: Event, now: int) -> list[Action]:
        if not self._due(TimerKind.REANNOUNCE, now):
            return []
        if now <= self._last_round_ns():  # a late timer may find no time left for a round
            return self._announce(now)
        return self._fail(self._no_round_reason(), now)

    def _on_ack_timeout(self, event: Event, now: int) -> list[Action]:
        if not self._due(TimerKind.ACK, now):
            return []
        return self._attempt_failed(now, ReasonCode.ACK_TIMEOUT, notify=True)

    def _on_lease_expired(self, event: Event, now: int) -> list[Action]:
        if not self._due(TimerKind.LEASE, now):
            return []
        return self._attempt_failed(now, ReasonCode.LEASE_EXPIRED, notify=True)

    def _on_deadline(self, event: Event, now: int) -> list[Action]:
        if not self._due(TimerKind.DEADLINE, now):
            return []
        return self._fail(ReasonCode.DEADLINE_EXCEEDED, now)  # pragma: no cover - handle() fails it first

    def _on_unexpected(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        return [Reject(RejectReason.UNEXPECTED, event.message)]

    def _on_terminal(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        if isinstance(msg, Result) and msg.id == self._d.result_id:
            return [Reject(RejectReason.DUPLICATE, msg)]
        return [Reject(RejectReason.TERMINAL, msg)]

    def _on_late(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        if isinstance(msg, Bid):
            self._note_bidder(msg, now)
        return [Reject(RejectReason.LATE, msg)]

    def _note_bidder(self, bid: Bid, now: int) -> None:
        """Remember who bid (it holds a slot until its bid lapses or it hears that the task ended), bounded."""
        d = self._d
        if (
            bid.task_id == d.task.task_id
            and bid.valid_until_ns + MAX_SKEW_NS > now
            and bid.id not in d.offers
            and bid.id not in d.dropped
            and len(d.bidders) < self.config.max_bids
        ):
            d.bidders.add(bid.sender)

    def _close_if_all_answered(self, sender: str, now: int) -> list[Action]:
        d = self._d
        if sender not in d.invited:  # only the invited count (and are kept: the record stays bounded by k)
            return []
        d.responded.add(sender)
        if self.config.early_close and d.responded.issuperset(d.invited):
            out = self._disarm(TimerKind.BID_WINDOW)
            out += self._close_window(now)
            return out
        return []

    def _on_bid(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        bid = event.message
        assert isinstance(bid, Bid)
        d = self._d
        if bid.task_id != d.task.task_id:
            return [Reject(RejectReason.UNKNOWN_TASK, bid)]
        if bid.id in d.offers or bid.id in d.dropped:
            return [Reject(RejectReason.DUPLICATE, bid)]
        if bid.valid_until_ns + MAX_SKEW_NS <= now:  # the bidder's clock (spec 9.3)
            return [Reject(RejectReason.EXPIRED, bid)]
        if event.size > self.config.max_bid_bytes:
            return [Reject(RejectReason.TOO_MANY, bid, "bid_bytes")]
        if len(d.offers) + len(d.dropped) >= self.config.max_bids:
            return [Reject(RejectReason.TOO_MANY, bid, "max_bids")]
        sent = d.per_sender.get(bid.sender, 0)
        if sent >= self._sender_cap(bid.sender, now):  # one sender cannot crowd the others out (spec 6.5)
            return [Reject(RejectReason.TOO_MANY, bid, "bids_per_sender")]
        digest = event.digest or payload_digest(encode(bid))
        d.offers[bid.id] = Offer.from_bid(bid, digest)
        d.per_sender[bid.sender] = sent + 1
        d.ever_offered = True
        if len(d.bidders) < self.config.max_bids:
            d.bidders.add(bid.sender)
        d.round_bids += 1
        if d.state is _S.BACKOFF:  # no round is open: held, sealed, for the next one
            return []
        d.state = _S.COLLECTING
        return self._close_if_all_answered(bid.sender, now)

    def _sender_cap(self, sender: str, now: int) -> int:
        """How many bids one sender may hold in this task: its advertised slots (it cannot serve more at once),
        at most ``max_bids_per_sender``."""
        cap = self.config.max_bids_per_sender
        entry = self.registry.get(sender, now=now) if self.registry is not None else None
        return cap if entry is None else max(1, min(entry.advert.slots, cap))

    def _on_decline(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        assert isinstance(msg, Decline)
        d = self._d
        if msg.task_id != d.task.task_id:
            return [Reject(RejectReason.UNKNOWN_TASK, msg)]
        if d.state in _OPEN:
            return self._close_if_all_answered(msg.sender, now)
        if d.direct and self._current(msg.attempt, msg.sender, None) is None:
            return self._attempt_failed(now, ReasonCode.AWARD_REJECTED, notify=False)
        return [Reject(RejectReason.LATE, msg)]

    def _on_ack(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        assert isinstance(msg, AwardAck)
        why = self._current(msg.attempt, msg.sender, msg.award_id)
        if why is not None:
            return [Reject(why, msg)]
        if self._d.state is _S.ACKNOWLEDGED:
            return [Reject(RejectReason.DUPLICATE, msg)]
        self._d.state = _S.ACKNOWLEDGED
        return self._disarm(TimerKind.ACK)

    def _on_award_reject(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        assert isinstance(msg, AwardReject)
        why = self._current(msg.attempt, msg.sender, msg.award_id)
        if why is not None:
            return [Reject(why, msg)]
        return self._attempt_failed(now, ReasonCode.AWARD_REJECTED, notify=False)

    def _on_failure(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        assert isinstance(msg, Failure)
        why = self._current(msg.attempt, msg.sender, None)
        if why is not None:
            return [Reject(why, msg)]
        return self._attempt_failed(now, reason_code(msg.reason), notify=False)

    def _on_progress(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        assert isinstance(msg, Progress)
        d = self._d
        why = self._current(msg.attempt, msg.sender, None)
        if why is not None:
            return [Reject(why, msg)]
        out: list[Action] = []
        if d.state is _S.AWARDED:  # progress implies the award arrived: an implicit ack
            d.state = _S.ACKNOWLEDGED
            out += self._disarm(TimerKind.ACK)
        if msg.seq <= d.progress_seq:
            out.append(Reject(RejectReason.STALE, msg))
            return out
        d.progress_seq = msg.seq
        out.append(ReportProgress(msg))
        return out

    def _on_result(self, event: Event, now: int) -> list[Action]:
        assert isinstance(event, Received)
        msg = event.message
        assert isinstance(msg, Result)
        d = self._d
        why = self._current(msg.attempt, msg.sender, msg.award_id)
        if why is not None:
            return [Reject(why, msg)]
        award = d.award
        assert award is not None and d.awarded is not None
        if not d.awarded.direct and msg.model != d.awarded.model:  # a bid names its model; a price sheet may not
            return [Reject(RejectReason.MISMATCH, msg, f"model {msg.model} != bid {d.awarded.model}")]
        out = self._release_all(now, ReasonCode.SUPERSEDED, keep=msg.sender)
        out += self._disarm(*sorted(d.timers))
        d.state = _S.COMPLETED
        d.result_id = msg.id
        d.paid_micros = award.price_micros
        out.append(Accept(d.task.task_id, msg, award, award.price_micros))
        out.append(AttemptEnded(award.winner, d.task.task_id, award.attempt, True, None, msg.model))
        return out

    # --- invariants ---------------------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if the state is inconsistent (tests call this after every step)."""
        d = self._d
        timers = d.timers
        max_price = d.task.constraints.max_price_micros

        def check(cond: bool, what: str) -> None:
            if not cond:
                raise AssertionError(f"requester {d.task.task_id} in {d.state.name}: {what}")

        check(0 <= d.attempt <= self.config.max_attempts, f"attempt {d.attempt} out of range")
        check(len(d.tried) == d.attempt, "one distinct agent per attempt")
        check(len(set(d.tried)) == len(d.tried), "an agent got two attempts")
        check(not (d.offers.keys() & d.dropped), "a dropped bid is still an offer")
        check(d.paid_micros <= max_price, "budget overspent")
        check((d.state is _S.COMPLETED) == (d.result_id is not None), "result iff completed")
        check(d.paid_micros == 0 or d.state is _S.COMPLETED, "paid without an accepted result")
        if d.award is not None:
            check(d.award.attempt == d.attempt, "latest award is not the current attempt")
            check(d.agent is None or d.award.winner == d.agent, "awarded to another agent than the one named")
            check(d.award.price_micros <= max_price, "award over budget")
            check(d.award.winner == d.tried[-1], "award winner is not the last tried agent")
            check(d.award.lease_until_ns <= d.task.constraints.deadline_ns, "lease beyond deadline")
        if d.state in _ON_AWARD:
            check(d.award is not None and d.awarded is not None, "awarded without an award")
            check(TimerKind.LEASE in timers, "no lease timer while awarded")
        check((TimerKind.ACK in timers) == (d.state is _S.AWARDED), "ack timer iff awarded")
        check((TimerKind.BID_WINDOW in timers) == (d.state in _OPEN), "window timer iff open")
        check((TimerKind.REANNOUNCE in timers) == (d.state is _S.BACKOFF), "re-announce timer iff backing off")
        if d.state is _S.BACKOFF:
            check(timers[TimerKind.REANNOUNCE] <= self._last_round_ns(), "backoff leaves no time for the round")
            check(d.announces < self.config.max_announces, "backing off with no round left")
        check(len(d.bidders) <= self.config.max_bids, "bidder record over its bound")
        check(0 <= d.round_bids <= len(d.offers) + len(d.dropped), "more round bids than bids")
        check((TimerKind.DEADLINE in timers) == (d.state in LIVE), "deadline timer iff live")
        if d.state in TERMINAL:
            check(not timers, "timers armed after the end")
            check((d.outcome is None) == (d.state is _S.COMPLETED), "terminal outcome")


_REMOTE_TO_REQUESTER: Final = (
    EventType.BID,
    EventType.DECLINE,
    EventType.AWARD_ACK,
    EventType.AWARD_REJECT,
    EventType.PROGRESS,
    EventType.RESULT,
    EventType.FAILURE,
)
_REMOTE_TO_CONTRACTOR: Final = (EventType.TASK, EventType.AWARD, EventType.CANCEL)
_TIMERS: Final = (
    EventType.BID_WINDOW_CLOSED,
    EventType.ACK_TIMEOUT,
    EventType.LEASE_EXPIRED,
    EventType.DEADLINE_REACHED,
    EventType.REANNOUNCE_DUE,
)
_CANCEL_REASONS: Final = ALLOWED_REASONS["cancel"]


def _build_table() -> dict[tuple[RequesterState, EventType], Handler]:
    M = RequesterMachine
    E = EventType
    t: dict[tuple[RequesterState, EventType], Handler] = {}
    every = tuple(RequesterState)
    for s in every:
        t[(s, E.RECOVERED)] = M._on_recovered
        for e in _TIMERS:
            t[(s, e)] = M._on_stale_timer
        for e in _REMOTE_TO_CONTRACTOR:
            t[(s, e)] = M._on_unexpected
    t[(_S.CREATED, E.START)] = M._on_start
    t[(_S.CREATED, E.CANCEL_TASK)] = M._on_cancel_task
    for e in _REMOTE_TO_REQUESTER:
        t[(_S.CREATED, e)] = M._on_unexpected
        for s in TERMINAL:
            t[(s, e)] = M._on_terminal
    for s in LIVE:
        t[(s, E.CANCEL_TASK)] = M._on_cancel_task
        t[(s, E.DEADLINE_REACHED)] = M._on_deadline
        t[(s, E.DECLINE)] = M._on_decline
        t[(s, E.AWARD_ACK)] = M._on_ack
        t[(s, E.AWARD_REJECT)] = M._on_award_reject
        t[(s, E.PROGRESS)] = M._on_progress
        t[(s, E.RESULT)] = M._on_result
        t[(s, E.FAILURE)] = M._on_failure
    for s in (*_OPEN, _S.BACKOFF):
        t[(s, E.BID)] = M._on_bid
    for s in _OPEN:
        t[(s, E.BID_WINDOW_CLOSED)] = M._on_window_closed
    t[(_S.BACKOFF, E.REANNOUNCE_DUE)] = M._on_reannounce_due
    for s in _ON_AWARD:
        t[(s, E.BID)] = M._on_late
        t[(s, E.LEASE_EXPIRED)] = M._on_lease_expired
    t[(_S.AWARDED, E.ACK_TIMEOUT)] = M._on_ack_timeout
    for s in every:
        t[(s, E.DISTRUSTED)] = M._on_distrusted
    return t


_TABLE: Final = _build_table()
TRANSITIONS: Final = frozenset(_TABLE)
"""Every (state, event type) pair the requester handles; any other pair raises LocalProtocolError."""
