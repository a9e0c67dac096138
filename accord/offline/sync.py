"""Publishing the journal to JetStream when the link is up, and reading it back for an audit.

:class:`JournalSync` is a background service (``await tg.start(sync.run)``). Whenever the bus is connected it
publishes every unsynced record, oldest first, with :meth:`Bus.publish_durable` on
``accord.v1.log.outcome.<device>`` and ``Nats-Msg-Id`` = the record's id, and marks a record synced in the
journal only after the stream acknowledged it (``duplicate: true`` included). Any bus failure (disconnect,
timeout, lost ack, missing stream) ends the pass; it is retried after a backoff that doubles from
``backoff_min_ms`` to ``backoff_max_ms`` (with jitter), with the same Msg-Id, so the stream stores each record
once even when an ack is lost, the process dies between the ack and the mark, or it restarts later within the
stream's duplicate window (spec/OFFLINE.md section 3).

:func:`audit_outcomes` reads such a stream through a durable consumer and verifies every record
(:func:`~accord.offline.records.verify_record`), so an operator can audit what devices answered offline.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import anyio
from anyio.abc import TaskStatus

from accord.bus.base import Bus, BusError, NotFoundError, PermissionDeniedError
from accord.logs import get_logger
from accord.offline.journal import Journal, JournalError
from accord.offline.records import AuditError, AuditRecord, decode_record, encode_record, verify_record
from accord.protocol import subjects
from accord.runtime.timers import now_ns
from accord.security import TrustStore, VerifiedAttestation

__all__ = [
    "DEFAULT_DUPLICATE_WINDOW_MS",
    "DEFAULT_STREAM",
    "AuditEntry",
    "AuditReport",
    "JournalSync",
    "SyncStats",
    "audit_outcomes",
    "connectivity_probe",
    "ensure_outcome_stream",
]

log = get_logger(__name__)

DEFAULT_STREAM = "ACCORD_OUTCOMES"
"""The stream that captures ``accord.v1.log.outcome.*``."""
DEFAULT_DUPLICATE_WINDOW_MS = 24 * 3600 * 1000
"""A day: a lost ack retried (or a crash between ack and mark recovered) within it is stored once."""


@runtime_checkable
class _Link(Protocol):
    @property
    def is_connected(self) -> bool: ...


def connectivity_probe(bus: Bus) -> Callable[[], bool]:
    """``bus.is_connected`` when the bus has it (NatsBus), else always True (MemoryBus has no link to lose)."""
    if isinstance(bus, _Link):
        link: _Link = bus
        return lambda: link.is_connected
    return lambda: True


async def ensure_outcome_stream(
    bus: Bus,
    *,
    stream: str = DEFAULT_STREAM,
    duplicate_window_ms: int = DEFAULT_DUPLICATE_WINDOW_MS,
    replicas: int = 1,
) -> None:
    """Create (or update to this configuration) the outcome-log stream capturing ``accord.v1.log.outcome.*``.

    An operator's job, done with an unrestricted identity (agents lack the permission; spec 11.6).
    """
    await bus.ensure_stream(
        stream, [subjects.log_filter("outcome")], duplicate_window_ms=duplicate_window_ms, replicas=replicas
    )


@dataclass(slots=True)
class SyncStats:
    synced: int = 0
    """Records the stream acknowledged (and the journal marked) through this service."""
    duplicates: int = 0
    """Of those, acknowledged as duplicates (a retry after a lost ack, or a restart after a crash)."""
    failures: int = 0
    """Sync passes that ended with a bus error (each followed by a backoff)."""
    last_error: str = ""


class JournalSync:
    """Publishes a journal's unsynced records when the bus is connected (see the module docstring).

    ``create_stream``: create the stream on first use (development and tests). A device normally lacks that
    permission, and then the operator's stream is used as it is; pass False where an operator manages the
    stream (an update from here would reset its replicas and limits).
    """

    def __init__(
        self,
        bus: Bus,
        journal: Journal,
        device_id: str,
        *,
        stream: str = DEFAULT_STREAM,
        create_stream: bool = True,
        duplicate_window_ms: int = DEFAULT_DUPLICATE_WINDOW_MS,
        ack_timeout_ms: int = 2000,
        backoff_min_ms: int = 100,
        backoff_max_ms: int = 5000,
        idle_poll_ms: int = 1000,
        connected: Callable[[], bool] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.bus = bus
        self.journal = journal
        self.device_id = device_id
        self.subject = subjects.log("outcome", device_id)
        self.stream = stream
        self.create_stream = create_stream
        self.duplicate_window_ms = duplicate_window_ms
        self.ack_timeout_ms = ack_timeout_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.idle_poll_ms = idle_poll_ms
        self.connected = connected if connected is not None else connectivity_probe(bus)
        self.stats = SyncStats()
        self._rng = rng if rng is not None else random.Random()
        self._wake = anyio.Event()
        self._stream_ready = False
        self._idle = anyio.Event()
        self._log = log.bind(device=device_id)

    def kick(self) -> None:
        """Something was appended: try to sync now rather than at the next poll."""
        self._wake.set()

    async def wait_synced(self, *, timeout_s: float) -> None:
        """Wait until the journal has no unsynced record (TimeoutError after ``timeout_s``)."""
        with anyio.fail_after(timeout_s):
            while self.journal.pending():
                self._idle = anyio.Event()
                self.kick()
                with anyio.move_on_after(self.idle_poll_ms / 1000):
                    await self._idle.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sync until cancelled."""
        task_status.started()
        backoff_ms = self.backoff_min_ms
        while True:
            if not self.journal.pending() or not self.connected():
                self._idle.set()
                with anyio.move_on_after(self.idle_poll_ms / 1000):
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            try:
                await self.sync_once()
            except (BusError, JournalError) as exc:  # JournalError: e.g. the disk refused the mark
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                if isinstance(exc, NotFoundError):
                    self._stream_ready = False
                delay_ms = backoff_ms * (0.5 + self._rng.random())
                self._log.info("sync.retry", error=str(exc), reason=exc.reason, delay_ms=int(delay_ms))
                await anyio.sleep(delay_ms / 1000)
                backoff_ms = min(self.backoff_max_ms, backoff_ms * 2)
            else:
                backoff_ms = self.backoff_min_ms

    async def sync_once(self) -> int:
        """Publish every unsynced record now, oldest first; how many were marked synced. Raises BusError."""
        await self._ensure_stream()
        done = 0
        for record in self.journal.pending():
            await self.publish(record)
            done += 1
        return done

    async def publish(self, record: AuditRecord) -> None:
        """Publish one record durably and, once the stream acknowledged it, mark it synced."""
        ack = await self.bus.publish_durable(
            self.subject, encode_record(record), msg_id=record.id, timeout_ms=self.ack_timeout_ms
        )
        await anyio.to_thread.run_sync(self.journal.mark_synced, record.id, ack)
        self.stats.synced += 1
        self.stats.duplicates += ack.duplicate
        self._log.info("sync.stored", record=record.id, stream=ack.stream, seq=ack.seq, duplicate=ack.duplicate)

    async def _ensure_stream(self) -> None:
        if self._stream_ready or not self.create_stream:
            return
        try:
            await ensure_outcome_stream(self.bus, stream=self.stream, duplicate_window_ms=self.duplicate_window_ms)
        except PermissionDeniedError:  # creating streams is the operator's job; assume it exists
            self._log.info("sync.stream_not_created", stream=self.stream)
        self._stream_ready = True


# --- audit ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored record and what its check found (``verified`` None: ``error`` says why)."""

    stream_seq: int
    record: AuditRecord | None
    verified: VerifiedAttestation | None
    error: AuditError | None


@dataclass(slots=True)
class AuditReport:
    entries: list[AuditEntry] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    """Record ids seen more than once (a stream message stored twice, e.g. past the duplicate window)."""

    @property
    def verified(self) -> list[AuditEntry]:
        return [e for e in self.entries if e.verified is not None]

    @property
    def failed(self) -> list[AuditEntry]:
        return [e for e in self.entries if e.error is not None]


async def audit_outcomes(
    bus: Bus,
    trust: TrustStore,
    *,
    stream: str = DEFAULT_STREAM,
    consumer: str = "accord-audit",
    device: str | None = None,
    batch: int = 256,
    fetch_timeout_ms: int = 500,
    now: int | None = None,
) -> AuditReport:
    """Read every record now in the stream (from where ``consumer`` left off), verify each, ack it.

    ``device`` narrows to one device's subject. A record that fails its check is reported (not raised) and acked,
    so one bad record does not block the audit; a record id seen twice is reported in ``duplicates``.
    """
    filter_subject = subjects.log("outcome", device) if device is not None else subjects.log_filter("outcome")
    durable = await bus.durable_consumer(stream, consumer, filter_subject=filter_subject)
    report = AuditReport()
    seen: set[str] = set()
    try:
        while True:
            messages = await durable.fetch(batch, timeout_ms=fetch_timeout_ms)
            if not messages:
                return report
            at = now_ns() if now is None else now
            for msg in messages:
                report.entries.append(_audit_one(msg.stream_seq, msg.subject, msg.data, trust, at, seen, report))
                await msg.ack()
    finally:
        await durable.close()


def _audit_one(
    seq: int, subject: str, data: bytes, trust: TrustStore, now: int, seen: set[str], report: AuditReport
) -> AuditEntry:
    try:
        record = decode_record(data)
    except AuditError as exc:
        return AuditEntry(seq, None, None, exc)
    if record.id in seen:
        report.duplicates.append(record.id)
    seen.add(record.id)
    if subject.rsplit(".", 1)[-1] != record.device:  # spec 4.1: the last token is the publisher
        return AuditEntry(seq, record, None, AuditError("inconsistent", f"record of {record.device} on {subject}"))
    try:
        return AuditEntry(seq, record, verify_record(record, trust, now), None)
    except AuditError as exc:
        return AuditEntry(seq, record, None, exc)
