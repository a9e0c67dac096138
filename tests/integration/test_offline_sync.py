"""A device on a real nats-server with JetStream: mesh answer, broker down -> local answer, broker back -> sync.

The journal record of the offline answer lands in the stream exactly once, also when a second process replays
the sync from a copy of the journal taken before the ack (a lost ack / crash between ack and mark), and every
stored record's attestation verifies for an auditor.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import anyio
import pytest

from accord.backends.base import Completion, CompletionRequest, DeltaCallback
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.offline import (
    DEFAULT_STREAM,
    AnswerRoute,
    DeviceRequester,
    Journal,
    JournalSync,
    audit_outcomes,
)
from accord.protocol.messages import Tier, Timings, Usage
from accord.protocol.pricing import ResourceModel
from accord.runtime.requester import Requester
from accord.security import verify_attestation
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, make_agent, spec, wait_for, wait_registry


class EchoBackend:
    """The device's local model: answers at once."""

    calls = 0

    @property
    def name(self) -> str:
        return "local-test"

    @property
    def model(self) -> str:
        return "tiny-local"

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        self.calls += 1
        return Completion(
            text=f"local: {request.prompt}", model=self.model, usage=Usage(output_tokens=3), timings=Timings()
        )

    async def aclose(self) -> None:
        return None


def _bus(url: str) -> NatsBus:
    return NatsBus(url, reconnect_wait_ms=50, connect_timeout_ms=1000)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_offline_answer_syncs_exactly_once_after_the_broker_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.monotonic()
    server = NatsServer(name="accord-offline")
    await server.astart()
    pki = Pki(random.Random(11))
    device_id = pki.agent("device", tier=Tier.DEVICE, region="local")
    journal_path = tmp_path / "device-journal.jsonl"
    try:
        async with _bus(server.url) as agent_bus, _bus(server.url) as device_bus:
            agent = make_agent(pki, agent_bus, AgentSpec("cloud"))
            requester = Requester(device_id, bus=device_bus, trust=pki.trust, rng=random.Random(1))
            journal = Journal(journal_path)
            backend = EchoBackend()
            sync = JournalSync(device_bus, journal, device_id.id, backoff_min_ms=50, idle_poll_ms=100)
            device = DeviceRequester(
                requester,
                backend=backend,
                journal=journal,
                local_model=ResourceModel(model="tiny-local", tokens_per_s=100.0, context_window=2048),
                sync=sync,
                journal_mesh=True,
                rng=random.Random(2),
            )
            async with anyio.create_task_group() as tg:
                await tg.start(requester.run)
                await tg.start(agent.run)
                await tg.start(sync.run)
                await wait_registry(requester, [agent])

                # 1. connected: the mesh answers (and the mesh answer's record syncs, creating the stream)
                mesh = await device.submit(spec("What is 2+2?", deadline_ms=5_000))
                await sync.wait_synced(timeout_s=10)

                # 2. the broker goes away: the device answers locally within the deadline
                await server.astop()
                await wait_for(lambda: not device_bus.is_connected, timeout_s=10, what="disconnect")
                offline_task = spec("Capital of France?", deadline_ms=3_000)
                offline = await device.submit(offline_task)
                assert [r.id for r in journal.pending()] == [offline.record_id]
                before_ack = tmp_path / "journal-before-ack.jsonl"
                shutil.copy2(journal_path, before_ack)  # what a process that lost the ack would reopen

                # 3. the broker returns with its store: the record syncs
                await server.astart()
                await sync.wait_synced(timeout_s=15)
                tg.cancel_scope.cancel()

            state = await device_bus.stream_state(DEFAULT_STREAM)

            # 4. a second sync of the same record (ack lost, or a crash before the mark) stores nothing new
            replay = Journal(before_ack)
            assert [r.id for r in replay.pending()] == [offline.record_id]
            replay_sync = JournalSync(device_bus, replay, device_id.id)
            assert await replay_sync.sync_once() == 1
            assert replay_sync.stats.duplicates == 1 and replay.pending() == []
            replay.close()
            after = await device_bus.stream_state(DEFAULT_STREAM)

            report = await audit_outcomes(agent_bus, pki.trust)
            journal.close()
    finally:
        await server.acleanup()
    wall_s = time.monotonic() - t0

    with capsys.disabled():
        print(
            f"\n[offline sync] mesh={mesh.route} offline={offline.route} stream_messages={state.messages}->"
            f"{after.messages} sync={sync.stats} audit_verified={len(report.verified)} "
            f"duplicates={report.duplicates} wall_s={wall_s:.1f}"
        )
    assert (mesh.offline, mesh.route, mesh.agent_id) == (False, AnswerRoute.MESH, agent.id)
    assert (offline.offline, offline.route, offline.agent_id) == (True, AnswerRoute.BUS_DOWN, device_id.id)
    assert offline.result.ts <= offline_task.constraints.deadline_ns and backend.calls == 1
    assert state.messages == after.messages == 2  # the mesh record and the offline record, once each
    assert report.duplicates == [] and report.failed == []
    by_id = {e.record.id: e for e in report.verified if e.record is not None}
    assert set(by_id) == {mesh.record_id, offline.record_id}
    stored = by_id[offline.record_id]
    assert stored.record is not None and stored.record.offline and stored.verified is not None
    assert stored.verified.signer == device_id.id and stored.verified.statement.requester == device_id.id
    # the attestation alone verifies as any mesh attestation does (`accord verify FILE --output OUT`)
    verified = verify_attestation(stored.record.attestation, pki.trust, time.time_ns(), output=offline.answer)
    assert verified.output_checked and verified.statement.model == "tiny-local"


@pytest.mark.integration
@pytest.mark.asyncio
async def test_broker_lost_while_an_agent_works_the_device_answers_locally(tmp_path: Path) -> None:
    from tests.support.runtime_kit import BlockingBackend

    server = NatsServer(name="accord-offline-mid")
    await server.astart()
    pki = Pki(random.Random(12))
    device_id = pki.agent("device", tier=Tier.DEVICE, region="local")
    stuck = BlockingBackend()
    try:
        async with _bus(server.url) as agent_bus, _bus(server.url) as device_bus:
            agent = make_agent(pki, agent_bus, AgentSpec("cloud", backend=stuck))
            requester = Requester(device_id, bus=device_bus, trust=pki.trust, rng=random.Random(3))
            journal = Journal(tmp_path / "journal.jsonl")
            sync = JournalSync(device_bus, journal, device_id.id, backoff_min_ms=50, idle_poll_ms=100)
            device = DeviceRequester(
                requester, backend=EchoBackend(), journal=journal, sync=sync, reconnect_grace_ms=100
            )
            async with anyio.create_task_group() as tg:
                await tg.start(requester.run)
                await tg.start(agent.run)
                await tg.start(sync.run)
                await wait_registry(requester, [agent])

                async def stop_broker_once_awarded() -> None:
                    await stuck.started.wait()
                    await server.astop()

                tg.start_soon(stop_broker_once_awarded)
                answer = await device.submit(spec("Slow one", deadline_ms=5_000))
                assert [r.id for r in journal.pending()] == [answer.record_id]
                await server.astart()
                await sync.wait_synced(timeout_s=15)
                tg.cancel_scope.cancel()
            report = await audit_outcomes(device_bus, pki.trust)
            journal.close()
    finally:
        await server.acleanup()
    assert (answer.offline, answer.route) == (True, AnswerRoute.LINK_LOST)
    assert stuck.calls == 1
    assert [e.record.id for e in report.verified if e.record is not None] == [answer.record_id]
    assert report.failed == [] and report.duplicates == []
