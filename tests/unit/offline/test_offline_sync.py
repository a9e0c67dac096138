"""JournalSync over MemoryBus: each record lands in the stream exactly once across lost acks, crashes, restarts."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest

from accord.bus.base import BusTimeoutError, DurableAck
from accord.bus.memory import MemoryBroker, MemoryBus
from accord.offline import AuditRecord, Journal, JournalSync, audit_outcomes, decode_record, encode_record
from accord.protocol import subjects
from accord.routing.records import Outcome
from accord.security.testing import Pki

pytestmark = pytest.mark.asyncio


class LossyAckBus(MemoryBus):
    """Stores every durable publish, but loses the ack of the first ``lose`` of them (a timeout instead)."""

    def __init__(self, broker: MemoryBroker, lose: int) -> None:
        super().__init__(broker)
        self.lose = lose
        self.attempts = 0

    async def publish_durable(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int = 2000,
    ) -> DurableAck:
        self.attempts += 1
        ack = await super().publish_durable(subject, data, msg_id=msg_id, headers=headers, timeout_ms=timeout_ms)
        if self.lose > 0:
            self.lose -= 1
            raise BusTimeoutError("ack lost", subject=subject)
        return ack


def _records(device: str, n: int) -> list[AuditRecord]:
    rng = random.Random(3)
    out = []
    for i in range(n):
        rid = f"{rng.getrandbits(128):032x}"
        outcome = Outcome(query_id=rid, prompt=f"q{i}", model="tiny", response=f"a{i}", source="offline")
        out.append(AuditRecord(id=rid, device=device, offline=True, outcome=outcome, attestation=b"{}"))
    return out


async def _stored_ids(bus: MemoryBus) -> list[str]:
    consumer = await bus.durable_consumer("ACCORD_OUTCOMES", f"check-{random.getrandbits(32)}")
    ids = []
    while batch := await consumer.fetch(100, timeout_ms=50):
        for m in batch:
            ids.append(decode_record(m.data).id)
            await m.ack()
    return ids


async def test_lost_acks_are_retried_with_the_same_id_and_stored_once(tmp_path: Path) -> None:
    device = Pki(random.Random(1)).agent("device").id
    broker = MemoryBroker(seed=1)
    bus = LossyAckBus(broker, lose=2)
    journal = Journal(tmp_path / "j")
    records = _records(device, 3)
    for r in records:
        journal.append(r)
    sync = JournalSync(bus, journal, device, backoff_min_ms=5, backoff_max_ms=20, idle_poll_ms=20)
    async with anyio.create_task_group() as tg:
        await tg.start(sync.run)
        await sync.wait_synced(timeout_s=5)
        tg.cancel_scope.cancel()
    assert await _stored_ids(bus) == [r.id for r in records]  # in order, each once
    assert sync.stats.failures == 2 and sync.stats.synced == 3 and sync.stats.duplicates == 1
    assert bus.attempts == 5 and journal.pending() == []  # record 0 three times (two acks lost), 1 and 2 once
    assert all(journal.ack_of(r.id) is not None for r in records)


async def test_a_crash_between_ack_and_mark_is_absorbed_after_restart(tmp_path: Path) -> None:
    device = Pki(random.Random(2)).agent("device").id
    broker = MemoryBroker(seed=2)
    path = tmp_path / "j"
    records = _records(device, 2)
    with Journal(path) as journal:
        for r in records:
            journal.append(r)
    # the first process published record 0, got its ack, and died before writing the mark
    first = broker.bus()
    await first.ensure_stream("ACCORD_OUTCOMES", [subjects.log_filter("outcome")])
    await first.publish_durable(subjects.log("outcome", device), encode_record(records[0]), msg_id=records[0].id)
    # the restarted process finds both records unsynced and publishes them again
    restarted = Journal(path)
    assert [r.id for r in restarted.pending()] == [r.id for r in records]
    sync = JournalSync(broker.bus(), restarted, device)
    assert await sync.sync_once() == 2
    assert sync.stats.duplicates == 1
    assert await _stored_ids(first) == [r.id for r in records]
    assert restarted.pending() == []
    restarted.close()
    with Journal(path) as third:  # and the marks themselves survive the next restart
        assert third.pending() == []


async def test_nothing_is_published_while_disconnected(tmp_path: Path) -> None:
    device = Pki(random.Random(4)).agent("device").id
    bus = MemoryBroker(seed=4).bus()
    journal = Journal(tmp_path / "j")
    journal.append(_records(device, 1)[0])
    up = False
    sync = JournalSync(bus, journal, device, connected=lambda: up, idle_poll_ms=10)
    async with anyio.create_task_group() as tg:
        await tg.start(sync.run)
        await anyio.sleep(0.1)
        assert sync.stats.synced == 0 and sync.stats.failures == 0 and len(journal.pending()) == 1
        up = True
        await sync.wait_synced(timeout_s=5)
        tg.cancel_scope.cancel()
    assert sync.stats.synced == 1
    report = await audit_outcomes(bus, Pki(random.Random(4)).trust)
    # a record with a fake attestation is reported as failed, never as verified
    assert len(report.entries) == 1 and report.verified == [] and report.failed[0].error is not None
