"""``accord keys ...`` and ``accord verify``: files, output, and exit codes (CliRunner, no subprocess)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accord.cli import app
from accord.protocol.messages import Privacy, Tier
from accord.security import Identity, KeyKind, TrustStore, load_identity
from accord.spec import security_vectors as sv
from accord.spec.security_fixtures import NOW_NS
from tests.support.paths import SPEC_DIR

runner = CliRunner()
SPEC = SPEC_DIR
VEC = SPEC / sv.VECTORS_SUBDIR
VEC_NOW = str(NOW_NS)


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _owner_only(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path | str]:
    code, out, _ = _run("keys", "new-operator", tmp_path / "op.seed")
    assert code == 0 and out.strip().startswith("O")
    code, agent_out, _ = _run("keys", "new-agent", tmp_path / "agent.seed")
    assert code == 0 and agent_out.strip().startswith("U")
    return {
        "op": tmp_path / "op.seed",
        "agent": tmp_path / "agent.seed",
        "agent_id": agent_out.strip(),
        "trust": tmp_path / "trust.json",
    }


def test_new_keys_are_owner_only_and_loadable(pki: dict[str, Path | str]) -> None:
    op, agent = Path(pki["op"]), Path(pki["agent"])
    assert _owner_only(op) and _owner_only(agent)
    assert load_identity(op, kind=KeyKind.OPERATOR).id.startswith("O")
    assert load_identity(agent, kind=KeyKind.USER).id == pki["agent_id"]
    code, _, err = _run("keys", "new-agent", agent)
    assert code == 1 and "key_file_exists" in err
    assert _run("keys", "new-agent", agent, "--force")[0] == 0


def test_issue_show_revoke(pki: dict[str, Path | str]) -> None:
    trust = Path(pki["trust"])
    code, out, err = _run(
        "keys",
        "issue",
        "--operator-key",
        pki["op"],
        "--agent",
        pki["agent_id"],
        "--name",
        "edge-1",
        "--tier",
        "edge",
        "--region",
        "eu-central",
        "--residency",
        "eu",
        "--residency",
        "ch",
        "--privacy",
        "public",
        "--privacy",
        "internal",
        "--trust",
        trust,
        "--serial",
        "42",
        "--days",
        "30",
    )
    assert code == 0, err
    assert "serial 42" in out and "edge-1" in out
    assert _owner_only(trust)
    store = TrustStore.load(trust)
    cert = store.check(str(pki["agent_id"]), store.certificates(0)[0].certificate.not_before_ns)
    assert (cert.name, cert.tier, cert.residency, cert.privacy, cert.serial) == (
        "edge-1",
        Tier.EDGE,
        ["eu", "ch"],
        [Privacy.PUBLIC, Privacy.INTERNAL],
        42,
    )

    code, out, _ = _run("keys", "show", trust)
    assert code == 0 and "edge-1" in out and "valid" in out and str(pki["agent_id"]) in out
    code, out, _ = _run("keys", "show", pki["agent"])
    assert code == 0 and str(pki["agent_id"]) in out
    assert load_identity(Path(pki["agent"])).seed not in out, "show never prints the secret"

    code, out, err = _run("keys", "revoke", "--operator-key", pki["op"], "--trust", trust, "--serial", "42")
    assert code == 0, err
    code, out, _ = _run("keys", "show", trust)
    assert "revoked" in out


def test_issue_with_an_agent_key_file_and_a_second_operator(pki: dict[str, Path | str], tmp_path: Path) -> None:
    trust = Path(pki["trust"])
    assert (
        _run(
            "keys", "issue", "--operator-key", pki["op"], "--agent", pki["agent"], "--name", "a", "--trust", trust
        )[0]
        == 0
    )
    _run("keys", "new-operator", tmp_path / "op2.seed")
    _run("keys", "new-agent", tmp_path / "b.seed")
    assert (
        _run(
            "keys",
            "issue",
            "--operator-key",
            tmp_path / "op2.seed",
            "--agent",
            tmp_path / "b.seed",
            "--name",
            "b",
            "--trust",
            trust,
        )[0]
        == 0
    )
    store = TrustStore.load(trust)
    assert len(store.operators) == 2 and len(store.certificates(0)) == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--agent", "not-an-id"], "bad_key_file"),
        (["--name", "has space"], "invalid"),
        (["--operator-key", "AGENT"], "bad_key_file"),  # an agent key cannot issue
    ],
)
def test_issue_failures_exit_1_with_the_reason(pki: dict[str, Path | str], args: list[str], needle: str) -> None:
    base = {
        "--operator-key": str(pki["op"]),
        "--agent": str(pki["agent_id"]),
        "--name": "ok",
        "--trust": str(pki["trust"]),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = str(pki["agent"]) if value == "AGENT" else value
    code, _, err = _run("keys", "issue", *[x for kv in base.items() for x in kv])
    assert code == 1 and needle in err
    assert not Path(pki["trust"]).exists(), "nothing written on failure"


def test_insecure_operator_key_is_refused_with_exit_2(pki: dict[str, Path | str]) -> None:
    Path(pki["op"]).chmod(0o644)
    code, _, err = _run(
        "keys",
        "issue",
        "--operator-key",
        pki["op"],
        "--agent",
        pki["agent_id"],
        "--name",
        "a",
        "--trust",
        pki["trust"],
    )
    assert code == 2 and "insecure_key_file" in err and "chmod 600" in err  # a bad file: a usage error


def test_revoke_needs_something_to_revoke(pki: dict[str, Path | str]) -> None:
    code, _, err = _run("keys", "revoke", "--operator-key", pki["op"], "--trust", pki["trust"])
    assert code == 2 and "--serial" in err


def test_verify_the_vector_attestation() -> None:
    code, out, err = _run(
        "verify",
        VEC / "attestation.dsse.json",
        "--trust",
        VEC / "trust.json",
        "--output",
        VEC / "attestation.output.txt",
        "--at-ns",
        VEC_NOW,
    )
    assert code == 0, err
    manifest = json.loads((VEC / "manifest.json").read_text())
    for needle in (
        "attestation verified",
        "edge-fra-1",
        "llama-3.1-8b-instruct:q4",
        "llamacpp",
        manifest["keys"]["requester"]["id"],
        "matches",
    ):
        assert needle in out, needle


def test_verify_failures(tmp_path: Path) -> None:
    wrong_output = tmp_path / "out.txt"
    wrong_output.write_text("something else")
    code, _, err = _run(
        "verify",
        VEC / "attestation.dsse.json",
        "--trust",
        VEC / "trust.json",
        "--output",
        wrong_output,
        "--at-ns",
        VEC_NOW,
    )
    assert code == 1 and "output_mismatch" in err
    tampered = tmp_path / "a.json"
    data = bytearray((VEC / "attestation.dsse.json").read_bytes())
    data[100] ^= 0x01
    tampered.write_bytes(bytes(data))
    code, _, err = _run("verify", tampered, "--trust", VEC / "trust.json", "--at-ns", VEC_NOW)
    assert code == 1 and ("bad_signature" in err or "malformed" in err)
    empty_trust = tmp_path / "trust.json"
    empty_trust.write_bytes(TrustStore().to_json())
    code, _, err = _run("verify", VEC / "attestation.dsse.json", "--trust", empty_trust, "--at-ns", VEC_NOW)
    assert code == 1 and "unknown_key" in err
    code, _, err = _run("verify", VEC / "attestation.dsse.json", "--trust", VEC / "trust.json", "--at-ns", "0")
    assert code == 1 and "cert_not_yet_valid" in err
    code, _, _ = _run("verify", tmp_path / "missing.json", "--trust", VEC / "trust.json")
    assert code == 2


def test_verify_a_signed_frame(tmp_path: Path) -> None:
    manifest = json.loads((VEC / "manifest.json").read_text())
    frames = {v["name"]: v for v in manifest["frames"]}
    good, bad = tmp_path / "bid.msgpack", tmp_path / "bad.msgpack"
    good.write_bytes(bytes.fromhex(frames["bid"]["frame_hex"]))
    bad.write_bytes(bytes.fromhex(frames["bid-unknown-key"]["frame_hex"]))
    code, out, err = _run("verify", good, "--trust", VEC / "trust.json", "--at-ns", VEC_NOW)
    assert code == 0 and "Bid frame verified" in out, err
    code, _, err = _run("verify", bad, "--trust", VEC / "trust.json", "--at-ns", VEC_NOW)
    assert code == 1 and "unknown_key" in err


def test_show_direct_trust_is_flagged(tmp_path: Path) -> None:
    store = TrustStore()
    store.trust_directly(Identity.generate().id, name="dev")
    store.save(tmp_path / "t.json")
    code, out, _ = _run("keys", "show", tmp_path / "t.json")
    assert code == 0 and "DIRECT TRUST" in out
