"""Every seed is read through one permission check (issue 15, D12): the mesh file's bus seed and creds files are
key files like an agent's (spec 10.6), refused when group or others may access them, as are the agent keys a mesh
file names; the key files a command takes exit 2 with the reason."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from accord.bus.server import free_port
from accord.mesh.config import MeshConfig, MeshConfigError, parse_mesh, resolve_paths
from accord.mesh.run import bus_credentials
from accord.mesh.state import MeshState, load_trust
from accord.security import Identity, KeyFileError, Reason, save_identity
from accord.security.testing import Pki
from tests.support.cli import ONE_AGENT, run_all

CREDS = """-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2lnbmF0dXJl
------END NATS USER JWT------

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------
"""


def _mesh(tmp_path: Path, bus: str = "", agent: str = "") -> MeshConfig:
    return resolve_paths(parse_mesh(f"[bus]\n{bus}\n{ONE_AGENT}{agent}"), tmp_path)


def _seed_file(path: Path, mode: int) -> Identity:
    identity = Identity.generate()
    save_identity(identity, path)
    path.chmod(mode)
    return identity


def _creds_file(path: Path, mode: int) -> None:
    path.write_text(CREDS.format(seed=Identity.generate().seed), encoding="ascii")
    path.chmod(mode)


def _insecure(info: pytest.ExceptionInfo[MeshConfigError], field: str, mode: int) -> None:
    """The refusal names the field, the mode and the fix, and is caused by the key file check's own error."""
    cause = info.value.__cause__
    assert isinstance(cause, KeyFileError) and cause.reason is Reason.INSECURE_KEY_FILE, cause
    text = str(info.value)
    assert field in text and f"{mode:04o}" in text and "chmod 600" in text, text


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o604])
def test_bus_seed_file_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    _seed_file(tmp_path / "bus.seed", mode)
    with pytest.raises(MeshConfigError) as info:
        bus_credentials(_mesh(tmp_path, 'nkey_seed_file = "bus.seed"'))
    _insecure(info, "bus.nkey_seed_file", mode)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_bus_seed_file_is_read(tmp_path: Path, mode: int) -> None:
    identity = _seed_file(tmp_path / "bus.seed", mode)
    assert bus_credentials(_mesh(tmp_path, 'nkey_seed_file = "bus.seed"')) == (identity.seed, None)


def test_bus_seed_file_must_hold_a_user_seed(tmp_path: Path) -> None:
    (tmp_path / "bus.seed").write_text("not a seed\n", encoding="ascii")
    (tmp_path / "bus.seed").chmod(0o600)
    with pytest.raises(MeshConfigError, match=r"bus\.nkey_seed_file: bad_key_file"):
        bus_credentials(_mesh(tmp_path, 'nkey_seed_file = "bus.seed"'))


@pytest.mark.parametrize("mode", [0o644, 0o666])
def test_bus_creds_file_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    _creds_file(tmp_path / "bus.creds", mode)
    with pytest.raises(MeshConfigError) as info:
        bus_credentials(_mesh(tmp_path, 'creds_file = "bus.creds"'))
    _insecure(info, "bus.creds_file", mode)


def test_owner_only_bus_creds_file_is_passed_on(tmp_path: Path) -> None:
    _creds_file(tmp_path / "bus.creds", 0o600)
    assert bus_credentials(_mesh(tmp_path, 'creds_file = "bus.creds"')) == (None, str(tmp_path / "bus.creds"))


@pytest.mark.parametrize("mode", [0o644, 0o666])
def test_agent_key_file_of_a_mesh_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    _seed_file(tmp_path / "a.seed", mode)
    config = _mesh(tmp_path, agent='key = "a.seed"\n')
    assert config.state_dir is not None
    with pytest.raises(KeyFileError) as info:
        load_trust(config, MeshState(Path(config.state_dir)))
    assert info.value.reason is Reason.INSECURE_KEY_FILE and "chmod 600" in str(info.value)


def test_group_or_world_readable_seeds_exit_2_with_the_reason(tmp_path: Path) -> None:
    closed = f"nats://127.0.0.1:{free_port()}"  # a command that gets past its files fails to connect here
    _seed_file(tmp_path / "bus.seed", 0o644)
    _seed_file(tmp_path / "world.seed", 0o666)
    _seed_file(tmp_path / "agent.seed", 0o644)
    _seed_file(tmp_path / "me.seed", 0o640)
    _creds_file(tmp_path / "bus.creds", 0o644)
    meshes = {
        "bus_seed.toml": f'[bus]\nurl = "{closed}"\nnkey_seed_file = "bus.seed"\n{ONE_AGENT}',
        "world_seed.toml": f'[bus]\nurl = "{closed}"\nnkey_seed_file = "world.seed"\n{ONE_AGENT}',
        "bus_creds.toml": f'[bus]\nurl = "{closed}"\ncreds_file = "bus.creds"\n{ONE_AGENT}',
        "agent_key.toml": f'[bus]\nurl = "{closed}"\n{ONE_AGENT}key = "agent.seed"\n',
        "mesh.toml": ONE_AGENT,
    }
    for name, text in meshes.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    pki = Pki(random.Random(5))
    kit, agent = pki.agent("kit"), pki.agent("agent")
    save_identity(kit, tmp_path / "kit.seed")
    pki.trust.save(tmp_path / "trust.json")
    kit_args = ["--nats", closed, "--agent", agent.id, "--trust", "trust.json", "--key", "kit.seed"]
    results = run_all(
        {
            name: (argv, tmp_path)
            for name, argv in {
                "up_bus_seed_0644": ["up", "bus_seed.toml"],
                "up_bus_seed_0666": ["up", "world_seed.toml"],
                "up_bus_creds_0644": ["up", "bus_creds.toml"],
                "ask_bus_seed_0644": ["ask", "q", "--mesh", "bus_seed.toml"],
                "up_agent_key_0644": ["up", "agent_key.toml"],
                "ask_key_0640": ["ask", "q", "--mesh", "mesh.toml", "--nats", closed, "--key", "me.seed"],
                "conformance_nkey_seed_0644": ["conformance", *kit_args, "--nkey-seed", "bus.seed"],
                "conformance_creds_0644": ["conformance", *kit_args, "--creds", "bus.creds"],
            }.items()
        }
    )
    for name, (code, text) in results.items():
        assert code == 2 and "insecure_key_file" in text and "chmod 600" in text, (name, code, text)
        assert "Traceback" not in text, (name, text)
