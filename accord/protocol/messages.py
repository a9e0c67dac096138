"""The Accord v1 wire messages.

Every message is a frozen, tagged msgspec Struct. Tags are explicit and stable (a class rename must never
change the wire). Evolution follows msgspec's rules: new fields only with defaults, a field never changes type,
unknown fields are ignored (so no ``forbid_unknown_fields``). spec/PROTOCOL.md is the normative description;
this module is its reference implementation.

Units: absolute times are integer nanoseconds since the Unix epoch (``*_ns``), durations are integer
milliseconds (``*_ms``), money is integer micro-US-dollars (``*_micros``; 1_000_000 = 1 USD), so that budgets
add up exactly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Final

from msgspec import Meta, Struct, field

__all__ = [
    "ALLOWED_REASONS",
    "MAX_FRAME_BYTES",
    "MAX_SKEW_NS",
    "MAX_TEXT",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Advertise",
    "AgentId",
    "AnyMessage",
    "Attempt",
    "Attestation",
    "Award",
    "AwardAck",
    "AwardReject",
    "Bid",
    "Cancel",
    "ChatMessage",
    "Connectivity",
    "Constraints",
    "ContextWindow",
    "Count",
    "Decline",
    "Digest",
    "DurationMs",
    "Failure",
    "LongText",
    "Mechanism",
    "Message",
    "MessageId",
    "Micros",
    "ModelName",
    "ModelOffer",
    "Policy",
    "Privacy",
    "Progress",
    "ReasonCode",
    "ResidencyClasses",
    "Result",
    "Role",
    "ShortText",
    "Skills",
    "Task",
    "TaskId",
    "Tier",
    "TimeNs",
    "Timings",
    "Token",
    "TokenRate",
    "Unit",
    "Usage",
    "Version",
    "Weight",
    "Withdraw",
    "message_tag",
    "reason_code",
]

PROTOCOL_VERSION: Final = 1
"""The major version carried in every message's ``v`` and in subjects (``accord.v1``)."""

MAX_FRAME_BYTES: Final = 1 << 20
"""No frame (envelope or payload) larger than this is ever decoded: 1 MiB, NATS's default max_payload."""

MAX_SKEW_NS: Final = 5_000_000_000
"""How far apart two parties' clocks may be (spec 9.3): every comparison of the receiver's clock with a time the
sender wrote (a deadline, an ack-by, a lease, a bid's validity, an expiry) allows this much either way."""

MAX_TEXT: Final = 256 * 1024
"""Longest single text (a chat message's content, a result's output), in characters."""

_I64_MAX: Final = 2**63 - 1

# --- bounded scalars -------------------------------------------------------------------------------------------
# Patterns end in ``\Z``, not ``$``: msgspec matches with Python's ``re.search``, where ``$`` also matches before a
# trailing newline (so ``"eu\n"`` would pass as a token and could smuggle a newline into a subject or a log line).
# The JSON Schemas (accord.spec.schemas) rewrite ``\Z`` to ``$``, its meaning in ECMA-262 regexes.
MessageId = Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z", description="128 random bits, lowercase hex")]
TaskId = Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z", description="128 random bits, lowercase hex")]
AgentId = Annotated[
    str,
    Meta(
        pattern=r"^U[A-Z2-7]{55}\Z",
        description="NATS nkey encoding of the agent's Ed25519 public key (user prefix 'U')",
    ),
]
Digest = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z", description="SHA-256, lowercase hex")]
Token = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9_-]{1,64}\Z",
        description="A name usable as one NATS subject token: letters, digits, '_' and '-'",
    ),
]
ModelName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:/@+-]{1,128}\Z", description="Model name, no whitespace")]
ShortText = Annotated[str, Meta(max_length=1024)]
LongText = Annotated[str, Meta(max_length=MAX_TEXT)]
TimeNs = Annotated[int, Meta(ge=0, le=_I64_MAX, description="ns since the Unix epoch")]
DurationMs = Annotated[int, Meta(ge=0, le=7 * 24 * 3600 * 1000, description="milliseconds")]
Micros = Annotated[int, Meta(ge=0, le=10**15, description="micro-US-dollars")]
Count = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Attempt = Annotated[int, Meta(ge=1, le=1000, description="award epoch; fences out older awardees")]
Unit = Annotated[float, Meta(ge=0.0, le=1.0)]
Weight = Annotated[float, Meta(ge=0.0, le=1e6)]
Version = Annotated[int, Meta(ge=1, le=255)]
ContextWindow = Annotated[int, Meta(ge=1, le=10_000_000)]
TokenRate = Annotated[float, Meta(gt=0.0, le=1e6)]
ResidencyClasses = Annotated[list[Token], Meta(max_length=16)]
Skills = Annotated[list[Token], Meta(max_length=32)]


class Tier(enum.StrEnum):
    DEVICE = "device"
    EDGE = "edge"
    CLOUD = "cloud"


class Mechanism(enum.StrEnum):
    FIRST_PRICE = "first_price"
    SECOND_PRICE = "second_price"
    POSTED_PRICE = "posted_price"
    DIRECT = "direct"


class Privacy(enum.StrEnum):
    """How sensitive the prompt is; an agent serves a class only if its certificate allows it."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class ReasonCode(enum.StrEnum):
    """Reason codes for Decline, AwardReject, Cancel and Failure.

    On the wire a reason is a plain token, so a v1.x sender may add codes; :func:`reason_code` maps a code this
    version does not know to ``OTHER`` instead of refusing the frame.
    """

    OTHER = "other"
    BUSY = "busy"
    UNSUPPORTED_KIND = "unsupported_kind"
    RESIDENCY = "residency"
    PRIVACY = "privacy"
    DEADLINE_INFEASIBLE = "deadline_infeasible"
    OVER_BUDGET = "over_budget"
    QUALITY_BELOW_MIN = "quality_below_min"
    CONTEXT_TOO_LONG = "context_too_long"
    UNKNOWN_TASK = "unknown_task"
    BID_EXPIRED = "bid_expired"
    NO_BIDS = "no_bids"
    NO_ELIGIBLE_BIDS = "no_eligible_bids"
    ACK_TIMEOUT = "ack_timeout"
    LEASE_EXPIRED = "lease_expired"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    AWARD_REJECTED = "award_rejected"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    BACKEND_ERROR = "backend_error"
    BACKEND_TIMEOUT = "backend_timeout"
    VERIFICATION_FAILED = "verification_failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    SHUTDOWN = "shutdown"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    """The task's prompt does not fit in a frame (or a message exceeds the text bound): it never left."""


def reason_code(token: str) -> ReasonCode:
    """The typed code for a wire token; unknown tokens (from a newer minor version) become ``OTHER``."""
    try:
        return ReasonCode(token)
    except ValueError:
        return ReasonCode.OTHER


# --- embedded records ------------------------------------------------------------------------------------------
class _Record(Struct, frozen=True, kw_only=True, gc=False):
    """Base of the plain records embedded in messages (untagged)."""


class ModelOffer(_Record, frozen=True, kw_only=True):
    """One model an agent serves, with its capacity and price sheet."""

    name: ModelName
    context_window: ContextWindow
    tokens_per_s: TokenRate
    price_in_per_1k_micros: Micros = 0
    price_out_per_1k_micros: Micros = 0
    quality: Unit = 0.5
    """The agent's own prior for this model's answer quality (0..1); requesters temper it with reputation."""
    ttft_ms: DurationMs = 0


class Connectivity(_Record, frozen=True, kw_only=True):
    metered: bool = False
    intermittent: bool = False
    rtt_ms: DurationMs = 0
    bandwidth_kbps: Annotated[int, Meta(ge=0, le=10**9)] = 0


class ChatMessage(_Record, frozen=True, kw_only=True):
    role: Role
    content: LongText


class Constraints(_Record, frozen=True, kw_only=True):
    """What a requester demands of whoever does a task."""

    deadline_ns: TimeNs
    """Absolute time by which the accepted result must arrive."""
    max_price_micros: Micros
    """Budget for this task (all attempts together); for posted-price tasks, the posted price."""
    min_quality: Unit = 0.0
    residency: Token | None = None
    """A residency class the agent must be certified to serve (e.g. ``eu``); None: no requirement."""
    privacy: Privacy = Privacy.PUBLIC
    preferred_tiers: Annotated[list[Tier], Meta(max_length=3)] = []
    """Empty: any tier. Otherwise only these tiers are eligible."""


class Policy(_Record, frozen=True, kw_only=True):
    """Weights of the requester's score: predicted quality - lambda * price(USD) - mu * latency(s)."""

    lambda_price: Weight = 1.0
    mu_latency: Weight = 0.01


class Usage(_Record, frozen=True, kw_only=True):
    input_tokens: Count = 0
    output_tokens: Count = 0


class Timings(_Record, frozen=True, kw_only=True):
    queued_ms: DurationMs = 0
    ttft_ms: DurationMs = 0
    total_ms: DurationMs = 0


# --- messages --------------------------------------------------------------------------------------------------
class Message(Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """Header fields common to every message.

    ``gc=False`` (here and on the embedded records): messages are immutable trees that cannot form reference
    cycles, so the cycle collector need not track them; with thousands of live messages it was walking them on
    every collection (about 0.5 ms per market round)."""

    v: Version = PROTOCOL_VERSION
    id: MessageId
    sender: AgentId
    ts: TimeNs
    expires_ns: TimeNs | None = None
    """After this time the message MUST be refused; None: governed by the receiver's skew window only."""


class Advertise(Message, tag="advertise", frozen=True, kw_only=True):
    """The agent card, re-sent as a heartbeat; it lapses ``ttl_ms`` after ``ts`` unless renewed."""

    name: Token
    tier: Tier
    region: Token
    residency: ResidencyClasses = []
    skills: Skills = []
    models: Annotated[list[ModelOffer], Meta(min_length=1, max_length=16)]
    slots: Annotated[int, Meta(ge=1, le=100_000)] = 1
    load: Annotated[int, Meta(ge=0, le=100_000)] = 0
    connectivity: Connectivity = Connectivity()
    battery: Unit | None = None
    protocol_versions: Annotated[list[Version], Meta(min_length=1, max_length=8)] = field(
        default_factory=lambda: [PROTOCOL_VERSION]
    )
    ttl_ms: Annotated[int, Meta(ge=100, le=3_600_000)] = 10_000
    seq: Count = 0


class Withdraw(Message, tag="withdraw", frozen=True, kw_only=True):
    reason: Token = "shutdown"


class Task(Message, tag="task", frozen=True, kw_only=True):
    """A call for proposals."""

    task_id: TaskId
    kind: Token = "chat"
    messages: Annotated[list[ChatMessage], Meta(max_length=256)] = []
    prompt_digest: Digest
    """SHA-256 of the canonical prompt encoding (spec: "Prompt digest")."""
    prompt_ref: Annotated[str, Meta(max_length=1024)] | None = None
    """Where to fetch the prompt when ``messages`` is empty (e.g. an object-store key)."""
    est_input_tokens: Count = 0
    max_output_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] = 256
    constraints: Constraints
    policy: Policy = Policy()
    mechanism: Mechanism = Mechanism.FIRST_PRICE
    bid_window_ms: DurationMs = 50
    attempt: Attempt = 1


class Bid(Message, tag="bid", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt = 1
    model: ModelName
    price_micros: Micros
    est_latency_ms: DurationMs
    quality: Unit
    """Self-reported expected quality (0..1)."""
    valid_until_ns: TimeNs
    tier: Tier
    region: Token
    residency: ResidencyClasses = []


class Decline(Message, tag="decline", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt = 1
    reason: Token
    detail: ShortText = ""


class Award(Message, tag="award", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt
    winner: AgentId
    bid_id: MessageId
    bid_digest: Digest
    """SHA-256 of the winning bid's payload bytes as received."""
    price_micros: Micros
    """What the requester will pay (second price under Vickrey)."""
    ack_by_ns: TimeNs
    lease_until_ns: TimeNs
    """The result must arrive by then, or the award lapses and the task may be re-awarded."""


class AwardAck(Message, tag="award_ack", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt
    award_id: MessageId


class AwardReject(Message, tag="award_reject", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt
    award_id: MessageId
    reason: Token
    detail: ShortText = ""


class Progress(Message, tag="progress", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt
    seq: Count
    delta: LongText = ""
    output_tokens: Count = 0


class Result(Message, tag="result", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt
    award_id: MessageId
    model: ModelName
    output: LongText
    usage: Usage = Usage()
    timings: Timings = Timings()
    attestation: Annotated[bytes, Meta(max_length=64 * 1024)] = b""
    """A DSSE envelope (JSON bytes) over an in-toto Statement; see spec "Attestations"."""


class Attestation(Message, tag="attestation", frozen=True, kw_only=True):
    """The statement fields an agent attests to for one result (the in-toto predicate)."""

    task_id: TaskId
    attempt: Attempt
    agent: AgentId
    requester: AgentId
    prompt_digest: Digest
    award_digest: Digest
    output_digest: Digest
    model: ModelName
    backend: Token
    usage: Usage = Usage()
    timings: Timings = Timings()


class Cancel(Message, tag="cancel", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt | None = None
    """None cancels every attempt of the task."""
    reason: Token = "cancelled"


class Failure(Message, tag="failure", frozen=True, kw_only=True):
    task_id: TaskId
    attempt: Attempt
    reason: Token
    detail: ShortText = ""


AnyMessage = (
    Advertise
    | Withdraw
    | Task
    | Bid
    | Decline
    | Award
    | AwardAck
    | AwardReject
    | Progress
    | Result
    | Attestation
    | Cancel
    | Failure
)
"""Every message type a v1 decoder accepts."""

MESSAGE_TYPES: Final[tuple[type[Message], ...]] = (
    Advertise,
    Withdraw,
    Task,
    Bid,
    Decline,
    Award,
    AwardAck,
    AwardReject,
    Progress,
    Result,
    Attestation,
    Cancel,
    Failure,
)


def message_tag(type_: type[Message]) -> str:
    """The wire tag (the ``type`` field's value) of a message type, e.g. ``"award_ack"`` for AwardAck."""
    tag = type_.__struct_config__.tag
    if not isinstance(tag, str):  # pragma: no cover - every concrete message declares a string tag
        raise TypeError(f"{type_.__name__} has no string tag")
    return tag


_R = ReasonCode
_DECLINE_REASONS: Final = frozenset(
    {
        _R.BUSY,
        _R.UNSUPPORTED_KIND,
        _R.RESIDENCY,
        _R.PRIVACY,
        _R.DEADLINE_INFEASIBLE,
        _R.OVER_BUDGET,
        _R.QUALITY_BELOW_MIN,
        _R.CONTEXT_TOO_LONG,
        _R.SHUTDOWN,
        _R.OTHER,
    }
)

ALLOWED_REASONS: Final[Mapping[str, frozenset[ReasonCode]]] = MappingProxyType(
    {
        "withdraw": frozenset({_R.SHUTDOWN, _R.OTHER}),
        # a contractor will not bid
        "decline": _DECLINE_REASONS,
        # a contractor will not take an award: any reason to decline, or the award itself is not acceptable
        "award_reject": _DECLINE_REASONS | {_R.UNKNOWN_TASK, _R.BID_EXPIRED, _R.CANCELLED, _R.LEASE_EXPIRED},
        # a requester stops an attempt or the whole task
        "cancel": frozenset(
            {
                _R.CANCELLED,
                _R.SUPERSEDED,
                _R.ACK_TIMEOUT,
                _R.LEASE_EXPIRED,
                _R.DEADLINE_EXCEEDED,
                _R.VERIFICATION_FAILED,
                _R.AWARD_REJECTED,
                _R.NO_BIDS,
                _R.NO_ELIGIBLE_BIDS,
                _R.ATTEMPTS_EXHAUSTED,
                _R.SHUTDOWN,
                _R.OTHER,
            }
        ),
        # a contractor about its attempt, or a requester about the whole task (terminal)
        "failure": frozenset(
            {
                _R.BACKEND_ERROR,
                _R.BACKEND_TIMEOUT,
                _R.CONTEXT_TOO_LONG,
                _R.BUSY,
                _R.UNKNOWN_TASK,
                _R.CANCELLED,
                _R.LEASE_EXPIRED,
                _R.NO_BIDS,
                _R.NO_ELIGIBLE_BIDS,
                _R.AWARD_REJECTED,
                _R.ACK_TIMEOUT,
                _R.ATTEMPTS_EXHAUSTED,
                _R.VERIFICATION_FAILED,
                _R.DEADLINE_EXCEEDED,
                _R.SHUTDOWN,
                _R.PAYLOAD_TOO_LARGE,
                _R.OTHER,
            }
        ),
    }
)
"""Which reason codes a sender may put in the ``reason`` field of each message type (keyed by tag).

Advisory for receivers: a receiver MUST NOT refuse a message because of its reason token (spec section 12)."""
