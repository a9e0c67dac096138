"""An agent of a mesh file may name its own NATS `.creds` file (`[[agents]] creds_file`), for a server with
decentralised auth where every agent is its own JWT user: the file is a key file (owner-only, like `[bus]
creds_file`), it belongs to one key (one replica), and it needs a server that knows JWT users (`[bus] url`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from accord.cli import app
from accord.mesh.config import MeshConfig, MeshConfigError, load_mesh, parse_mesh, resolve_paths
from accord.mesh.run import agent_creds, run_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.security import Identity, KeyFileError, Reason, creds_user_key
from tests.support.cli import ONE_AGENT
from tests.support.natsjwt import DecentralisedAuth, write_creds

URL = 'url = "nats://127.0.0.1:4222"\n'


def _mesh(tmp_path: Path, *, bus: str = URL, agent: str = 'creds_file = "a.creds"\n') -> MeshConfig:
    return resolve_paths(parse_mesh(f"[bus]\n{bus}\n{ONE_AGENT}{agent}"), tmp_path)


def _creds(path: Path, mode: int = 0o600, *, key: Identity | None = None) -> Path:
    DecentralisedAuth().account.creds(path, user_seed=(key or Identity.generate()).seed)
    path.chmod(mode)
    return path


def test_an_agents_creds_file_is_taken_relative_to_the_mesh_file(tmp_path: Path) -> None:
    _creds(tmp_path / "a.creds")
    config = _mesh(tmp_path)
    assert config.agents[0].creds_file == str(tmp_path / "a.creds")
    assert agent_creds(config) == {"a": str(tmp_path / "a.creds")}
    assert agent_creds(_mesh(tmp_path, agent="")) == {}  # no agent names one: nothing to check


def test_a_creds_file_belongs_to_one_replica() -> None:
    with pytest.raises(MeshConfigError, match=r"agent 'a': a creds file is one NATS user.*\.creds_file"):
        parse_mesh(f'{ONE_AGENT}count = 2\ncreds_file = "a.creds"\n')


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_an_agents_creds_file_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    _creds(tmp_path / "a.creds", mode)
    with pytest.raises(MeshConfigError) as info:
        agent_creds(_mesh(tmp_path))
    cause = info.value.__cause__
    assert isinstance(cause, KeyFileError) and cause.reason is Reason.INSECURE_KEY_FILE
    assert "agent 'a': creds_file" in str(info.value) and f"{mode:04o}" in str(info.value)
    assert "chmod 600" in str(info.value)


def test_a_missing_creds_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MeshConfigError, match="agent 'a': creds_file") as info:
        agent_creds(_mesh(tmp_path))
    cause = info.value.__cause__
    assert isinstance(cause, KeyFileError) and cause.reason is Reason.KEY_FILE_MISSING


def test_only_the_agents_that_run_are_checked(tmp_path: Path) -> None:
    _creds(tmp_path / "a.creds", 0o644)
    assert agent_creds(_mesh(tmp_path), ["b"]) == {}


def test_a_creds_file_needs_a_server_with_decentralised_auth(tmp_path: Path) -> None:
    _creds(tmp_path / "a.creds")
    config = _mesh(tmp_path, bus="")
    with pytest.raises(MeshConfigError, match=r"agent 'a': creds_file needs \[bus\] url"):
        agent_creds(config)
    assert agent_creds(config, url="nats://127.0.0.1:4222") == {"a": str(tmp_path / "a.creds")}  # --nats


@pytest.mark.parametrize(
    ("bus", "mode", "expected"),
    [(URL, 0o644, "insecure_key_file"), ("", 0o600, "creds_file needs [bus] url")],
    ids=["group_readable", "embedded_server"],
)
def test_accord_up_exits_2_before_starting_anything(tmp_path: Path, bus: str, mode: int, expected: str) -> None:
    _creds(tmp_path / "a.creds", mode)
    (tmp_path / "mesh.toml").write_text(f'[bus]\n{bus}\n{ONE_AGENT}creds_file = "a.creds"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["up", str(tmp_path / "mesh.toml"), "--seconds", "0.1"])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()), result.output
    assert not (tmp_path / ".accord").exists()  # no key made, no lock taken, no server started


def test_a_creds_file_connects_as_the_key_of_its_seed(tmp_path: Path) -> None:
    key = Identity.generate()
    assert creds_user_key(_creds(tmp_path / "a.creds", key=key)) == key.id


def test_a_creds_file_whose_jwt_names_another_user_is_refused(tmp_path: Path) -> None:
    seed, other = Identity.generate(), Identity.generate()
    token = DecentralisedAuth().account.user_jwt(other.id)
    write_creds(tmp_path / "a.creds", token, seed.seed)
    with pytest.raises(KeyFileError, match=f"its user JWT is for '{other.id}', its seed for {seed.id}") as info:
        creds_user_key(tmp_path / "a.creds")
    assert info.value.reason is Reason.BAD_KEY_FILE


@pytest.mark.parametrize(
    "text",
    [
        "SUAM3ZFKZFKVIJXAWC3V5Z6ADF3TZE5WW4ETWDWQQ3XQ6QWMYT2XEZ3VWY\n",  # a bare seed: no JWT
        "-----BEGIN NATS USER JWT-----\nnot.a.jwt\n------END NATS USER JWT------\n",  # no seed
        "-----BEGIN NATS USER JWT-----\na.%%%.c\n------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\nSUAM3ZFKZFKVIJXAWC3V5Z6ADF3TZE5WW4ETWDWQQ3XQ6QWMYT2XEZ3VWY\n"
        "------END USER NKEY SEED------\n",  # a JWT that does not decode
    ],
    ids=["seed_only", "jwt_only", "bad_jwt"],
)
def test_a_file_that_is_not_one_users_creds_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "a.creds"
    path.write_text(text, encoding="ascii")
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        creds_user_key(path)
    assert info.value.reason is Reason.BAD_KEY_FILE


@pytest.mark.asyncio
async def test_a_mesh_agent_whose_creds_connect_as_another_key_does_not_start(tmp_path: Path) -> None:
    config = _mesh(tmp_path)
    _creds(tmp_path / "a.creds")  # a user key of its own, not the agent's
    with pytest.raises(MeshConfigError, match=r"agent 'a': creds_file: .* connects as the NATS user U"):
        async with run_mesh(config):
            pytest.fail("the mesh started")
    assert config.state_dir is not None
    _, identities = load_trust(config, MeshState(Path(config.state_dir)))
    _creds(tmp_path / "a.creds", key=identities["a"])  # the agent's own key: the check passes, start goes on
    assert creds_user_key(tmp_path / "a.creds") == identities["a"].id


def test_ask_refuses_creds_of_another_key_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(ONE_AGENT, encoding="utf-8")
    ask = ["ask", "q", "--mesh", str(tmp_path / "mesh.toml"), "--nats", "nats://127.0.0.1:9", "--creds"]
    other = CliRunner().invoke(app, [*ask, str(_creds(tmp_path / "other.creds"))])
    assert other.exit_code == 2, other.output
    config = load_mesh(tmp_path / "mesh.toml")
    assert config.state_dir is not None
    _, identities = load_trust(config, MeshState(Path(config.state_dir)))
    me = identities[REQUESTER_NAME]
    assert f"not as the party's key {me.id}" in " ".join(other.output.split()), other.output
    loose = CliRunner().invoke(app, [*ask, str(_creds(tmp_path / "loose.creds", 0o644, key=me))])
    assert loose.exit_code == 2 and "chmod 600" in " ".join(loose.output.split()), loose.output
