"""DeviceRequester over MemoryBus: mesh answers when reachable, sealed local answers when not, and their sync."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from accord.backends.base import Completion, CompletionRequest, DeltaCallback
from accord.bus.base import DisconnectedError, DurableAck
from accord.bus.memory import MemoryBroker, MemoryBus
from accord.errors import LocalProtocolError
from accord.offline import (
    AnswerRoute,
    AuditError,
    DeviceRequester,
    Journal,
    JournalSync,
    audit_outcomes,
    verify_record,
)
from accord.protocol import subjects
from accord.protocol.digests import output_digest
from accord.protocol.messages import ReasonCode, Role, Tier, Timings, Usage
from accord.protocol.pricing import ResourceModel
from accord.runtime.requester import Requester, TaskFailed
from accord.security import verify_attestation
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, BlockingBackend, make_agent, spec, wait_registry

pytestmark = pytest.mark.asyncio


class LinkBus(MemoryBus):
    """A MemoryBus whose link can go down: publishes then fail with DisconnectedError, as NatsBus's do."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.up = True

    @property
    def is_connected(self) -> bool:
        return self.up

    def set_up(self, up: bool) -> None:
        if self.up and not up:
            self.stats.disconnects += 1
        self.up = up

    async def publish(
        self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None, reply: str | None = None
    ) -> None:
        if not self.up:
            raise DisconnectedError("link down", subject=subject)
        await super().publish(subject, data, headers=headers, reply=reply)

    async def publish_durable(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int = 2000,
    ) -> DurableAck:
        if not self.up:
            raise DisconnectedError("link down", subject=subject)
        return await super().publish_durable(subject, data, msg_id=msg_id, headers=headers, timeout_ms=timeout_ms)


class EchoBackend:
    """The device's local model in tests: answers at once, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[CompletionRequest] = []

    @property
    def name(self) -> str:
        return "local-test"

    @property
    def model(self) -> str:
        return "tiny-local"

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        self.calls.append(request)
        text = f"local answer to: {request.prompt}"
        return Completion(
            text=text, model=self.model, usage=Usage(input_tokens=5, output_tokens=7), timings=Timings(total_ms=3)
        )

    async def aclose(self) -> None:
        return None


SMALL_DEVICE = ResourceModel(model="tiny-local", tokens_per_s=100.0, context_window=2048)
"""32 output tokens at 100 tokens/s: an estimate of about 330 ms."""


class World:
    def __init__(self, tmp: Path, *, seed: int = 1, journal_mesh: bool = False) -> None:
        self.broker = MemoryBroker(seed=seed)
        self.pki = Pki(random.Random(seed))
        self.bus = LinkBus(self.broker)
        identity = self.pki.agent("device", tier=Tier.DEVICE, region="local")
        self.requester = Requester(identity, bus=self.bus, trust=self.pki.trust, rng=random.Random(seed))
        self.backend = EchoBackend()
        self.journal = Journal(tmp / "journal.jsonl")
        self.sync = JournalSync(self.bus, self.journal, identity.id, backoff_min_ms=10, idle_poll_ms=50)
        self.device = DeviceRequester(
            self.requester,
            backend=self.backend,
            journal=self.journal,
            local_model=SMALL_DEVICE,
            sync=self.sync,
            journal_mesh=journal_mesh,
            reconnect_grace_ms=50,
            rng=random.Random(seed + 100),
        )


async def test_connected_device_uses_the_mesh_and_can_journal_mesh_answers(tmp_path: Path) -> None:
    w = World(tmp_path, journal_mesh=True)
    agent = make_agent(w.pki, w.broker.bus(), AgentSpec("cloud"))
    async with anyio.create_task_group() as tg:
        await tg.start(w.requester.run)
        await tg.start(agent.run)
        await tg.start(w.sync.run)
        await wait_registry(w.requester, [agent])
        answer = await w.device.submit(spec("What is 2+2?"))
        await w.sync.wait_synced(timeout_s=5)
        report = await audit_outcomes(w.broker.bus(), w.pki.trust)
        tg.cancel_scope.cancel()
    assert (answer.offline, answer.route, answer.agent_id) == (False, AnswerRoute.MESH, agent.id)
    assert w.backend.calls == []
    assert answer.attestation.signer == agent.id
    assert answer.record_id == answer.result.id and w.journal.pending() == []
    assert [e.record.id for e in report.verified if e.record] == [answer.record_id]
    entry = report.entries[0]
    assert entry.record is not None and not entry.record.offline
    assert entry.record.outcome.agent == agent.id and entry.record.outcome.source == "mesh"


async def test_bus_down_answers_locally_with_verifiable_evidence_then_syncs_once(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(w.requester.run)
        await tg.start(w.sync.run)
        w.bus.set_up(False)
        task = spec("Capital of France?", deadline_ms=2_000)
        answer = await w.device.submit(task)
        assert len(w.journal.pending()) == 1  # journaled before submit returned; not synced while down
        await anyio.sleep(0.1)
        assert len(w.journal.pending()) == 1 and w.sync.stats.synced == 0
        w.bus.set_up(True)
        await w.sync.wait_synced(timeout_s=5)
        state = await w.bus.stream_state("ACCORD_OUTCOMES")
        report = await audit_outcomes(w.broker.bus(), w.pki.trust)
        tg.cancel_scope.cancel()
    me = w.requester.id
    assert (answer.offline, answer.route, answer.agent_id, answer.price_micros) == (
        True,
        AnswerRoute.BUS_DOWN,
        me,
        0,
    )
    assert answer.answer == "local answer to: Capital of France?"
    assert answer.result.ts <= task.constraints.deadline_ns
    # the local model got the device's system prompt before the user's turn
    assert [m.role for m in w.backend.calls[0].messages] == [Role.SYSTEM, Role.USER]
    # the attestation is an ordinary one: `accord verify` checks it the same way
    v = verify_attestation(answer.result.attestation, w.pki.trust, time.time_ns(), output=answer.answer)
    assert v.signer == me and v.statement.requester == me and v.statement.agent == me
    assert v.statement.output_digest == output_digest(answer.answer)
    assert state.messages == 1 and w.sync.stats.synced == 1
    assert report.duplicates == [] and len(report.verified) == 1 and report.failed == []
    record = report.entries[0].record
    assert record is not None and record.offline and record.id == answer.record_id
    assert record.outcome.response == answer.answer and record.outcome.source == "offline"


async def test_link_lost_during_the_mesh_attempt_falls_back_to_local(tmp_path: Path) -> None:
    w = World(tmp_path)
    stuck = BlockingBackend()
    agent = make_agent(w.pki, w.broker.bus(), AgentSpec("cloud", backend=stuck))
    async with anyio.create_task_group() as tg:
        await tg.start(w.requester.run)
        await tg.start(agent.run)
        await wait_registry(w.requester, [agent])

        async def cut_link_once_awarded() -> None:
            await stuck.started.wait()
            w.bus.set_up(False)

        tg.start_soon(cut_link_once_awarded)
        answer = await w.device.submit(spec("Slow question", deadline_ms=5_000))
        tg.cancel_scope.cancel()
    assert (answer.offline, answer.route) == (True, AnswerRoute.LINK_LOST)
    assert stuck.calls == 1 and len(w.backend.calls) == 1
    assert [r.id for r in w.journal.pending()] == [answer.record_id]


async def test_no_time_for_the_local_model_fails_with_deadline_and_journals_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(w.requester.run)
        w.bus.set_up(False)
        with pytest.raises(TaskFailed) as info:
            await w.device.submit(spec(deadline_ms=200))  # the local estimate is ~330 ms
        tg.cancel_scope.cancel()
    assert info.value.reason is ReasonCode.DEADLINE_EXCEEDED and "local model needs" in info.value.detail
    assert w.backend.calls == [] and len(w.journal) == 0


async def test_connected_mesh_failure_is_raised_not_answered_locally(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(w.requester.run)
        with pytest.raises(TaskFailed) as info:  # link up, nobody bids: the market's answer stands
            await w.device.submit(spec(deadline_ms=3_000))
        tg.cancel_scope.cancel()
    assert info.value.reason is ReasonCode.NO_BIDS
    assert w.backend.calls == [] and len(w.journal) == 0


async def test_a_device_missing_from_its_own_trust_store_is_refused(tmp_path: Path) -> None:
    w = World(tmp_path)
    stranger = Pki(random.Random(99)).agent("stranger")
    requester = Requester(stranger, bus=w.bus, trust=w.pki.trust)
    with pytest.raises(LocalProtocolError, match="certified in its own trust store"):
        DeviceRequester(requester, backend=EchoBackend(), journal=w.journal)


async def test_tampered_or_foreign_records_fail_the_audit(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(w.requester.run)
        w.bus.set_up(False)
        answer = await w.device.submit(spec("Q", deadline_ms=2_000))
        tg.cancel_scope.cancel()
    (record,) = w.journal.records()
    now = time.time_ns()
    assert verify_record(record, w.pki.trust, now).signer == w.requester.id
    edited = msgspec.structs.replace(
        record, outcome=msgspec.structs.replace(record.outcome, response=answer.answer + "!")
    )
    with pytest.raises(AuditError, match="response"):
        verify_record(edited, w.pki.trust, now)
    swapped = msgspec.structs.replace(record, frames=[record.frames[0], record.frames[0], record.frames[2]])
    with pytest.raises(AuditError) as info:
        verify_record(swapped, w.pki.trust, now)
    assert info.value.reason == "inconsistent"
    other_trust = Pki(random.Random(5)).trust  # an auditor who does not trust this device
    with pytest.raises(AuditError) as info:
        verify_record(record, other_trust, now)
    assert info.value.reason == "unknown_key"
    # a record published on another device's subject is reported, not trusted
    bus = w.broker.bus()
    await bus.ensure_stream("ACCORD_OUTCOMES", [subjects.log_filter("outcome")])
    other = w.pki.agent("other")
    from accord.offline import encode_record

    await bus.publish_durable(subjects.log("outcome", other.id), encode_record(record), msg_id=record.id)
    report = await audit_outcomes(bus, w.pki.trust)
    assert len(report.failed) == 1 and report.failed[0].error is not None
    assert "record of" in str(report.failed[0].error)


async def test_no_bids_after_the_link_dropped_is_answered_locally(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.device.reconnect_grace_ms = 60_000  # the watcher never gives up first: the market's no_bids decides
    async with anyio.create_task_group() as tg:
        await tg.start(w.requester.run)

        async def drop_link() -> None:
            await anyio.lowlevel.checkpoint()  # runs once submit() checked the link and started the attempt
            w.bus.set_up(False)

        tg.start_soon(drop_link)
        answer = await w.device.submit(spec("Anyone there?", deadline_ms=5_000))
        tg.cancel_scope.cancel()
    assert (answer.offline, answer.route) == (True, AnswerRoute.UNREACHABLE)
    assert w.requester.stats.failed["no_bids"] == 1 and len(w.backend.calls) == 1


async def test_accord_verify_accepts_the_offline_attestation_and_frames(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from accord.cli import app

    w = World(tmp_path)
    async with anyio.create_task_group() as tg:
        await tg.start(w.requester.run)
        w.bus.set_up(False)
        answer = await w.device.submit(spec("Q?", deadline_ms=2_000))
        tg.cancel_scope.cancel()
    (record,) = w.journal.records()
    trust = tmp_path / "trust.json"
    w.pki.trust.save(trust)
    (tmp_path / "att.json").write_bytes(record.attestation)
    (tmp_path / "out.txt").write_text(answer.answer)
    (tmp_path / "result.frame").write_bytes(record.frames[2])
    runner = CliRunner()
    ok = runner.invoke(
        app, ["verify", str(tmp_path / "att.json"), "--trust", str(trust), "--output", str(tmp_path / "out.txt")]
    )
    assert ok.exit_code == 0, ok.stderr
    assert "attestation verified" in ok.stdout and "tiny-local" in ok.stdout and "matches" in ok.stdout
    frame = runner.invoke(app, ["verify", str(tmp_path / "result.frame"), "--trust", str(trust)])
    assert frame.exit_code == 0 and "Result frame verified" in frame.stdout
    (tmp_path / "out.txt").write_text(answer.answer + " (edited)")
    bad = runner.invoke(
        app, ["verify", str(tmp_path / "att.json"), "--trust", str(trust), "--output", str(tmp_path / "out.txt")]
    )
    assert bad.exit_code == 1
