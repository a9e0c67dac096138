"""Outputs of the market machines (spec section 5): what a shell carries out after ``handle`` returns.

A shell executes the actions of one ``handle`` call in order. Messages in ``Send``/``Multicast`` are complete
(id, sender, ts set by the machine); the shell encodes them with :func:`accord.protocol.codec.encode`, signs
the payload and publishes it. ``SetTimer``/``CancelTimer`` manage one timer per ``(kind, task_id)``; when a
timer is due the shell calls ``handle(TimerFired(kind, task_id), now=...)``. The other actions are reports for
the shell's user (``Accept``, ``Fail``, ``ReportProgress``), for reputation (``AttemptEnded``), for the backend
(``Execute``, ``Abort``) and for logs and metrics (``Reject``).
"""

from __future__ import annotations

import enum
import random

from msgspec import Struct

from accord.protocol.events import TimerKind
from accord.protocol.messages import Award, Message, Progress, ReasonCode, Result, Task

__all__ = [
    "BROADCAST",
    "Abort",
    "Accept",
    "Action",
    "Broadcast",
    "CancelTimer",
    "Execute",
    "Fail",
    "Multicast",
    "AttemptEnded",
    "RejectReason",
    "Reject",
    "ReportProgress",
    "Send",
    "SetTimer",
    "new_message_id",
]


def new_message_id(rng: random.Random) -> str:
    """128 random bits from the injected generator, as 32 lowercase hex characters (message and task ids)."""
    return f"{rng.getrandbits(128):032x}"


class Broadcast(Struct, frozen=True, gc=False):
    """Publish on the message's broadcast subject instead of one inbox.

    Task: ``subjects.announce(tier, residency, kind, requester)`` where tier is the task's only preferred tier
    (else ``any``) and residency its residency class (else ``any``). Advertise and Withdraw:
    ``subjects.advertise(tier, region, agent)`` with the agent's own tier and region.
    """


BROADCAST = Broadcast()


class RejectReason(enum.StrEnum):
    """Why a machine refused an input (reported in :class:`Reject`, never sent on the wire)."""

    DUPLICATE = "duplicate"
    """Seen before (same id, or the same answer to the same award)."""
    LATE = "late"
    """Arrived after the phase it belongs to (a bid after the window closed)."""
    FENCED = "fenced"
    """From an attempt older than the current one: its award was revoked."""
    NOT_AWARDEE = "not_awardee"
    """About the current attempt, but not from its awardee."""
    NOT_REQUESTER = "not_requester"
    """An Award or Cancel not from the requester that announced the task."""
    UNKNOWN_TASK = "unknown_task"
    MISMATCH = "mismatch"
    """Names the right task and attempt but the wrong award, bid or model."""
    EXPIRED = "expired"
    FORGED = "forged"
    """A bid whose signature the verification hook refused."""
    INELIGIBLE = "ineligible"
    """A bid that fails the eligibility rules (spec 6.1); ``detail`` names the rule."""
    UNEXPECTED = "unexpected"
    """A message this role never receives (a Task sent to a requester, a Bid sent to a contractor)."""
    TERMINAL = "terminal"
    """The task is already completed, failed or cancelled."""
    STALE = "stale"
    """An execution report or progress for work no longer current."""
    TOO_MANY = "too_many"
    """A bound on state was reached (spec 11.9): the per-task or per-sender bid limit at a requester, or one of a
    contractor's (``detail`` names it: ``max_jobs``, ``requester_jobs``, ``requester_bytes``...)."""
    STOPPED = "stopped"
    """The contractor has shut down."""


class Send(Struct, frozen=True):
    """Publish ``message`` to one agent's inbox (``subjects.direct(to, sender)``) or to its broadcast subject."""

    to: str | Broadcast
    message: Message


class Multicast(Struct, frozen=True):
    """Publish the same ``message`` to several inboxes (targeted call for proposals): sign once, publish each."""

    to: tuple[str, ...]
    message: Message


class SetTimer(Struct, frozen=True, gc=False):
    """Arm (or re-arm) timer ``(kind, task_id)`` for absolute time ``at_ns``; a past time means "now"."""

    kind: TimerKind
    at_ns: int
    task_id: str = ""


class CancelTimer(Struct, frozen=True, gc=False):
    """Disarm timer ``(kind, task_id)`` if armed. A firing that races with this is ignored by the machine."""

    kind: TimerKind
    task_id: str = ""


class Accept(Struct, frozen=True):
    """Requester: the task is completed with this result (at most once per task). Only this result is paid,
    ``price_micros`` (never more than the task's ``max_price_micros``)."""

    task_id: str
    result: Result
    award: Award
    price_micros: int


class Fail(Struct, frozen=True):
    """Requester: the task ended without a result (``reason`` is ``cancelled`` after a CancelTask)."""

    task_id: str
    reason: ReasonCode
    detail: str = ""


class ReportProgress(Struct, frozen=True):
    """Requester: partial output from the current awardee (in increasing ``seq`` order; gaps possible)."""

    progress: Progress


class AttemptEnded(Struct, frozen=True):
    """Requester: how an attempt ended, for the reputation that tempers predicted quality
    (``market.Reputation.record``). ``success`` is True only for the accepted result."""

    agent_id: str
    task_id: str
    attempt: int
    success: bool
    reason: ReasonCode | None = None
    model: str = ""
    """The model of the awarded offer."""


class Execute(Struct, frozen=True):
    """Contractor: run ``task`` on ``model`` for this acknowledged ``award``; report back with
    ExecutionProgress / ExecutionDone / ExecutionFailed carrying ``award.task_id`` and ``award.attempt``."""

    task: Task
    award: Award
    model: str


class Abort(Struct, frozen=True):
    """Contractor: stop executing this attempt (cancelled, lease over, or shutting down); do not report it."""

    task_id: str
    attempt: int
    reason: ReasonCode


class Reject(Struct, frozen=True):
    """An input was refused (late, duplicate, fenced, forged, ineligible, ...). For logs and metrics only: the
    machine's state is as if the input had never arrived."""

    reason: RejectReason
    message: Message | None = None
    detail: str = ""


Action = (
    Send
    | Multicast
    | SetTimer
    | CancelTimer
    | Accept
    | Fail
    | ReportProgress
    | AttemptEnded
    | Execute
    | Abort
    | Reject
)
