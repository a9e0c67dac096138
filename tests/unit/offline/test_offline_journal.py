"""The device journal: durable appends, restart, bounds, owner-only permissions, corrupt and torn lines."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from accord.bus.base import DurableAck
from accord.offline import (
    AuditRecord,
    Journal,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    JournalPermissionError,
)
from accord.routing.records import Outcome


def _record(i: int, *, size: int = 40) -> AuditRecord:
    rid = f"{random.Random(i).getrandbits(128):032x}"
    outcome = Outcome(query_id=rid, prompt=f"q{i}", model="tiny", response="x" * size, source="offline")
    return AuditRecord(id=rid, device="UDEVICE", offline=True, outcome=outcome, attestation=b"{}")


def test_append_survives_a_restart_with_sync_marks(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        for i in range(3):
            journal.append(_record(i))
        journal.mark_synced(_record(1).id, DurableAck(stream="S", seq=7))
        assert [r.id for r in journal.pending()] == [_record(0).id, _record(2).id]
    with Journal(path) as again:  # a new process opening the same file
        assert [r.id for r in again.records()] == [_record(i).id for i in range(3)]
        assert [r.id for r in again.pending()] == [_record(0).id, _record(2).id]
        assert again.ack_of(_record(1).id) == DurableAck(stream="S", seq=7)
        assert again.records()[0] == _record(0)
        assert again.size_bytes == path.stat().st_size


def test_marking_twice_is_idempotent_and_unknown_ids_are_refused(tmp_path: Path) -> None:
    with Journal(tmp_path / "j") as journal:
        journal.append(_record(0))
        journal.mark_synced(_record(0).id, DurableAck(stream="S", seq=1))
        size = journal.size_bytes
        journal.mark_synced(_record(0).id, DurableAck(stream="S", seq=1, duplicate=True))
        assert journal.size_bytes == size
        with pytest.raises(JournalError, match="no record"):
            journal.mark_synced(_record(9).id, DurableAck(stream="S", seq=2))
        with pytest.raises(JournalError, match="already in the journal"):
            journal.append(_record(0))


def test_file_is_owner_only_and_a_readable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(JournalPermissionError, match="chmod 600") as info:
        Journal(path)
    assert info.value.reason == "insecure_permissions"


def test_bounded_size_gives_a_clear_error_and_sync_frees_room(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, max_bytes=2048)
    appended = []
    with pytest.raises(JournalFullError) as info:
        for i in range(100):
            journal.append(_record(i, size=200))
            appended.append(_record(i, size=200).id)
    assert info.value.reason == "full" and "unsynced" in str(info.value)
    assert 1 < len(appended) < 100
    assert path.stat().st_size <= 2048
    assert [r.id for r in journal.pending()] == appended  # nothing lost by the refusal
    journal.mark_synced(appended[0], DurableAck(stream="S", seq=1))
    journal.append(_record(500, size=200))  # compaction dropped the synced record to make room
    assert appended[0] not in journal and _record(500).id in journal
    journal.close()
    reopened = Journal(path, max_bytes=2048)
    assert [r.id for r in reopened.pending()] == [*appended[1:], _record(500).id]
    reopened.close()


def test_corrupt_line_is_a_typed_error_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        for i in range(3):
            journal.append(_record(i))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"kind":"record","record":{"id":"not hex"' + b"\n"
    path.write_bytes(b"".join(lines))
    before = path.read_bytes()
    with pytest.raises(JournalCorruptError) as info:
        Journal(path)
    assert info.value.reason == "corrupt" and info.value.line == 2 and "repair=True" in str(info.value)
    assert path.read_bytes() == before  # refused, untouched
    with Journal(path, repair=True) as repaired:
        assert [r.id for r in repaired.pending()] == [_record(0).id, _record(2).id]
    quarantine = path.with_name(path.name + ".corrupt")
    assert quarantine.read_bytes() == lines[1]  # the bad line is kept aside, not deleted
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o600
    with Journal(path) as clean:
        assert len(clean) == 2


def test_a_write_torn_by_a_crash_is_set_aside_and_the_rest_loads(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.append(_record(0))
        journal.append(_record(1))
    whole = path.read_bytes()
    torn = whole[: len(whole) - 25]  # the second line lost its end (and its newline)
    path.write_bytes(torn)
    with Journal(path) as journal:
        assert [r.id for r in journal.records()] == [_record(0).id]
        journal.append(_record(2))
    with Journal(path) as again:
        assert [r.id for r in again.records()] == [_record(0).id, _record(2).id]
    tail = torn[torn.rfind(b"\n") + 1 :]
    assert path.with_name(path.name + ".corrupt").read_bytes() == tail + b"\n"


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first = Journal(path)
    with pytest.raises(JournalLockedError) as info:
        Journal(path)
    assert info.value.reason == "locked"
    first.close()
    with Journal(path) as second:  # released on close
        second.append(_record(1))
