"""Deliberately broken agents: the kit must flag each one, for exactly the rules it breaks.

:class:`FixtureAgent` is a small contractor written on raw frames, independent of the reference Agent shell:
it advertises, bids (using the pure quote of 6.7), acknowledges awards, "works" for ``work_ms`` and returns an
attested Result, stops on Cancel, and refuses what section 7 says to refuse. With ``Fault.NONE`` it passes every
check. Each other :class:`Fault` breaks exactly one rule, and :data:`FIXTURES` says which checks it must fail
(the MCP conformance suite ships its negative examples the same way).

For tests and for people validating a kit change, never for a real mesh::

    agent = FixtureAgent(identity, profile, bus=bus, trust=trust, fault=Fault.IGNORES_CANCEL)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        ...
        await agent.stop()
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from accord.bus.base import Bus, BusError, BusMessage, Subscription
from accord.conformance.session import GRACE_MS
from accord.errors import AccordError, RemoteProtocolError
from accord.logs import get_logger
from accord.protocol import subjects
from accord.protocol.codec import decode, encode
from accord.protocol.contractor import ContractorProfile, quote_task
from accord.protocol.digests import output_digest, payload_digest, prompt_digest
from accord.protocol.market import NS_PER_MS, sheet_quote
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
    Message,
    Result,
    Task,
    Usage,
)
from accord.protocol.pricing import Quote
from accord.security import (
    FrameError,
    Identity,
    Reason,
    ReplayError,
    ReplayGuard,
    SecurityError,
    TrustStore,
    attest,
    open_frame,
    seal,
)
from accord.security.envelope import PAYLOAD_TYPE_FRAME, decode_envelope, encode_envelope

__all__ = ["FIXTURES", "Fault", "Fixture", "FixtureAgent"]

log = get_logger(__name__)

BID_HOLD_MS: Final = 2_000
LATE_BY_MS: Final = 600


class Fault(enum.StrEnum):
    """The one rule a fixture breaks (NONE: the correct control)."""

    NONE = "none"
    WRONG_ADVERT_SUBJECT = "wrong_advert_subject"
    SLOW_HEARTBEAT = "slow_heartbeat"
    BIDS_WHEN_INELIGIBLE = "bids_when_ineligible"
    BIDS_LATE = "bids_late"
    BAD_BID_FIELDS = "bad_bid_fields"
    NEVER_ACKS = "never_acks"
    NO_ATTESTATION = "no_attestation"
    BAD_ATTESTATION = "bad_attestation"
    IGNORES_CANCEL = "ignores_cancel"
    ACCEPTS_FORGED = "accepts_forged"
    IGNORES_EXPIRY = "ignores_expiry"
    REBIDS_ON_REPLAY = "rebids_on_replay"
    ACTS_ON_REPLAY = "acts_on_replay"
    IGNORES_WINNER = "ignores_winner"
    IGNORES_BID_ID = "ignores_bid_id"
    BAD_SIGNATURES = "bad_signatures"
    DIES_ON_GARBAGE = "dies_on_garbage"


@dataclass(frozen=True, slots=True)
class Fixture:
    fault: Fault
    breaks: frozenset[str]
    """Exactly the check ids the kit must fail for this fixture (every other one passes or does not apply)."""
    description: str


def _fixture(fault: Fault, breaks: set[str], description: str) -> tuple[Fault, Fixture]:
    return fault, Fixture(fault, frozenset(breaks), description)


FIXTURES: Final[Mapping[Fault, Fixture]] = MappingProxyType(
    dict(
        [
            _fixture(Fault.NONE, set(), "the correct control: passes every check"),
            _fixture(
                Fault.WRONG_ADVERT_SUBJECT,
                {"advertise.valid"},
                "advertises on another region's subject than the one it names",
            ),
            _fixture(Fault.SLOW_HEARTBEAT, {"advertise.heartbeat"}, "re-advertises only every 3 x ttl_ms"),
            _fixture(
                Fault.BIDS_WHEN_INELIGIBLE,
                {
                    "task.decline_residency",
                    "task.decline_kind",
                    "task.decline_deadline",
                    "task.decline_price",
                    "task.prompt_digest",
                },
                "bids on every Task, whatever it can serve",
            ),
            _fixture(Fault.BIDS_LATE, {"bid.window"}, "sends its bids after the bid window closed"),
            _fixture(Fault.BAD_BID_FIELDS, {"bid.fields"}, "bids with a valid_until_ns that has already passed"),
            _fixture(
                Fault.NEVER_ACKS,
                {"award.ack"},
                "works on awards without an AwardAck and sends nothing until after the ack time",
            ),
            _fixture(Fault.NO_ATTESTATION, {"result.attested"}, "returns Results without an attestation"),
            _fixture(
                Fault.BAD_ATTESTATION,
                {"result.attested"},
                "attests the digest of its bid instead of the Award's",
            ),
            _fixture(Fault.IGNORES_CANCEL, {"cancel.stops"}, "keeps working after a Cancel and delivers"),
            _fixture(
                Fault.ACCEPTS_FORGED,
                {"refuse.bad_signature", "refuse.unknown_key"},
                "checks neither trust nor signatures (decodes every frame and acts on it)",
            ),
            _fixture(
                Fault.IGNORES_EXPIRY,
                {"refuse.expired", "refuse.stale"},
                "keeps a replay window but checks neither expires_ns nor ts",
            ),
            _fixture(Fault.REBIDS_ON_REPLAY, {"refuse.replay_task"}, "answers a replayed Task with a second Bid"),
            _fixture(Fault.ACTS_ON_REPLAY, {"refuse.replay_award"}, "acts on a replayed Award (works twice)"),
            _fixture(Fault.IGNORES_WINNER, {"refuse.wrong_winner"}, "takes Awards that name another winner"),
            _fixture(Fault.IGNORES_BID_ID, {"refuse.unknown_bid"}, "takes Awards for bids it never made"),
            _fixture(
                Fault.BAD_SIGNATURES,
                {"frames.signed", "result.sealed"},
                "signs its bids, acks and results with a broken signature (adverts are fine)",
            ),
            _fixture(
                Fault.DIES_ON_GARBAGE,
                {"robust.malformed"},
                "stops answering after the first malformed frame",
            ),
        ]
    )
)


@dataclass(slots=True)
class _Job:
    task: Task
    state: str
    """``bidding``, ``released``, ``running`` or ``done``."""
    bid: Bid | None = None
    bid_digest: str = ""
    award: Award | None = None
    scope: anyio.CancelScope | None = None


class FixtureAgent:
    """A minimal contractor on raw frames with one optional :class:`Fault` (see the module docstring)."""

    def __init__(
        self,
        identity: Identity,
        profile: ContractorProfile,
        *,
        bus: Bus,
        trust: TrustStore,
        fault: Fault = Fault.NONE,
        work_ms: int = 150,
    ) -> None:
        self.identity = identity
        self.id = identity.id
        self.profile = profile
        self.bus = bus
        self.trust = trust
        self.fault = fault
        self.work_ms = work_ms
        self._guard = ReplayGuard(start_ns=time.time_ns())
        self._seen: set[tuple[str, str]] = set()
        self._jobs: dict[str, _Job] = {}
        self._dead = False
        self._seq = 0
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()
        self._out_send, self._out_receive = anyio.create_memory_object_stream[tuple[str, bytes]](10_000)

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self._out_send, anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._publisher)
            p = self.profile
            broadcast = subjects.announce_filters(p.tier, p.residency, list(p.skills) or None)
            for subject in [*broadcast, subjects.direct_filter(self.id)]:
                sub = await self.bus.subscribe(subject)
                tg.start_soon(self._pump, sub, subject in broadcast)
            tg.start_soon(self._heartbeat)
            task_status.started()
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def stop(self) -> None:
        self._stop.set()

    async def _publisher(self) -> None:
        async with self._out_receive:
            async for subject, frame in self._out_receive:
                try:
                    await self.bus.publish(subject, frame)
                except BusError as exc:  # pragma: no cover - a test bus going away
                    log.warning("fixture.publish_failed", error=str(exc))

    async def _pump(self, sub: Subscription, broadcast: bool) -> None:
        async with sub:
            async for msg in sub:
                self._receive(msg, broadcast)

    async def _heartbeat(self) -> None:
        p = self.profile
        region = "elsewhere" if self.fault is Fault.WRONG_ADVERT_SUBJECT and p.region != "elsewhere" else p.region
        subject = subjects.advertise(p.tier, region, self.id)
        interval_ms = p.ttl_ms * 3 if self.fault is Fault.SLOW_HEARTBEAT else p.ttl_ms // 3
        while True:
            advert = Advertise(
                id=_new_id(),
                sender=self.id,
                ts=time.time_ns(),
                name=p.name,
                tier=p.tier,
                region=p.region,
                residency=list(p.residency),
                skills=list(p.skills),
                models=list(p.offers()),
                slots=p.slots,
                load=sum(j.state == "running" for j in self._jobs.values()),
                ttl_ms=p.ttl_ms,
                seq=self._seq,
            )
            self._seq += 1
            self._out_send.send_nowait((subject, seal(advert, self.identity)))
            await anyio.sleep(interval_ms / 1000)

    # --- sending ------------------------------------------------------------------------------------------------
    def _send(self, to: str, message: Message, *, delay_ms: int = 0) -> None:
        frame = seal(message, self.identity)
        if self.fault is Fault.BAD_SIGNATURES:
            envelope = decode_envelope(frame, PAYLOAD_TYPE_FRAME)
            sig = bytes([envelope.sig[0] ^ 0x01]) + envelope.sig[1:]
            frame = encode_envelope(msgspec.structs.replace(envelope, sig=sig))
        subject = subjects.direct(to, self.id)
        if delay_ms and self._tg is not None:
            self._tg.start_soon(self._send_later, subject, frame, delay_ms)
        else:
            self._out_send.send_nowait((subject, frame))

    async def _send_later(self, subject: str, frame: bytes, delay_ms: int) -> None:
        await anyio.sleep(delay_ms / 1000)
        await self._out_send.send((subject, frame))

    # --- receiving ----------------------------------------------------------------------------------------------
    def _open(self, data: bytes, now: int) -> AnyMessage:
        f = self.fault
        if f is Fault.ACCEPTS_FORGED:  # decode, no trust, no signature: exactly what 7.5 forbids
            try:
                message = decode(decode_envelope(data, PAYLOAD_TYPE_FRAME).payload)
            except RemoteProtocolError as exc:
                raise FrameError(Reason.MALFORMED, exc.detail) from exc
            self._guard.admit(message.sender, message.id, message.ts, message.expires_ns, now)
            return message
        if f is Fault.IGNORES_EXPIRY:  # ids only: neither expires_ns nor ts is looked at
            message = open_frame(data, self.trust, None, now).message
            if (message.sender, message.id) in self._seen:
                raise ReplayError(Reason.REPLAY, "seen")
            self._seen.add((message.sender, message.id))
            return message
        if (
            f is Fault.ACTS_ON_REPLAY or f is Fault.REBIDS_ON_REPLAY
        ):  # freshness checked, no replay rule for one type
            message = open_frame(data, self.trust, None, now).message
            if isinstance(message, Award if f is Fault.ACTS_ON_REPLAY else Task):
                self._guard.check(message.sender, message.id, message.ts, message.expires_ns, now)
            else:
                self._guard.admit(message.sender, message.id, message.ts, message.expires_ns, now)
            return message
        return open_frame(data, self.trust, self._guard, now).message

    def _receive(self, msg: BusMessage, broadcast: bool) -> None:
        if self._dead:
            return
        now = time.time_ns()
        try:
            message = self._open(msg.data, now)
            if msg.subject.rsplit(".", 1)[-1] != message.sender:
                return  # 4.1: the last token names the publisher
        except FrameError as exc:
            if self.fault is Fault.DIES_ON_GARBAGE:
                log.info("fixture.dead", error=str(exc), subject=msg.subject, size=len(msg.data))
                self._dead = True
            return
        except (SecurityError, AccordError):
            return
        if isinstance(message, Task):
            self._on_task(message, broadcast, now)
        elif isinstance(message, Award):
            self._on_award(message, now)
        elif isinstance(message, Cancel):
            self._on_cancel(message)

    # --- the contractor -----------------------------------------------------------------------------------------
    def _quote(self, task: Task, now: int) -> Quote | str:
        if self.fault is Fault.BIDS_WHEN_INELIGIBLE:
            m = self.profile.offers()[0]
            price, latency = sheet_quote(
                m, input_tokens=task.est_input_tokens, output_tokens=task.max_output_tokens
            )
            return Quote(model=m.name, price_micros=price, est_latency_ms=latency, quality=m.quality)
        if task.messages and prompt_digest(task.messages) != task.prompt_digest:
            return "other"
        q = quote_task(self.profile, task, now=now)
        return q if isinstance(q, Quote) else q.reason.value

    def _on_task(self, task: Task, broadcast: bool, now: int) -> None:
        if task.sender == self.id:
            return
        job = self._jobs.get(task.task_id)
        if job is not None and job.state == "bidding" and self.fault is Fault.REBIDS_ON_REPLAY:
            job = None  # evaluated again: a second Bid
        if job is not None and not (job.state == "released" and task.attempt > job.task.attempt):
            return
        q = self._quote(task, now)
        busy = sum(j.state == "running" for j in self._jobs.values()) >= self.profile.slots
        if isinstance(q, str) or busy:
            self._jobs[task.task_id] = _Job(task, "released")
            if not broadcast:
                reason = "busy" if not isinstance(q, str) else q
                decline = Decline(
                    id=_new_id(), sender=self.id, ts=now, task_id=task.task_id, attempt=task.attempt, reason=reason
                )
                self._send(task.sender, decline)
            return
        close = task.ts + task.bid_window_ms * NS_PER_MS
        valid_until = max(now, close) + BID_HOLD_MS * NS_PER_MS
        if self.fault is not Fault.BIDS_WHEN_INELIGIBLE:  # which bids as if the deadline were no concern
            valid_until = min(task.constraints.deadline_ns, valid_until)
        bad = self.fault is Fault.BAD_BID_FIELDS
        bid = Bid(
            id=_new_id(),
            sender=self.id,
            ts=now,
            expires_ns=None if bad else valid_until,
            task_id=task.task_id,
            attempt=task.attempt,
            model=q.model,
            price_micros=q.price_micros,
            est_latency_ms=q.est_latency_ms,
            quality=q.quality,
            valid_until_ns=now if bad else valid_until,
            tier=self.profile.tier,
            region=self.profile.region,
            residency=list(self.profile.residency),
        )
        self._jobs[task.task_id] = _Job(task, "bidding", bid, payload_digest(encode(bid)))
        delay = (max(0, close - now) // NS_PER_MS + LATE_BY_MS) if self.fault is Fault.BIDS_LATE else 0
        self._send(task.sender, bid, delay_ms=delay)

    def _reject(self, award: Award, reason: str, now: int) -> None:
        reject = AwardReject(
            id=_new_id(),
            sender=self.id,
            ts=now,
            task_id=award.task_id,
            attempt=award.attempt,
            award_id=award.id,
            reason=reason,
        )
        self._send(award.sender, reject)

    def _on_award(self, award: Award, now: int) -> None:
        if award.winner != self.id and self.fault is not Fault.IGNORES_WINNER:
            return  # 3.7: not for us, ignore
        job = self._jobs.get(award.task_id)
        if job is None:
            self._reject(award, "unknown_task", now)
            return
        if award.sender != job.task.sender:
            return
        if job.award is not None:
            if award.id != job.award.id:
                self._reject(award, "busy", now)
            elif self.fault is Fault.ACTS_ON_REPLAY:
                self._accept(job, award, now)
            return
        if job.state != "bidding":
            self._reject(award, "cancelled", now)
            return
        assert job.bid is not None
        names_bid = award.bid_id == job.bid.id and award.bid_digest == job.bid_digest
        if not names_bid and self.fault is not Fault.IGNORES_BID_ID:
            self._reject(award, "other", now)  # 5.6; the bid stands (7.5: a refused frame changes nothing)
            return
        self._accept(job, award, now)

    def _accept(self, job: _Job, award: Award, now: int) -> None:
        job.award = award
        job.state = "running"
        if self.fault is not Fault.NEVER_ACKS:
            ack = AwardAck(
                id=_new_id(),
                sender=self.id,
                ts=now,
                task_id=award.task_id,
                attempt=award.attempt,
                award_id=award.id,
            )
            self._send(award.sender, ack)
        scope = anyio.CancelScope()
        job.scope = scope
        assert self._tg is not None
        self._tg.start_soon(self._work, job, award, scope)

    async def _work(self, job: _Job, award: Award, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep(self.work_ms / 1000)
            if self.fault is Fault.NEVER_ACKS:  # nothing acknowledges the award in time, not even the Result
                await anyio.sleep(max(0, award.ack_by_ns - time.time_ns()) / 1e9 + 2 * GRACE_MS / 1000)
            assert job.bid is not None
            output = f"fixture answer for task {award.task_id}"
            award_digest = job.bid_digest if self.fault is Fault.BAD_ATTESTATION else payload_digest(encode(award))
            statement = Attestation(
                id=_new_id(),
                sender=self.id,
                ts=time.time_ns(),
                task_id=award.task_id,
                attempt=award.attempt,
                agent=self.id,
                requester=award.sender,
                prompt_digest=job.task.prompt_digest,
                award_digest=award_digest,
                output_digest=output_digest(output),
                model=job.bid.model,
                backend="fixture",
            )
            attestation = b"" if self.fault is Fault.NO_ATTESTATION else attest(statement, self.identity)
            result = Result(
                id=_new_id(),
                sender=self.id,
                ts=time.time_ns(),
                task_id=award.task_id,
                attempt=award.attempt,
                award_id=award.id,
                model=job.bid.model,
                output=output,
                usage=Usage(input_tokens=job.task.est_input_tokens, output_tokens=8),
                attestation=attestation,
            )
            self._send(award.sender, result)
            job.state = "done"

    def _on_cancel(self, cancel: Cancel) -> None:
        job = self._jobs.get(cancel.task_id)
        if job is None or cancel.sender != job.task.sender:
            return
        if job.state == "running" and job.award is not None:
            if cancel.attempt not in (None, job.award.attempt) or self.fault is Fault.IGNORES_CANCEL:
                return
            if job.scope is not None:
                job.scope.cancel()
            job.state = "released"
        elif job.state == "bidding" and cancel.attempt is None:
            job.state = "released"


def _new_id() -> str:
    return secrets.token_hex(16)
