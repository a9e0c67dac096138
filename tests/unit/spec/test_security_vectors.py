"""spec/vectors/security: every vector behaves as its manifest says, the files equal the generator's output, every
security reason code is exercised, and changing any single byte of a tamper-evident vector makes it fail."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accord.protocol.codec import decode
from accord.protocol.messages import Result
from accord.security import Reason, ReplayGuard, SecurityError, TrustStore, open_frame, verify_attestation
from accord.spec import security_vectors as sv
from accord.spec.attestation_vectors import verify_attestation_vector
from accord.spec.frame_vectors import CONTEXT_KEYS, context_of, verify_frame_vector
from accord.spec.trust_vectors import verify_certificate_vector, verify_key_file_vector, verify_trust_file_vector
from tests.support.paths import SPEC_DIR

SPEC = SPEC_DIR
DIR = SPEC / sv.VECTORS_SUBDIR
MANIFEST: dict[str, Any] = json.loads((DIR / "manifest.json").read_text("utf-8"))
TRUST_BYTES = (DIR / "trust.json").read_bytes()
TRUST = TrustStore.from_json(TRUST_BYTES)
SECTIONS = ("frames", "attestations", "certificates", "trust_files", "key_files")
GOOD_FRAMES = [v for v in MANIFEST["frames"] if v["expect"]["ok"]]
TAMPER_EVIDENT_FRAMES = [v for v in GOOD_FRAMES if v["tamper_evident"]]
[STORY_ATTESTATION] = [v for v in MANIFEST["attestations"] if v.get("tamper_evident")]
FLIPS = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF)
"""Every single-bit change of a byte, and its complement."""


def _flipped(data: bytes) -> Iterator[bytes]:
    """``data`` with each byte changed in turn, by a mask rotating through FLIPS (every mask at every ninth byte,
    to keep CI fast; HYPOTHESIS_PROFILE=dev applies every mask at every byte)."""
    every = os.environ.get("HYPOTHESIS_PROFILE") == "dev"
    for i in range(len(data)):
        for mask in FLIPS if every else (FLIPS[i % len(FLIPS)],):
            bad = bytearray(data)
            bad[i] ^= mask
            yield bytes(bad)


def test_check_finds_no_problems() -> None:
    assert sv.check(SPEC) == []


def test_files_equal_the_generator() -> None:
    for name, data in sv.generate().items():
        assert (DIR / name).read_bytes() == data, name


def test_check_reports_a_stale_or_tampered_file(tmp_path: Path) -> None:
    sv.write(tmp_path)
    assert sv.check(tmp_path) == []
    out = tmp_path / sv.VECTORS_SUBDIR
    data = bytearray((out / "attestation.dsse.json").read_bytes())
    data[20] ^= 0x01
    (out / "attestation.dsse.json").write_bytes(bytes(data))
    problems = sv.check(tmp_path)
    assert any("attestation result-attestation" in p for p in problems)
    assert any("differs from the generator" in p for p in problems)


def test_every_security_reason_is_exercised_and_names_are_unique() -> None:
    reasons = {v["expect"]["reason"] for section in SECTIONS for v in MANIFEST[section] if not v["expect"]["ok"]}
    assert reasons == {r.value for r in Reason}
    for section in SECTIONS:
        names = [v["name"] for v in MANIFEST[section]]
        assert len(names) == len(set(names)), section


def test_contexts_use_only_the_documented_keys() -> None:
    for vector in [*MANIFEST["frames"], *MANIFEST["attestations"]]:
        assert set(vector.get("context", {})) <= set(CONTEXT_KEYS), vector["name"]


@pytest.mark.parametrize("vector", MANIFEST["frames"], ids=lambda v: v["name"])
def test_frame_vector(vector: dict[str, Any]) -> None:
    assert verify_frame_vector(vector, TRUST, MANIFEST) is None


@pytest.mark.parametrize("vector", MANIFEST["attestations"], ids=lambda v: v["name"])
def test_attestation_vector(vector: dict[str, Any]) -> None:
    assert verify_attestation_vector(vector, DIR, TRUST) is None


@pytest.mark.parametrize("vector", MANIFEST["certificates"], ids=lambda v: v["name"])
def test_certificate_vector(vector: dict[str, Any]) -> None:
    assert verify_certificate_vector(vector, MANIFEST["keys"]["operator"]["id"]) is None


@pytest.mark.parametrize("vector", MANIFEST["trust_files"], ids=lambda v: v["name"])
def test_trust_file_vector(vector: dict[str, Any]) -> None:
    assert verify_trust_file_vector(vector) is None


@pytest.mark.parametrize("vector", MANIFEST["key_files"], ids=lambda v: v["name"])
def test_key_file_vector(vector: dict[str, Any], tmp_path: Path) -> None:
    assert verify_key_file_vector(vector, tmp_path) is None


def test_a_wrong_expectation_is_reported(tmp_path: Path) -> None:
    frame = {**MANIFEST["frames"][0], "expect": {"ok": False, "reason": "replay"}}
    assert "verified but must be refused" in str(verify_frame_vector(frame, TRUST, MANIFEST))
    replay = next(v for v in MANIFEST["frames"] if v["name"] == "bid-replay")
    assert "refused with replay, expected stale" in str(
        verify_frame_vector({**replay, "expect": {"ok": False, "reason": "stale"}}, TRUST, MANIFEST)
    )
    cert = {**MANIFEST["certificates"][0], "expect": {"ok": False, "reason": "revoked"}}
    assert verify_certificate_vector(cert, MANIFEST["keys"]["operator"]["id"]) is not None
    key_file = {**MANIFEST["key_files"][0], "mode": "0644"}
    assert "insecure_key_file" in str(verify_key_file_vector(key_file, tmp_path))


def test_vectors_use_the_rfc8032_test_key() -> None:
    keys = MANIFEST["keys"]
    assert keys["contractor"]["rfc8032_secret_hex"].startswith("9d61b19deffd5a60")
    assert keys["contractor"]["public_hex"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert {v["expect"].get("signer") for v in GOOD_FRAMES} >= {keys["contractor"]["id"]}


def test_attestation_vector_and_its_result() -> None:
    result_vector = next(v for v in GOOD_FRAMES if v["name"] == "result")
    opened = open_frame(bytes.fromhex(result_vector["frame_hex"]), TRUST, None, result_vector["now_ns"])
    assert isinstance(opened.message, Result)
    assert opened.message.attestation == (DIR / STORY_ATTESTATION["file"]).read_bytes()
    assert opened.message.output.encode() == (DIR / STORY_ATTESTATION["output_file"]).read_bytes()
    assert STORY_ATTESTATION["expect"]["ts"] > 2**53  # read exactly (spec 2.9)


@pytest.mark.parametrize("vector", TAMPER_EVIDENT_FRAMES, ids=lambda v: v["name"])
def test_every_byte_flip_of_a_frame_fails(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["frame_hex"])
    expect = context_of(vector["context"])
    decode(open_frame(frame, TRUST, ReplayGuard(), vector["now_ns"], expect=expect).payload)
    refused = 0
    for bad in _flipped(frame):
        with pytest.raises(SecurityError):
            open_frame(bad, TRUST, ReplayGuard(), vector["now_ns"], expect=expect)
        refused += 1
    assert refused >= len(frame)


def test_every_byte_flip_of_the_attestation_fails() -> None:
    envelope = (DIR / STORY_ATTESTATION["file"]).read_bytes()
    output = (DIR / STORY_ATTESTATION["output_file"]).read_bytes()
    now_ns = STORY_ATTESTATION["now_ns"]
    verify_attestation(envelope, TRUST, now_ns, output=output)
    for bad in _flipped(envelope):
        with pytest.raises(SecurityError):
            verify_attestation(bad, TRUST, now_ns, output=output)
    for i in range(len(output)):  # and the output it attests
        changed = bytearray(output)
        changed[i] ^= 0x01
        with pytest.raises(SecurityError):
            verify_attestation(envelope, TRUST, now_ns, output=bytes(changed))


def test_every_byte_flip_of_the_trust_file_fails_to_load() -> None:
    for bad in _flipped(TRUST_BYTES):
        with pytest.raises(SecurityError):
            TrustStore.from_json(bad)
