"""A hostile client against the default mesh (`accord up`'s own nats-server), on a real nats-server.

D1: nobody connects without a certified key; a certified key reads only its own inbox and publishes only as
itself. D3: a revocation sticks across mesh commands, and a revoked key's in-flight work stops within a
heartbeat. D10: a keyless re-publish of a verified card (forged seq, ts, load) cannot lock the agent out.
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

import anyio
import msgspec
import pytest
from typer.testing import CliRunner

from accord.bus.base import PermissionDeniedError
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.cli import app
from accord.mesh.config import parse_mesh, resolve_paths
from accord.mesh.discovery import await_candidates
from accord.mesh.run import run_mesh
from accord.mesh.state import MeshState, load_trust
from accord.protocol import subjects
from accord.protocol.codec import encode
from accord.protocol.messages import Advertise, Tier
from accord.runtime.requester import Requester
from accord.security import Identity, peek
from accord.security.envelope import PAYLOAD_TYPE_FRAME, decode_envelope, encode_envelope
from tests.support.runtime_kit import spec, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

MESH = """
[[agents]]
name = "worker"
tier = "edge"
backend = { kind = "simulated", model = "sim-small", realtime = true, tokens_per_s = 4.0, output_tokens = 400 }
"""
"""One agent whose answers take long (about 100 s of simulated generation): work stays in flight."""

FAST = """
[[agents]]
name = "worker"
tier = "edge"
backend = { kind = "simulated", model = "sim-small", realtime = false }
"""


def _revoke(state: MeshState, key: str) -> None:
    operator_key = str(state.directory / "keys" / "operator.seed")
    argv = ["keys", "revoke", "--operator-key", operator_key, "--trust", str(state.trust_file), "--agent", key]
    revoked = CliRunner().invoke(app, argv)
    assert revoked.exit_code == 0, revoked.output


def _config(tmp_path: Path, text: str = MESH) -> object:
    return resolve_paths(parse_mesh(text), tmp_path)


async def test_d1_a_keyless_client_cannot_connect_to_the_default_mesh(tmp_path: Path) -> None:
    async with run_mesh(_config(tmp_path)) as mesh:  # type: ignore[arg-type]
        assert mesh.authenticated and mesh.server is not None
        with pytest.raises(PermissionDeniedError, match="authorization failed"):
            async with NatsBus(mesh.url, name="keyless", max_reconnect_attempts=0):
                pass
        stranger = Identity.generate()  # a key, but not one the mesh certified
        with pytest.raises(PermissionDeniedError, match="authorization failed"):
            async with mesh.connect(stranger, name="stranger"):
                pass


async def test_d1_a_certified_key_reads_only_its_own_inbox_and_publishes_only_as_itself(tmp_path: Path) -> None:
    async with run_mesh(_config(tmp_path)) as mesh:  # type: ignore[arg-type]
        (agent,) = mesh.agents
        me = mesh.requester_identity()
        async with mesh.connect(me, name="curious") as bus:
            with pytest.raises(PermissionDeniedError):  # the agent's inbox carries prompts: not ours to read
                await bus.subscribe(subjects.direct_filter(agent.id))
            with pytest.raises(PermissionDeniedError):  # nor the replies under its inbox prefix
                await bus.subscribe(f"_INBOX.{agent.id}.>")
            forged_card = subjects.advertise(Tier.EDGE, "local", agent.id)
            await bus.publish(forged_card, b"\x00")
            with pytest.raises(PermissionDeniedError, match="publish refused") as denied:  # publishing as it
                await bus.flush()
            assert (denied.value.subject or "").lower() == forged_card.lower()
            mine = await bus.subscribe(subjects.direct_filter(me.id))  # its own inbox is fine
            await mine.unsubscribe()


async def test_d3_a_revocation_survives_every_later_mesh_command(tmp_path: Path) -> None:
    config = _config(tmp_path)
    state = MeshState(tmp_path / ".accord")
    trust, identities = load_trust(config, state)  # type: ignore[arg-type]
    worker = identities["worker"].id
    _revoke(state, worker)
    for _ in range(2):  # what `accord ask`, `accord up`, `accord serve` do first
        again, _ = load_trust(config, state)  # type: ignore[arg-type]
        assert again.is_revoked(worker)
    changed = _config(tmp_path, MESH.replace('tier = "edge"', 'tier = "cloud"'))  # certificates issued afresh
    again, _ = load_trust(changed, state)  # type: ignore[arg-type]
    assert again.is_revoked(worker) and again.is_revoked(worker)
    with pytest.raises(Exception, match="worker: key revoked"):
        async with run_mesh(config):  # type: ignore[arg-type]
            pass
    assert trust.is_revoked(worker) is False  # the store loaded before the revocation did not know it


async def test_d3_a_revoked_requesters_in_flight_work_stops_within_a_heartbeat(tmp_path: Path) -> None:
    state = MeshState(tmp_path / ".accord")
    async with run_mesh(_config(tmp_path)) as mesh, anyio.create_task_group() as tg:  # type: ignore[arg-type]
        (agent,) = mesh.agents
        me = mesh.requester_identity()
        async with mesh.connect(me, name="doomed") as bus:
            requester = Requester(me, bus=bus, trust=mesh.trust, rng=random.Random(3), authenticated_bus=True)
            await tg.start(requester.run)
            long = spec("a long answer", deadline_ms=120_000, max_output_tokens=400)
            await await_candidates(requester, long, timeout_ms=10_000)

            async def ask() -> None:
                with contextlib.suppress(Exception):  # its connection is closed under it: any ending will do
                    await requester.submit(long)

            tg.start_soon(ask)
            await wait_for(lambda: agent.stats.executed > 0, timeout_s=30, what="work in flight")
            revoked_at = time.monotonic()
            _revoke(state, me.id)
            # the mesh follows the trust file; the agent re-checks the peers it works for
            await wait_for(lambda: agent.stats.aborted > 0, timeout_s=30, what="the revoked work stopped")
            stopped_after_s = time.monotonic() - revoked_at
            tg.cancel_scope.cancel()
    heartbeat_s = agent.profile.ttl_ms / 3 / 1000
    print(f"[revocation] in-flight work stopped {stopped_after_s:.2f} s after it (heartbeat {heartbeat_s} s)")
    assert agent.stats.results == 0  # nothing was answered to the revoked key
    assert mesh.trust.is_revoked(me.id)


async def test_d10_a_forged_heartbeat_cannot_lock_out_the_genuine_agent(tmp_path: Path) -> None:
    """On a bus that does not authenticate publishers (an operator's own server), a keyless client re-publishes
    the agent's card with the slots full and a newer seq and ts: the requester keeps the genuine card."""
    async with NatsServer() as server:
        text = FAST + f'\n[bus]\nurl = "{server.url}"\n'
        async with run_mesh(_config(tmp_path, text)) as mesh, anyio.create_task_group() as tg:  # type: ignore[arg-type]
            assert not mesh.authenticated
            (agent,) = mesh.agents
            async with (
                NatsBus(server.url, name="asker") as asking,
                NatsBus(server.url, name="forger") as forger,
            ):
                requester = Requester(mesh.requester_identity(), bus=asking, trust=mesh.trust)
                await tg.start(requester.run)
                await await_candidates(requester, spec(), timeout_ms=10_000)
                cards = await forger.subscribe(subjects.advertise_filter())
                frame = (await cards.next(timeout_ms=15_000)).data  # a genuine heartbeat
                card = peek(frame, trust=None).message
                assert isinstance(card, Advertise) and card.sender == agent.id
                genuine = decode_envelope(frame, PAYLOAD_TYPE_FRAME)
                subject = subjects.advertise(card.tier, card.region, agent.id)
                for i in range(1, 200):
                    full = msgspec.structs.replace(
                        card, seq=card.seq + 10_000 + i, ts=card.ts + i * 1_000_000, load=card.slots
                    )  # the genuine signature over a changed card: only a peek would take it
                    forged = msgspec.structs.replace(genuine, payload=encode(full))
                    await forger.publish(subject, encode_envelope(forged))
                    await forger.publish(subject, frame)  # and the genuine one, replayed
                await forger.flush()
                await anyio.sleep(0.5)
                # locked out, the agent would stay "full" until its card expired: NoAgentError here
                await await_candidates(requester, spec(), timeout_ms=2_000)
                entry = requester.registry.get(agent.id, now=time.time_ns())
                tg.cancel_scope.cancel()
    assert entry is not None and entry.advert.load < entry.advert.slots and entry.advert.seq < card.seq + 10_000
