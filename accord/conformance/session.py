"""The kit's side of the conversation: a requester identity on a bus that records everything the agent sends.

The session subscribes to its own inbox, to the inbox of a throwaway key the agent does not trust (to see what
the agent would send to an unknown requester) and to the advertisements, and records every frame from the agent
with its arrival time. Frames are decoded leniently (no signature check) so that the checks can judge content
and timing separately from signatures; ``frames.signed`` and the seal checks verify them.

The kit builds its frames here: eligible Tasks from the agent's own advertisement, Awards for the bids it got,
Cancels, and their forged, expired, stale and misaddressed variants.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup

from accord.bus.base import Bus, BusError, BusMessage, PermissionDeniedError, Subscription
from accord.conformance.registry import CheckFailed
from accord.errors import LocalProtocolError, RemoteProtocolError
from accord.logs import get_logger
from accord.protocol import subjects
from accord.protocol.codec import decode, encode
from accord.protocol.digests import payload_digest, prompt_digest
from accord.protocol.market import NS_PER_MS, sheet_quote
from accord.protocol.messages import (
    Advertise,
    AnyMessage,
    Award,
    Bid,
    Cancel,
    ChatMessage,
    Constraints,
    Decline,
    Mechanism,
    Message,
    Role,
    Task,
)
from accord.security import Identity, SecurityError, TrustStore, seal
from accord.security.envelope import (
    PAYLOAD_TYPE_FRAME,
    decode_envelope,
    encode_envelope,
    sign_envelope,
)

__all__ = [
    "Frame",
    "KitConfig",
    "Match",
    "Probe",
    "Recorder",
    "KitSession",
    "about",
    "corrupt_signature",
    "new_id",
    "now_ns",
    "replace_struct",
]

log = get_logger(__name__)

S = TypeVar("S", bound=msgspec.Struct)

MS: Final = NS_PER_MS
GRACE_MS: Final = 250
"""Allowance for transit and scheduling when the kit compares an arrival time with a deadline."""
PROBE_TEXT: Final = "Accord conformance probe {n}. Reply with one word."


def now_ns() -> int:
    return time.time_ns()


def new_id() -> str:
    """128 random bits as 32 lowercase hex characters (message and task ids)."""
    return secrets.token_hex(16)


def corrupt_signature(frame: bytes) -> bytes:
    """The same envelope with one bit of its signature flipped: well-formed, signed by nobody."""
    envelope = decode_envelope(frame, PAYLOAD_TYPE_FRAME)
    sig = bytearray(envelope.sig)
    sig[7] ^= 0x01
    return encode_envelope(msgspec.structs.replace(envelope, sig=bytes(sig)))


@dataclass(frozen=True, slots=True)
class KitConfig:
    """Who the kit is, which agent it tests, and how long it waits (ms)."""

    agent_id: str
    identity: Identity
    """The kit's requester key; the agent's trust store must hold a certificate for it."""
    trust: TrustStore
    """Must hold the agent's certificate (the kit verifies the agent's frames with it)."""
    timeout_ms: int = 3000
    """Longest wait for a reply the agent owes (beyond the protocol deadline it answers to)."""
    quiet_ms: int = 500
    """How long the kit watches for a frame that must NOT come."""
    bid_window_ms: int = 250
    ack_ms: int = 1000
    """Award.ack_by_ns = sending time + ack_ms."""
    lease_ms: int = 10_000
    """Award.lease_until_ns = sending time + the bid's latency estimate + lease_ms."""
    advert_timeout_ms: int = 15_000
    """How long to wait for the agent's first Advertise."""
    max_output_tokens: int = 16
    checks: tuple[str, ...] | None = None
    """Run only these check ids (None: all)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame the agent sent, as the kit received it (decoded without verification)."""

    seq: int
    subject: str
    data: bytes
    at_ns: int
    """Arrival time on the kit's clock."""
    message: AnyMessage | None
    payload: bytes | None
    key_id: str | None
    error: str | None
    """Why the frame did not decode (None when it did)."""

    @property
    def digest(self) -> str:
        return payload_digest(self.payload) if self.payload is not None else ""

    @property
    def type_name(self) -> str:
        return type(self.message).__name__ if self.message is not None else "undecodable"

    def to_json(self) -> dict[str, object]:
        """The decoded frame for reports: subject, arrival, key id, the message as JSON (or the error)."""
        out: dict[str, object] = {
            "subject": self.subject,
            "received_ns": self.at_ns,
            "size": len(self.data),
            "key_id": self.key_id,
        }
        if self.message is not None:
            out["message"] = msgspec.to_builtins(self.message)
        else:
            out["error"] = self.error
            out["head_hex"] = self.data[:48].hex()
        return out


def _decode_frame(seq: int, msg: BusMessage, at_ns: int) -> Frame:
    try:
        envelope = decode_envelope(msg.data, PAYLOAD_TYPE_FRAME)
    except SecurityError as exc:
        return Frame(seq, msg.subject, msg.data, at_ns, None, None, None, f"envelope {exc}")
    try:
        message = decode(envelope.payload)
    except RemoteProtocolError as exc:
        error = f"payload {exc.reason}: {exc.detail}"
        return Frame(seq, msg.subject, msg.data, at_ns, None, envelope.payload, envelope.key_id, error)
    return Frame(seq, msg.subject, msg.data, at_ns, message, envelope.payload, envelope.key_id, None)


Match = Callable[[Frame], bool]


def about(
    task_id: str | None = None,
    *types: type[Message],
    award_id: str | None = None,
    attempt: int | None = None,
) -> Match:
    """A predicate: a decoded frame of one of ``types`` (any if none) about this task / award / attempt."""

    def match(f: Frame) -> bool:
        m = f.message
        if m is None or (types and not isinstance(m, types)):
            return False
        if task_id is not None and getattr(m, "task_id", None) != task_id:
            return False
        if award_id is not None and getattr(m, "award_id", None) != award_id:
            return False
        return attempt is None or getattr(m, "attempt", None) == attempt

    return match


class Recorder:
    """Frames in arrival order, and a way to wait for one that matches."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._changed = anyio.Event()

    def add(self, msg: BusMessage) -> Frame:
        frame = _decode_frame(len(self.frames), msg, now_ns())
        self.frames.append(frame)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
        return frame

    def select(self, match: Match) -> list[Frame]:
        return [f for f in self.frames if match(f)]

    async def wait(self, match: Match, until_ns: int) -> Frame | None:
        """The first recorded frame that matches (perhaps one already there), or None at ``until_ns``."""
        start = 0
        while True:
            for f in self.frames[start:]:
                if match(f):
                    return f
            start = len(self.frames)
            remaining = until_ns - now_ns()
            if remaining <= 0:
                return None
            changed = self._changed
            with anyio.move_on_after(remaining / 1e9):
                await changed.wait()


@dataclass(slots=True)
class Probe:
    """An eligible Task the kit sent and the Bid it got for it."""

    task: Task
    bid: Frame

    @property
    def window_close_ns(self) -> int:
        return self.task.ts + self.task.bid_window_ms * MS

    @property
    def message(self) -> Bid:
        assert isinstance(self.bid.message, Bid)
        return self.bid.message


@dataclass(slots=True)
class KitSession:
    """One conformance run against one agent: the kit's identity, the bus, and everything recorded."""

    config: KitConfig
    bus: Bus
    unknown: Identity = field(default_factory=Identity.generate)
    """A key the agent does not trust (fresh for every run)."""
    inbox: Recorder = field(default_factory=Recorder)
    """Frames from the agent to the kit and to the unknown key, in arrival order."""
    adverts: Recorder = field(default_factory=Recorder)
    unknown_observable: bool = True
    """False when the bus does not let the kit subscribe to the unknown key's inbox (permissions)."""
    advert: Advertise | None = None
    """The agent's first decodable Advertise: what the kit builds its tasks from."""
    started_ns: int = field(default_factory=now_ns)
    cache: dict[str, object] = field(default_factory=dict)
    """Scenario results shared by several checks (e.g. the probe bid, the award flow)."""
    _counter: int = 0

    @property
    def agent(self) -> str:
        return self.config.agent_id

    @property
    def kit(self) -> Identity:
        return self.config.identity

    @property
    def trust(self) -> TrustStore:
        return self.config.trust

    # --- receiving ----------------------------------------------------------------------------------------------
    async def start(self, tg: TaskGroup) -> None:
        """Subscribe (inbox, the unknown key's inbox, adverts) and pump into the recorders."""
        inbox = await self.bus.subscribe(subjects.direct_filter(self.kit.id), max_pending=65_536)
        tg.start_soon(self._pump, inbox, self.inbox)
        try:
            unknown = await self.bus.subscribe(subjects.direct_filter(self.unknown.id), max_pending=4096)
        except PermissionDeniedError:
            self.unknown_observable = False
            log.info("conformance.unknown_inbox_denied")
        else:
            tg.start_soon(self._pump, unknown, self.inbox)
        adverts = await self.bus.subscribe(subjects.advertise_filter(), max_pending=4096)
        tg.start_soon(self._pump, adverts, self.adverts)

    async def _pump(self, sub: Subscription, recorder: Recorder) -> None:
        async with sub:
            async for msg in sub:
                if msg.subject.rsplit(".", 1)[-1] == self.agent:  # the publisher's id is the last token
                    recorder.add(msg)

    # --- the agent's advertisement ------------------------------------------------------------------------------
    async def first_advert(self) -> Frame:
        """The agent's first frame on an advertise subject (waiting up to ``advert_timeout_ms``)."""
        until = self.started_ns + self.config.advert_timeout_ms * MS
        frame = await self.adverts.wait(about(None, Advertise), until)
        if frame is None:
            frame = await self.adverts.wait(lambda f: True, until)
            raise CheckFailed(
                f"no decodable Advertise from {self.agent} within {self.config.advert_timeout_ms} ms"
                + (f" (got an undecodable frame: {frame.error})" if frame is not None else ""),
                [frame] if frame is not None else [],
            )
        assert isinstance(frame.message, Advertise)
        if self.advert is None:
            self.advert = frame.message
        return frame

    async def capabilities(self) -> Advertise:
        """What the agent advertises; the tasks the kit sends are built from it."""
        if self.advert is None:
            await self.first_advert()
        assert self.advert is not None
        return self.advert

    # --- building frames ----------------------------------------------------------------------------------------
    def next_n(self) -> int:
        self._counter += 1
        return self._counter

    async def task(self, **changes: object) -> Task:
        """An eligible, targeted Task for the agent (built from its advertisement), with ``changes``.

        ``constraints`` may be given as a dict of Constraints fields to change.
        """
        adv = await self.capabilities()
        cfg = self.config
        messages = [ChatMessage(role=Role.USER, content=PROBE_TEXT.format(n=self.next_n()))]
        input_tokens = 16
        prices = [
            sheet_quote(m, input_tokens=input_tokens, output_tokens=cfg.max_output_tokens)[0] for m in adv.models
        ]
        ts = now_ns()
        constraints = Constraints(
            deadline_ns=ts + max(60_000, 4 * cfg.lease_ms) * MS,
            max_price_micros=min(2 * max(prices) + 10_000, 10**15),
        )
        changed = changes.pop("constraints", None)
        if isinstance(changed, Constraints):
            constraints = changed
        elif isinstance(changed, dict):
            constraints = replace_struct(constraints, changed)
        task = Task(
            id=new_id(),
            sender=self.kit.id,
            ts=ts,
            # 3.1: set when its meaning lapses; never before the agent can read it (the impossible-deadline case)
            expires_ns=max(constraints.deadline_ns, ts + (cfg.bid_window_ms + cfg.timeout_ms) * MS),
            task_id=new_id(),
            kind=adv.skills[0] if adv.skills else "chat",
            messages=messages,
            prompt_digest=prompt_digest(messages),
            est_input_tokens=input_tokens,
            max_output_tokens=cfg.max_output_tokens,
            constraints=constraints,
            mechanism=Mechanism.FIRST_PRICE,
            bid_window_ms=cfg.bid_window_ms,
            attempt=1,
        )
        return replace_struct(task, changes) if changes else task

    def min_price(self, adv: Advertise) -> int:
        """The lowest price the agent's sheet gives for the kit's standard task."""
        return min(
            sheet_quote(m, input_tokens=16, output_tokens=self.config.max_output_tokens)[0] for m in adv.models
        )

    def award(self, task: Task, bid: Frame, **changes: object) -> Award:
        """The honest Award of ``bid`` (first price), due now; ``changes`` make the misaddressed variants."""
        b = bid.message
        assert isinstance(b, Bid)
        now = now_ns()
        ack_by = now + self.config.ack_ms * MS
        award = Award(
            id=new_id(),
            sender=self.kit.id,
            ts=now,
            expires_ns=ack_by,  # 3.1: an Award lapses at its ack_by_ns
            task_id=task.task_id,
            attempt=task.attempt,
            winner=self.agent,
            bid_id=b.id,
            bid_digest=bid.digest,
            price_micros=min(b.price_micros, task.constraints.max_price_micros),
            ack_by_ns=ack_by,
            lease_until_ns=min(now + (b.est_latency_ms + self.config.lease_ms) * MS, task.constraints.deadline_ns),
        )
        return replace_struct(award, changes) if changes else award

    def cancel(self, task: Task, attempt: int | None, **changes: object) -> Cancel:
        cancel = Cancel(id=new_id(), sender=self.kit.id, ts=now_ns(), task_id=task.task_id, attempt=attempt)
        return replace_struct(cancel, changes) if changes else cancel

    def seal(self, message: Message, identity: Identity | None = None) -> bytes:
        return seal(message, identity or self.kit)

    def seal_as(self, message: Message, identity: Identity) -> bytes:
        """Signed by ``identity`` whatever the message's ``sender`` says (to forge frames)."""
        return encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, encode(message), identity))

    # --- sending ------------------------------------------------------------------------------------------------
    async def send(self, frame: bytes, subject: str | None = None) -> None:
        """Publish one frame to the agent's inbox (or ``subject``), as the kit."""
        await self.bus.publish(subject or subjects.direct(self.agent, self.kit.id), frame)

    async def send_all(self, frames: Sequence[bytes]) -> None:
        for frame in frames:
            await self.send(frame)
        await self.bus.flush()

    # --- waiting ------------------------------------------------------------------------------------------------
    def until(self, ms: int, base_ns: int | None = None) -> int:
        return (now_ns() if base_ns is None else base_ns) + ms * MS

    async def wait(self, match: Match, until_ns: int) -> Frame | None:
        return await self.inbox.wait(match, until_ns)

    def select(self, match: Match) -> list[Frame]:
        return self.inbox.select(match)

    async def sleep_until(self, at_ns: int) -> None:
        delay = at_ns - now_ns()
        if delay > 0:
            await anyio.sleep(delay / 1e9)

    async def bid_for(self, task: Task | None = None, *, copies: int = 1) -> Probe:
        """Send an eligible Task (``copies`` times, the same frame) and return the Bid; CheckFailed if none comes.

        A Decline with reason ``busy`` is retried with a new Task until the reply timeout has passed: the agent
        may still hold slots for bids of earlier checks (5.6: a bid reserves a slot until it lapses).
        """
        got: list[Frame] = []
        t = task if task is not None else await self.task()
        give_up = self.until(t.bid_window_ms + self.config.timeout_ms)
        while True:
            frame = self.seal(t)
            await self.send_all([frame] * copies)
            until = self.until(t.bid_window_ms + self.config.timeout_ms, t.ts)
            reply = await self.wait(about(t.task_id, Bid, Decline), until)
            if reply is None:
                raise CheckFailed(
                    f"no Bid (and no Decline) for an eligible targeted Task within the bid window "
                    f"({t.bid_window_ms} ms) + {self.config.timeout_ms} ms",
                    got,
                )
            if isinstance(reply.message, Bid):
                return Probe(t, reply)
            got.append(reply)
            assert isinstance(reply.message, Decline)
            if reply.message.reason != "busy" or now_ns() > give_up:
                raise CheckFailed("the agent declined an eligible targeted Task", got)
            await anyio.sleep(0.25)
            t = await self.task()

    async def release(self, task: Task) -> None:
        """Cancel a task the kit will not award, so the agent frees what it reserved for its bid."""
        try:
            await self.send_all([self.seal(self.cancel(task, None))])
        except BusError as exc:  # pragma: no cover - best effort
            log.warning("conformance.release_failed", error=str(exc))


def replace_struct(struct: S, changes: dict[str, object]) -> S:
    """``msgspec.structs.replace`` with a dict of changes (Constraints given as a dict are merged)."""
    try:
        return msgspec.structs.replace(struct, **changes)
    except TypeError as exc:
        raise LocalProtocolError(f"cannot change {sorted(changes)} of {type(struct).__name__}") from exc
