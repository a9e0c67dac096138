"""Inputs of the market machines (spec section 5): what a shell feeds to ``handle(event, *, now=...)``.

Three kinds of event reach a machine:

- local commands from the shell or its user: :class:`Start`, :class:`CancelTask`, :class:`Shutdown`,
  :class:`Recovered`;
- timers the machine asked for with ``SetTimer`` and the shell now reports as due: :class:`TimerFired`;
- messages from peers, already verified and decoded by the shell: :class:`Received`;
- (contractor only) reports from the execution the shell runs: :class:`ExecutionProgress`,
  :class:`ExecutionDone`, :class:`ExecutionFailed`; and the device's measured state: :class:`DeviceChanged`.

Every event maps to one :class:`EventType` (:func:`event_type`); a machine's transition table is keyed by
``(state, EventType)``. Events are frozen msgspec Structs: cheap to build, comparable, printable.
"""

from __future__ import annotations

import enum
from typing import Final

from msgspec import Struct

from accord.protocol.messages import (
    Advertise,
    AnyMessage,
    Attestation,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    Decline,
    Failure,
    Message,
    Progress,
    ReasonCode,
    Result,
    Task,
    Timings,
    Usage,
    Withdraw,
)
from accord.protocol.pricing import DeviceState

__all__ = [
    "CancelTask",
    "DeviceChanged",
    "Distrusted",
    "Event",
    "EventType",
    "ExecutionDone",
    "ExecutionFailed",
    "ExecutionProgress",
    "Received",
    "Recovered",
    "Shutdown",
    "Solicited",
    "Start",
    "TimerFired",
    "TimerKind",
    "event_type",
]


class TimerKind(enum.StrEnum):
    """What a timer is for. A timer is identified by ``(kind, task_id)``; setting it again re-arms it."""

    BID_WINDOW = "bid_window"
    """Requester: the bid window closes (bids are sealed until then)."""
    ACK = "ack"
    """Requester: the awardee's AwardAck is due (``Award.ack_by_ns``)."""
    LEASE = "lease"
    """Requester: the awardee's Result is due (``Award.lease_until_ns``). Contractor: stop working on it."""
    DEADLINE = "deadline"
    """Requester: the task's deadline (``Constraints.deadline_ns``); the task fails if not completed."""
    BID_EXPIRY = "bid_expiry"
    """Contractor: one of its bids lapses (``Bid.valid_until_ns``); the slot it reserved is released."""
    HEARTBEAT = "heartbeat"
    """Contractor: time to re-send its Advertise (a third of its TTL)."""
    REANNOUNCE = "reannounce"
    """Requester: the backoff after a round without bids is over; the task is announced again."""
    SEND_ACK = "send_ack"
    """Contractor: the AwardAck it held goes out, unless a Result, Progress or Failure acknowledged the award
    first (``ContractorProfile.ack_delay_ms``, spec 5.6)."""


class EventType(enum.Enum):
    """The key of an event in a transition table."""

    __hash__ = object.__hash__  # members are singletons; Enum's default hashes the name in Python (slow)

    START = "start"
    CANCEL_TASK = "cancel_task"
    SHUTDOWN = "shutdown"
    SOLICITED = "solicited"
    RECOVERED = "recovered"
    # timers
    BID_WINDOW_CLOSED = "bid_window_closed"
    ACK_TIMEOUT = "ack_timeout"
    LEASE_EXPIRED = "lease_expired"
    DEADLINE_REACHED = "deadline_reached"
    BID_EXPIRED = "bid_expired"
    HEARTBEAT_DUE = "heartbeat_due"
    REANNOUNCE_DUE = "reannounce_due"
    SEND_ACK_DUE = "send_ack_due"
    # messages received
    ADVERTISE = "advertise"
    WITHDRAW = "withdraw"
    TASK = "task"
    BID = "bid"
    DECLINE = "decline"
    AWARD = "award"
    AWARD_ACK = "award_ack"
    AWARD_REJECT = "award_reject"
    PROGRESS = "progress"
    RESULT = "result"
    ATTESTATION = "attestation"
    CANCEL = "cancel"
    FAILURE = "failure"
    # execution reports (contractor)
    EXECUTION_PROGRESS = "execution_progress"
    EXECUTION_DONE = "execution_done"
    EXECUTION_FAILED = "execution_failed"
    DEVICE_CHANGED = "device_changed"
    DISTRUSTED = "distrusted"


class Start(Struct, frozen=True, gc=False):
    """Requester: announce the task (or award it directly). Contractor: go online (first Advertise)."""


class CancelTask(Struct, frozen=True, gc=False):
    """Requester: the user gives up on the task. Refused (LocalProtocolError) once the task is terminal."""


class Shutdown(Struct, frozen=True, gc=False):
    """Contractor: leave the mesh gracefully (fail running work with ``shutdown``, send Withdraw)."""


class Solicited(Struct, frozen=True, gc=False):
    """Contractor: someone asked who is on the mesh (a NATS service PING): advertise soon instead of at the next
    heartbeat, so a fresh requester need not wait a heartbeat interval (at most one solicited advert per
    ``SOLICITED_ADVERT_GAP_MS``; ignored unless online)."""


class Recovered(Struct, frozen=True, gc=False):
    """Requester: the machine was just restored from a snapshot; the shell's timers were lost, so the machine
    answers with a ``SetTimer`` for every timer it still holds (and fails at once if the deadline passed)."""


class TimerFired(Struct, frozen=True, gc=False):
    """A timer set with ``SetTimer(kind, at_ns, task_id)`` is due. Stale or cancelled timers are ignored."""

    kind: TimerKind
    task_id: str = ""


class Received(Struct, frozen=True):
    """A decoded message from a peer.

    ``digest`` is the SHA-256 (hex) of the payload bytes the message arrived as (``payload_digest``); the
    requester needs it for bids (the Award binds it). Empty: the machine computes it from the canonical
    encoding, which equals the payload only if the sender used :func:`accord.protocol.codec.encode`.
    ``broadcast`` tells a contractor that a Task came on a broadcast subject (it then stays silent instead of
    sending a Decline).

    What the shell must have checked before: the envelope's signature for every message the machine acts on
    without asking (Advertise, Withdraw, Task, Award, AwardAck, AwardReject, Progress, Result, Failure, Cancel);
    for bids only framing and freshness (the requester asks its ``verify_bid`` hook before it awards one).
    """

    message: AnyMessage
    digest: str = ""
    broadcast: bool = False
    prompt_tokens: int | None = None
    """Contractor, Task: the prompt's size in tokens as the shell counted it with the model's own tokenizer
    (None: the machine estimates it from the prompt, :func:`accord.protocol.pricing.estimate_prompt_tokens`).
    Never the requester's ``est_input_tokens`` when the prompt is at hand: an agent prices what it holds."""
    size: int = 0
    """Requester, Bid: the payload's size in bytes as received (0: unknown). The shell keeps the frame of every
    bid its machine holds, so a bid over ``RequesterConfig.max_bid_bytes`` is refused (spec 11.9)."""


class Distrusted(Struct, frozen=True, gc=False):
    """The shell's trust store no longer vouches for ``agent_id`` (its key or certificate was revoked, or its
    certificate ended). Requester: an attempt it holds ends at once (``verification_failed``), without a word to
    it, and the task goes on. Contractor: work for it stops at once, and nothing more is sent to it."""

    agent_id: str


class DeviceChanged(Struct, frozen=True, gc=False):
    """Contractor: the shell measured the device's state anew (battery, metered link, decode rates). The machine
    prices and times the next bids with it, and re-advertises at once if its price sheet changed."""

    state: DeviceState


class ExecutionProgress(Struct, frozen=True):
    """Contractor: the backend produced more output (streamed to the requester as Progress)."""

    task_id: str
    attempt: int
    delta: str = ""
    output_tokens: int = 0


class ExecutionDone(Struct, frozen=True):
    """Contractor: the backend finished; ``attestation`` is the DSSE envelope the shell built over the output."""

    task_id: str
    attempt: int
    output: str
    usage: Usage = Usage()
    timings: Timings = Timings()
    attestation: bytes = b""


class ExecutionFailed(Struct, frozen=True):
    """Contractor: the backend failed (reported to the requester as a Failure)."""

    task_id: str
    attempt: int
    reason: ReasonCode = ReasonCode.BACKEND_ERROR
    detail: str = ""


Event = (
    Start
    | CancelTask
    | Shutdown
    | Solicited
    | Recovered
    | TimerFired
    | Received
    | ExecutionProgress
    | ExecutionDone
    | ExecutionFailed
    | DeviceChanged
    | Distrusted
)

_TIMER_EVENTS: Final[dict[TimerKind, EventType]] = {
    TimerKind.BID_WINDOW: EventType.BID_WINDOW_CLOSED,
    TimerKind.ACK: EventType.ACK_TIMEOUT,
    TimerKind.LEASE: EventType.LEASE_EXPIRED,
    TimerKind.DEADLINE: EventType.DEADLINE_REACHED,
    TimerKind.BID_EXPIRY: EventType.BID_EXPIRED,
    TimerKind.HEARTBEAT: EventType.HEARTBEAT_DUE,
    TimerKind.REANNOUNCE: EventType.REANNOUNCE_DUE,
    TimerKind.SEND_ACK: EventType.SEND_ACK_DUE,
}

_MESSAGE_EVENTS: Final[dict[type[Message], EventType]] = {
    Advertise: EventType.ADVERTISE,
    Withdraw: EventType.WITHDRAW,
    Task: EventType.TASK,
    Bid: EventType.BID,
    Decline: EventType.DECLINE,
    Award: EventType.AWARD,
    AwardAck: EventType.AWARD_ACK,
    AwardReject: EventType.AWARD_REJECT,
    Progress: EventType.PROGRESS,
    Result: EventType.RESULT,
    Attestation: EventType.ATTESTATION,
    Cancel: EventType.CANCEL,
    Failure: EventType.FAILURE,
}

_PLAIN_EVENTS: Final[dict[type[Struct], EventType]] = {
    Start: EventType.START,
    CancelTask: EventType.CANCEL_TASK,
    Shutdown: EventType.SHUTDOWN,
    Solicited: EventType.SOLICITED,
    Recovered: EventType.RECOVERED,
    ExecutionProgress: EventType.EXECUTION_PROGRESS,
    ExecutionDone: EventType.EXECUTION_DONE,
    ExecutionFailed: EventType.EXECUTION_FAILED,
    DeviceChanged: EventType.DEVICE_CHANGED,
    Distrusted: EventType.DISTRUSTED,
}


def event_type(event: Event) -> EventType:
    """The transition-table key of an event (a timer's kind and a message's type each get their own)."""
    if isinstance(event, Received):
        return _MESSAGE_EVENTS[type(event.message)]
    if isinstance(event, TimerFired):
        return _TIMER_EVENTS[event.kind]
    return _PLAIN_EVENTS[type(event)]
