"""spec/vectors/security: every vector verifies as its manifest says, the files equal the generator's output, and
changing any single byte of any vector makes verification fail with a typed error."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accord.protocol.codec import decode
from accord.protocol.messages import Result
from accord.security import Expect, ReplayGuard, SecurityError, TrustStore, open_frame, verify_attestation
from accord.spec import security_vectors as sv
from tests.support.paths import SPEC_DIR

SPEC = SPEC_DIR
DIR = SPEC / sv.VECTORS_SUBDIR
MANIFEST: dict[str, Any] = json.loads((DIR / "manifest.json").read_text("utf-8"))
TRUST_BYTES = (DIR / "trust.json").read_bytes()
TRUST = TrustStore.from_json(TRUST_BYTES)
GOOD_FRAMES = [v for v in MANIFEST["frames"] if v["expect"]["ok"]]
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


@pytest.mark.parametrize("vector", MANIFEST["frames"], ids=lambda v: v["name"])
def test_frame_vector(vector: dict[str, Any]) -> None:
    assert sv.verify_frame_vector(vector, TRUST) is None


def test_vectors_use_the_rfc8032_test_key() -> None:
    keys = MANIFEST["keys"]
    assert keys["contractor"]["rfc8032_secret_hex"].startswith("9d61b19deffd5a60")
    assert keys["contractor"]["public_hex"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert {v["expect"].get("signer") for v in GOOD_FRAMES} >= {keys["contractor"]["id"]}


def test_attestation_vector_and_its_result() -> None:
    [vector] = MANIFEST["attestations"]
    assert sv.verify_attestation_vector(vector, DIR, TRUST) is None
    result_vector = next(v for v in GOOD_FRAMES if v["name"] == "result")
    opened = open_frame(bytes.fromhex(result_vector["frame_hex"]), TRUST, None, result_vector["now_ns"])
    assert isinstance(opened.message, Result)
    assert opened.message.attestation == (DIR / "attestation.dsse.json").read_bytes()
    assert opened.message.output.encode() == (DIR / "attestation.output.txt").read_bytes()


def _context(vector: dict[str, Any]) -> Expect:
    return Expect(**vector["context"])


@pytest.mark.parametrize("vector", GOOD_FRAMES, ids=lambda v: v["name"])
def test_every_byte_flip_of_a_frame_fails(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["frame_hex"])
    decode(open_frame(frame, TRUST, ReplayGuard(), vector["now_ns"], expect=_context(vector)).payload)
    refused = 0
    for bad in _flipped(frame):
        with pytest.raises(SecurityError):
            open_frame(bad, TRUST, ReplayGuard(), vector["now_ns"], expect=_context(vector))
        refused += 1
    assert refused >= len(frame)


def test_every_byte_flip_of_the_attestation_fails() -> None:
    [vector] = MANIFEST["attestations"]
    envelope = (DIR / vector["file"]).read_bytes()
    output = (DIR / vector["output_file"]).read_bytes()
    verify_attestation(envelope, TRUST, vector["now_ns"], output=output)
    for bad in _flipped(envelope):
        with pytest.raises(SecurityError):
            verify_attestation(bad, TRUST, vector["now_ns"], output=output)
    for i in range(len(output)):  # and the output it attests
        changed = bytearray(output)
        changed[i] ^= 0x01
        with pytest.raises(SecurityError):
            verify_attestation(envelope, TRUST, vector["now_ns"], output=bytes(changed))


def test_every_byte_flip_of_the_trust_file_fails_to_load() -> None:
    for bad in _flipped(TRUST_BYTES):
        with pytest.raises(SecurityError):
            TrustStore.from_json(bad)
