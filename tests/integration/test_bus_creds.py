"""Agents and requesters on a nats-server with decentralised auth (an operator, an account and JWT users),
each connecting with its own `.creds` file: the user key is the party's own key and the user JWT carries the
party's permissions of spec 11.6. The server admits only users its operator's accounts issued, and enforces each
user's permissions: nobody reads another party's inbox or publishes as it. A mesh file names an agent's own
creds file (`[[agents]] creds_file`) for such a server (`[bus] url`).
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import nkeys
import pytest

from accord.bus import PermissionDeniedError
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.mesh.config import parse_mesh, resolve_paths
from accord.mesh.discovery import await_candidates
from accord.mesh.run import run_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.protocol import subjects
from accord.protocol.messages import Tier
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester
from accord.security import Identity, certified_permissions, inbox_prefix
from accord.security.testing import Pki
from tests.support.cli import ACCORD, cli_env
from tests.support.natsjwt import DecentralisedAuth, Operator, new_seed, write_creds
from tests.support.runtime_kit import make_profile, sim_backend, spec, wait_registry

pytestmark = [pytest.mark.integration]

PKI = Pki(random.Random(15))
AGENT = Identity.generate()
AGENT_CERT = PKI.certify(AGENT, name="edge-creds", tier=Tier.EDGE, region="local", residency=("eu",))
ME = Identity.generate()
ME_CERT = PKI.certify(ME, name="asker", residency=("eu",))


@pytest.fixture(scope="module")
def auth() -> DecentralisedAuth:
    return DecentralisedAuth()  # users signed by the account's signing key (issuer_account names the account)


@pytest.fixture(scope="module")
def jwt_server(auth: DecentralisedAuth) -> Iterator[NatsServer]:
    server = NatsServer(name="accord-jwt", jetstream=False, extra=auth.server_config()).start()
    try:
        yield server
    finally:
        server.cleanup()


def _creds(auth: DecentralisedAuth, path: Path, identity: Identity, permissions: dict[str, object]) -> Path:
    """A creds file whose user is ``identity``'s own key, with ``permissions`` in its JWT."""
    return auth.account.creds(path, user_seed=identity.seed, name=path.stem, permissions=permissions)


def _cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ACCORD, *argv], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=120, check=False
    )


def _bus(server: NatsServer, creds: Path, identity: Identity, name: str) -> NatsBus:
    return NatsBus(server.url, name=name, credentials=creds, inbox_prefix=inbox_prefix(identity.id))


def test_the_creds_files_are_owner_only_and_decorated(auth: DecentralisedAuth, tmp_path: Path) -> None:
    creds = _creds(auth, tmp_path / "edge.creds", AGENT, certified_permissions(AGENT_CERT))
    assert creds.stat().st_mode & 0o777 == 0o600
    text = creds.read_text(encoding="ascii")
    assert text.startswith("-----BEGIN NATS USER JWT-----\neyJ") and "------END NATS USER JWT------" in text
    assert f"-----BEGIN USER NKEY SEED-----\n{AGENT.seed}\n------END USER NKEY SEED------" in text


@pytest.mark.asyncio
async def test_an_agent_and_a_requester_each_on_its_own_creds_complete_a_task(
    auth: DecentralisedAuth, jwt_server: NatsServer, tmp_path: Path
) -> None:
    agent_creds = _creds(auth, tmp_path / "edge.creds", AGENT, certified_permissions(AGENT_CERT))
    my_creds = _creds(auth, tmp_path / "asker.creds", ME, certified_permissions(ME_CERT))
    profile = make_profile("edge-creds", tier=Tier.EDGE, residency=("eu",))
    async with (
        _bus(jwt_server, agent_creds, AGENT, "edge-creds") as agent_bus,
        _bus(jwt_server, my_creds, ME, "asker") as my_bus,
        anyio.create_task_group() as tg,
    ):
        # Each user's key is its party's key and its JWT the 11.6 template: the subject names the publisher.
        agent = Agent(
            AGENT, profile, {"sim-small": sim_backend()}, bus=agent_bus, trust=PKI.trust, authenticated_bus=True
        )
        requester = Requester(ME, bus=my_bus, trust=PKI.trust, rng=random.Random(1), authenticated_bus=True)
        await tg.start(agent.run)
        await tg.start(requester.run)
        await wait_registry(requester, [agent])
        outcome = await requester.submit(spec("What is 2+2?", deadline_ms=10_000))
        await agent_bus.flush()
        await my_bus.flush()
        tg.cancel_scope.cancel()
    assert outcome.agent_id == AGENT.id and outcome.answer
    assert outcome.attestation.signer == AGENT.id and outcome.attestation.output_checked
    assert agent_bus.stats.permission_denied == 0 and my_bus.stats.permission_denied == 0
    connections = {c.get("name"): c for c in jwt_server.varz("connz?auth=true&state=closed")["connections"]}
    assert connections["edge-creds"]["authorized_user"] == AGENT.id  # the server saw the agent's own key
    assert connections["asker"]["authorized_user"] == ME.id


@pytest.mark.asyncio
async def test_a_connection_without_creds_is_refused(auth: DecentralisedAuth, jwt_server: NatsServer) -> None:
    with pytest.raises(PermissionDeniedError, match="authorization failed"):
        await NatsBus(jwt_server.url, connect_attempts=1).connect()
    # The user's key alone is not enough either: without the JWT its account issued, nobody vouches for it.
    with pytest.raises(PermissionDeniedError, match="authorization failed"):
        await NatsBus(jwt_server.url, nkey_seed=AGENT.seed, connect_attempts=1).connect()


def _unknown_operator(auth: DecentralisedAuth, path: Path) -> Path:
    return Operator("stranger").account("ACCORD").creds(path)


def _unknown_account(auth: DecentralisedAuth, path: Path) -> Path:
    return auth.operator.account("NOT-PRELOADED").creds(path)  # our operator signed it; the server never saw it


def _forged_issuer(auth: DecentralisedAuth, path: Path) -> Path:
    return auth.account.creds(path, signer=new_seed(nkeys.PREFIX_BYTE_ACCOUNT))  # claims our account


def _expired(auth: DecentralisedAuth, path: Path) -> Path:
    return auth.account.creds(path, expires=int(time.time()) - 60)


def _stolen_jwt(auth: DecentralisedAuth, path: Path) -> Path:
    """A genuine user JWT with some other user's seed: the seed cannot sign the server's nonce for the JWT."""
    genuine = auth.account.user_jwt(AGENT.id, name="edge-creds")
    return write_creds(path, genuine, Identity.generate().seed)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "make",
    [_unknown_operator, _unknown_account, _forged_issuer, _expired, _stolen_jwt],
    ids=["unknown_operator", "unknown_account", "forged_issuer", "expired", "stolen_jwt"],
)
async def test_creds_the_server_cannot_trust_are_refused(
    auth: DecentralisedAuth, jwt_server: NatsServer, tmp_path: Path, make: object
) -> None:
    creds = make(auth, tmp_path / "user.creds")  # type: ignore[operator]
    with pytest.raises(PermissionDeniedError, match="authorization failed"):
        await NatsBus(jwt_server.url, credentials=creds, connect_attempts=1).connect()


@pytest.mark.asyncio
async def test_a_user_jwt_reads_only_its_own_inbox_and_publishes_only_as_itself(
    auth: DecentralisedAuth, jwt_server: NatsServer, tmp_path: Path
) -> None:
    my_creds = _creds(auth, tmp_path / "asker.creds", ME, certified_permissions(ME_CERT))
    async with _bus(jwt_server, my_creds, ME, "curious") as bus:
        with pytest.raises(PermissionDeniedError):  # the agent's inbox carries prompts: not ours to read
            await bus.subscribe(subjects.direct_filter(AGENT.id))
        with pytest.raises(PermissionDeniedError):  # nor the replies under its inbox prefix
            await bus.subscribe(f"{inbox_prefix(AGENT.id)}.>")
        forged = subjects.direct(ME.id, AGENT.id)  # a frame to ourselves "from" the agent
        await bus.publish(forged, b"\x00")
        with pytest.raises(PermissionDeniedError, match="publish refused") as denied:
            await bus.flush()
        assert (denied.value.subject or "").lower() == forged.lower()
        mine = await bus.subscribe(subjects.direct_filter(ME.id))  # its own inbox is fine
        await mine.unsubscribe()
    assert bus.stats.permission_denied >= 1


MESH = """
[[agents]]
name = "edge"
tier = "edge"
residency = ["eu"]
creds_file = "edge.creds"
backend = { kind = "simulated", model = "sim-small", realtime = false }
"""


@pytest.mark.asyncio
async def test_a_mesh_agent_connects_with_its_own_creds_file(
    auth: DecentralisedAuth, jwt_server: NatsServer, tmp_path: Path
) -> None:
    text = f'[bus]\nurl = "{jwt_server.url}"\nauthenticated = true\n{MESH}'
    (tmp_path / "mesh.toml").write_text(text, encoding="utf-8")  # for `accord ask` below
    config = resolve_paths(parse_mesh(text), tmp_path)
    now = time.time_ns()
    # What an operator does before `accord up`: issue each agent's user JWT for its certified key and permissions.
    trust, identities = load_trust(config, MeshState(tmp_path / ".accord"))
    edge, me = identities["edge"], identities[REQUESTER_NAME]
    _creds(auth, tmp_path / "edge.creds", edge, certified_permissions(trust.check(edge.id, now)))
    my_creds = _creds(auth, tmp_path / "me.creds", me, certified_permissions(trust.check(me.id, now)))
    async with run_mesh(config) as mesh:
        (agent,) = mesh.agents
        assert agent.id == edge.id and mesh.authenticated and mesh.server is None
        async with _bus(jwt_server, my_creds, me, "mesh-asker") as bus, anyio.create_task_group() as tg:
            requester = Requester(me, bus=bus, trust=mesh.trust, rng=random.Random(2), authenticated_bus=True)
            await tg.start(requester.run)
            await await_candidates(requester, spec(), timeout_ms=10_000)
            outcome = await requester.submit(spec("What is 3+3?", deadline_ms=10_000))
            tg.cancel_scope.cancel()
        # the CLI as the same requester, on its own creds file (`--creds`); without it the server refuses
        ask = ["ask", "What is 4+4?", "--json", "--mesh", "mesh.toml", "--wait-ms", "10000"]
        refused = await anyio.to_thread.run_sync(lambda: _cli(ask, tmp_path))
        answered = await anyio.to_thread.run_sync(lambda: _cli([*ask, "--creds", str(my_creds)], tmp_path))
    assert outcome.agent_id == edge.id and outcome.attestation.output_checked
    assert refused.returncode == 1 and "authorization failed" in refused.stderr, refused.stderr
    assert answered.returncode == 0, answered.stdout
    assert json.loads(answered.stdout)["agent"] == edge.id
    connections = {c.get("name"): c for c in jwt_server.varz("connz?auth=true&state=closed")["connections"]}
    assert connections["edge"]["authorized_user"] == edge.id  # the agent connected as its creds file's user
