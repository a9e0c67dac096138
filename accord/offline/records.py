"""Audit records of a device's answers, and the evidence of an answer the device produced on its own.

A device that cannot reach the mesh answers with its local model and is then both the requester and the agent
of that task. It records the same evidence a mesh answer carries (spec/OFFLINE.md section 2):

- a Task it sealed as requester (the prompt, its digest, the deadline),
- a self-Award (``winner`` = the device, price 0, ``bid_id`` = the task id, ``bid_digest`` = SHA-256 of no
  bytes: there was no bid),
- a Result sealed as agent, whose attestation names the device as ``agent`` and ``requester`` and binds the
  Award's payload digest, exactly as :func:`accord.security.verify_result_attestation` checks a mesh result.

An :class:`AuditRecord` is what the journal stores and the sync publishes to JetStream: the outcome (the row a
router learns from), the attestation envelope, and for offline answers the three sealed frames.
:func:`verify_record` is the auditor's check of one record. Pure: no clock, no I/O; ``now`` is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from accord.backends.base import Completion
from accord.errors import AccordError
from accord.protocol import subjects
from accord.protocol.actions import new_message_id
from accord.protocol.codec import encode
from accord.protocol.digests import output_digest, payload_digest, prompt_digest
from accord.protocol.messages import Attestation, Award, ChatMessage, Result, Role, Task
from accord.protocol.requester import TaskSpec
from accord.routing.records import Outcome
from accord.security import (
    Expect,
    Identity,
    Opened,
    SecurityError,
    TrustStore,
    VerifiedAttestation,
    attest,
    open_frame,
    seal,
    verify_attestation,
    verify_result_attestation,
)

__all__ = [
    "NO_BID_DIGEST",
    "RECORD_VERSION",
    "AuditError",
    "AuditRecord",
    "LocalAnswer",
    "decode_record",
    "encode_record",
    "first_user_prompt",
    "local_task",
    "mesh_record",
    "seal_local_answer",
    "verify_record",
]

RECORD_VERSION: Final = 1
NO_BID_DIGEST: Final = payload_digest(b"")
"""``bid_digest`` of a self-Award: the SHA-256 of no bytes (an offline task has no bid)."""

_Id = Annotated[str, Meta(pattern=r"^[0-9a-f]{32}\Z")]
_Frame = Annotated[bytes, Meta(max_length=1 << 20)]


class AuditError(AccordError):
    """An audit record failed a check. ``reason`` is a stable token (a security reason code such as
    ``bad_signature``, or ``malformed`` / ``inconsistent``); the text says which check."""

    def __init__(self, reason: str, detail: str, *, record_id: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.record_id = record_id
        where = f"record {record_id}: " if record_id else ""
        super().__init__(f"{where}{reason}: {detail}")


class AuditRecord(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One answer of a device, as journaled and as published on ``accord.v1.log.outcome.<device>``."""

    id: _Id
    """The Result's message id: the record's identity, and its ``Nats-Msg-Id`` in the stream."""
    device: str
    """The device's agent id (requester of the task; also its agent when ``offline``)."""
    offline: bool
    outcome: Outcome
    attestation: Annotated[bytes, Meta(max_length=64 * 1024)]
    """The Result's DSSE attestation envelope."""
    frames: Annotated[list[_Frame], Meta(max_length=3)] = []
    """Offline answers: the sealed Task, self-Award and Result frames, in that order. Mesh answers: empty."""
    v: int = RECORD_VERSION


_json_encoder: Final = msgspec.json.Encoder(order="deterministic")
_json_decoder: Final = msgspec.json.Decoder(AuditRecord)


def encode_record(record: AuditRecord) -> bytes:
    """Compact JSON (keys in a fixed order): one journal line, one stream message."""
    return _json_encoder.encode(record)


def decode_record(data: bytes) -> AuditRecord:
    """The record in ``data``; AuditError(malformed) when it is not one."""
    try:
        return _json_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise AuditError("malformed", str(exc)) from exc


def first_user_prompt(messages: Sequence[ChatMessage]) -> str:
    """The first user turn (what an :class:`Outcome` records as ``prompt``)."""
    for message in messages:
        if message.role is Role.USER:
            return message.content
    return messages[0].content if messages else ""


def local_task(identity: Identity, spec: TaskSpec, *, rng: random.Random, now: int) -> Task:
    """The Task of a local answer: the device is its sender, as it would be when announcing it."""
    return spec.to_task(sender=identity.id, task_id=new_message_id(rng), ts=now)


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """A sealed local answer: the messages, their frames, and the audit record holding them."""

    task: Task
    award: Award
    result: Result
    record: AuditRecord


def seal_local_answer(
    identity: Identity,
    task: Task,
    completion: Completion,
    *,
    backend: str,
    latency_ms: int,
    rng: random.Random,
    now: int,
) -> LocalAnswer:
    """Award ``task`` to the device itself, attest ``completion`` and seal Task, Award and Result."""
    me = identity.id
    award = Award(
        id=new_message_id(rng),
        sender=me,
        ts=task.ts,
        task_id=task.task_id,
        attempt=1,
        winner=me,
        bid_id=task.task_id,
        bid_digest=NO_BID_DIGEST,
        price_micros=0,
        ack_by_ns=task.ts,
        lease_until_ns=task.constraints.deadline_ns,
    )
    statement = Attestation(
        id=new_message_id(rng),
        sender=me,
        ts=now,
        task_id=task.task_id,
        attempt=1,
        agent=me,
        requester=me,
        prompt_digest=task.prompt_digest,
        award_digest=payload_digest(encode(award)),
        output_digest=output_digest(completion.text),
        model=completion.model,
        backend=subjects.validate_token(backend, "backend"),
        usage=completion.usage,
        timings=completion.timings,
    )
    envelope = attest(statement, identity)
    result = Result(
        id=new_message_id(rng),
        sender=me,
        ts=now,
        task_id=task.task_id,
        attempt=1,
        award_id=award.id,
        model=completion.model,
        output=completion.text,
        usage=completion.usage,
        timings=completion.timings,
        attestation=envelope,
    )
    outcome = Outcome(
        query_id=task.task_id,
        prompt=first_user_prompt(task.messages),
        model=completion.model,
        agent=me,
        kind=task.kind,
        response=completion.text,
        cost_micros=0,
        latency_ms=max(0, latency_ms),
        input_tokens=completion.usage.input_tokens,
        output_tokens=completion.usage.output_tokens,
        source="offline",
        ts_ns=now,
    )
    record = AuditRecord(
        id=result.id,
        device=me,
        offline=True,
        outcome=outcome,
        attestation=envelope,
        frames=[seal(task, identity), seal(award, identity), seal(result, identity)],
    )
    return LocalAnswer(task, award, result, record)


def mesh_record(
    device: str, result: Result, *, prompt: str, kind: str, price_micros: int, latency_ms: int, now: int
) -> AuditRecord:
    """The record of an answer the mesh gave (its attestation was verified by the requester)."""
    outcome = Outcome(
        query_id=result.task_id,
        prompt=prompt,
        model=result.model,
        agent=result.sender,
        kind=kind,
        response=result.output,
        cost_micros=price_micros,
        latency_ms=max(0, latency_ms),
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        source="mesh",
        ts_ns=now,
    )
    return AuditRecord(id=result.id, device=device, offline=False, outcome=outcome, attestation=result.attestation)


def verify_record(record: AuditRecord, trust: TrustStore, now_ns: int) -> VerifiedAttestation:
    """Check one record as an auditor would (spec/OFFLINE.md section 4); its verified attestation.

    Offline records: all three frames verify and are signed by ``device``; the Award is the device's award of
    that Task to itself; the Result answers that Award; its attestation verifies against the Result with
    ``requester`` = the device and the Award's payload digest; the prompt digest is the Task's (and matches its
    messages); the record's id, attestation and response are the Result's. Mesh records: the attestation
    verifies, attests the recorded response, and names the device as requester.
    """
    rid = record.id
    try:
        if not record.offline:
            if record.frames:
                raise AuditError("inconsistent", "a mesh record carries no frames", record_id=rid)
            return verify_attestation(
                record.attestation,
                trust,
                now_ns,
                output=record.outcome.response,
                expect=Expect(task_id=record.outcome.query_id, recipient=record.device),
            )
        if len(record.frames) != 3:
            raise AuditError("inconsistent", "an offline record carries Task, Award and Result", record_id=rid)
        task_f, award_f, result_f = (open_frame(f, trust, None, now_ns) for f in record.frames)
        return _check_offline(record, task_f, award_f, result_f, trust, now_ns)
    except SecurityError as exc:
        raise AuditError(exc.reason.value, exc.detail or str(exc), record_id=rid) from exc


def _check_offline(
    record: AuditRecord, task_f: Opened, award_f: Opened, result_f: Opened, trust: TrustStore, now_ns: int
) -> VerifiedAttestation:
    rid, me = record.id, record.device
    task, award, result = task_f.message, award_f.message, result_f.message
    if not (isinstance(task, Task) and isinstance(award, Award) and isinstance(result, Result)):
        raise AuditError("inconsistent", "frames are not Task, Award, Result", record_id=rid)
    if {task_f.signer, award_f.signer, result_f.signer} != {me}:
        raise AuditError("inconsistent", "frames not all signed by the device", record_id=rid)
    if award.winner != me or award.task_id != task.task_id or award.attempt != 1 or award.price_micros != 0:
        raise AuditError("inconsistent", "the Award is not the device's self-award of the Task", record_id=rid)
    if result.award_id != award.id or result.task_id != task.task_id:
        raise AuditError("inconsistent", "the Result does not answer the Award", record_id=rid)
    if task.messages and prompt_digest(task.messages) != task.prompt_digest:
        raise AuditError("inconsistent", "the Task's prompt digest does not match its messages", record_id=rid)
    verified = verify_result_attestation(result_f, trust, now_ns, requester=me, award_payload=award_f.payload)
    if verified.statement.prompt_digest != task.prompt_digest:
        raise AuditError("inconsistent", "the attestation's prompt digest is not the Task's", record_id=rid)
    if record.id != result.id or record.attestation != result.attestation:
        raise AuditError("inconsistent", "the record's id or attestation is not the Result's", record_id=rid)
    if record.outcome.response is not None and record.outcome.response != result.output:
        raise AuditError("inconsistent", "the recorded response is not the Result's output", record_id=rid)
    return verified
