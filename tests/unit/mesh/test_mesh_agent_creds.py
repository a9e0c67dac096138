"""An agent of a mesh file may name its own NATS `.creds` file (`[[agents]] creds_file`), for a server with
decentralised auth where every agent is its own JWT user: the file is a key file (owner-only, like `[bus]
creds_file`), it belongs to one key (one replica), and it needs a server that knows JWT users (`[bus] url`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from accord.cli import app
from accord.mesh.config import MeshConfig, MeshConfigError, parse_mesh, resolve_paths
from accord.mesh.run import agent_creds
from accord.security import Identity, KeyFileError, Reason
from tests.support.cli import ONE_AGENT
from tests.support.natsjwt import DecentralisedAuth

URL = 'url = "nats://127.0.0.1:4222"\n'


def _mesh(tmp_path: Path, *, bus: str = URL, agent: str = 'creds_file = "a.creds"\n') -> MeshConfig:
    return resolve_paths(parse_mesh(f"[bus]\n{bus}\n{ONE_AGENT}{agent}"), tmp_path)


def _creds(path: Path, mode: int = 0o600) -> Path:
    DecentralisedAuth().account.creds(path, user_seed=Identity.generate().seed)
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
