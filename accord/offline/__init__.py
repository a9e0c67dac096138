"""Intermittent connectivity for devices: answer locally when the mesh is out of reach, sync the evidence later.

- :class:`DeviceRequester` (``device.py``): ``await device.submit(spec)`` through the mesh, or with the local
  model when the bus is down or the market cannot be reached in time; says which in ``DeviceAnswer.offline``.
- :class:`Journal` (``journal.py``): the durable, bounded, owner-only JSONL file of audit records.
- :class:`JournalSync` and :func:`audit_outcomes` (``sync.py``): exactly-once publishing of the journal to a
  JetStream stream when the link is up, and the operator's verified read-back.
- :class:`AuditRecord`, :func:`verify_record` (``records.py``): the record and the auditor's checks.

Normative text: spec/OFFLINE.md.
"""

from accord.offline.device import DEFAULT_SYSTEM_PROMPT, AnswerRoute, DeviceAnswer, DeviceRequester
from accord.offline.journal import (
    DEFAULT_MAX_BYTES,
    Journal,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    JournalPermissionError,
)
from accord.offline.records import (
    NO_BID_DIGEST,
    AuditError,
    AuditRecord,
    LocalAnswer,
    decode_record,
    encode_record,
    local_task,
    mesh_record,
    seal_local_answer,
    verify_record,
)
from accord.offline.sync import (
    DEFAULT_DUPLICATE_WINDOW_MS,
    DEFAULT_STREAM,
    AuditEntry,
    AuditReport,
    JournalSync,
    SyncStats,
    audit_outcomes,
    connectivity_probe,
    ensure_outcome_stream,
)

__all__ = [
    "DEFAULT_DUPLICATE_WINDOW_MS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_STREAM",
    "DEFAULT_SYSTEM_PROMPT",
    "NO_BID_DIGEST",
    "AnswerRoute",
    "AuditEntry",
    "AuditError",
    "AuditRecord",
    "AuditReport",
    "DeviceAnswer",
    "DeviceRequester",
    "Journal",
    "JournalCorruptError",
    "JournalError",
    "JournalFullError",
    "JournalLockedError",
    "JournalPermissionError",
    "JournalSync",
    "LocalAnswer",
    "SyncStats",
    "audit_outcomes",
    "connectivity_probe",
    "decode_record",
    "encode_record",
    "ensure_outcome_stream",
    "local_task",
    "mesh_record",
    "seal_local_answer",
    "verify_record",
]
