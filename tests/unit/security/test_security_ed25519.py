"""The Ed25519 seam (libsodium through PyNaCl) against ``cryptography`` (OpenSSL), the pyca pattern: every
signature in spec/vectors/security, each with a changed signature and a changed payload, gets the same verdict
from both libraries; signing gives the same bytes (Ed25519 is deterministic) for the RFC 8032 keys."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from accord.security import SecurityError, SignatureError, pae
from accord.security.ed25519 import PrivateKey, PublicKey, counts
from accord.security.envelope import Envelope, decode_envelope
from accord.security.nkeys import decode_public
from accord.spec import security_vectors as sv
from tests.support.paths import SPEC_DIR

DIR = SPEC_DIR / sv.VECTORS_SUBDIR
MANIFEST: dict[str, Any] = json.loads((DIR / "manifest.json").read_text("utf-8"))

Signed = tuple[str, bytes, bytes, bytes]
"""(where, public key, signed bytes, signature)."""


def _key(key_id: str) -> bytes | None:
    decoded = decode_public(key_id)
    return None if decoded is None else decoded[1]


def _from_envelope(where: str, data: bytes) -> list[Signed]:
    try:
        env: Envelope = decode_envelope(data, _payload_type(data))
    except (SecurityError, ValueError):
        return []
    key = _key(env.key_id)
    return [] if key is None else [(where, key, pae(env.payload_type, env.payload), env.sig)]


def _payload_type(data: bytes) -> str:
    import msgspec

    try:
        raw = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return ""
    return str(raw.get("payload_type", "")) if isinstance(raw, dict) else ""


def _from_dsse(where: str, text: str) -> list[Signed]:
    try:
        doc = json.loads(text)
        payload = base64.b64decode(doc["payload"], validate=True)
        signatures = doc["signatures"]
        payload_type = str(doc["payloadType"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return []
    out = []
    for i, entry in enumerate(signatures if isinstance(signatures, list) else []):
        try:
            sig = base64.b64decode(entry["sig"], validate=True)
            key = _key(entry["keyid"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            continue
        if key is not None and len(sig) == 64:
            out.append((f"{where}#{i}", key, pae(payload_type, payload), sig))
    return out


def _every_signature() -> list[Signed]:
    found: list[Signed] = []
    for v in MANIFEST["frames"]:
        found += _from_envelope(f"frame {v['name']}", bytes.fromhex(v["frame_hex"]))
    for v in MANIFEST["certificates"]:
        found += _from_envelope(f"certificate {v['name']}", bytes.fromhex(v["envelope_hex"]))
    for v in MANIFEST["attestations"]:
        text = (DIR / v["file"]).read_text("utf-8") if "file" in v else v["envelope_text"]
        found += _from_dsse(f"attestation {v['name']}", text)
    trust = json.loads((DIR / "trust.json").read_text("utf-8"))
    for i, blob in enumerate([*trust["certificates"], *trust["revocations"]]):
        found += _from_envelope(f"trust.json entry {i}", base64.b64decode(blob))
    return found


SIGNATURES = _every_signature()


def _seam(key: bytes, data: bytes, sig: bytes) -> bool:
    try:
        PublicKey(key).verify(sig, data)
    except SignatureError:
        return False
    return True


def _openssl(key: bytes, data: bytes, sig: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, data)
    except InvalidSignature:
        return False
    return True


def test_the_vectors_hold_signatures_of_every_kind() -> None:
    kinds = {where.split()[0] for where, *_ in SIGNATURES}
    assert kinds == {"frame", "certificate", "attestation", "trust.json"}
    assert len(SIGNATURES) > 40
    assert any(not _openssl(k, d, s) for _, k, d, s in SIGNATURES), "the vectors include bad signatures"


@pytest.mark.parametrize(("where", "key", "data", "sig"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_libsodium_and_openssl_agree(where: str, key: bytes, data: bytes, sig: bytes) -> None:
    valid = _openssl(key, data, sig)
    assert _seam(key, data, sig) == valid, where
    for i in (0, 31, 32, 63):  # R and S, first and last byte
        bad = bytearray(sig)
        bad[i] ^= 0x01
        verdict = _openssl(key, data, bytes(bad))
        assert _seam(key, data, bytes(bad)) == verdict, (where, i)
        assert not (valid and verdict), (where, i)
    changed = data[:-1] + bytes([data[-1] ^ 0x80])
    assert _seam(key, changed, sig) == _openssl(key, changed, sig), where


@pytest.mark.parametrize("name", sorted(MANIFEST["keys"]))
def test_signatures_are_the_bytes_openssl_makes(name: str) -> None:
    secret = bytes.fromhex(MANIFEST["keys"][name]["rfc8032_secret_hex"])
    ours = PrivateKey(secret)
    theirs = Ed25519PrivateKey.from_private_bytes(secret)
    assert ours.public.raw.hex() == MANIFEST["keys"][name]["public_hex"]
    for message in (b"", b"\x72", b"accord" * 1000):
        assert ours.sign(message) == theirs.sign(message)


def test_rfc8032_test_1() -> None:
    key = PrivateKey(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    sig = key.sign(b"")
    assert sig.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f05"
        "95bbe24655141438e7a100b"
    )
    key.public.verify(sig, b"")


def test_refusals_are_typed_and_counted() -> None:
    key = PrivateKey.generate()
    sig = key.sign(b"x")
    before = (counts.signed, counts.checked)
    with pytest.raises(SignatureError):
        key.public.verify(sig, b"y")
    with pytest.raises(SignatureError):
        key.public.verify(sig[:63], b"x")
    key.public.verify(key.sign(b"x"), b"x")
    assert (counts.signed - before[0], counts.checked - before[1]) == (1, 3)
    with pytest.raises(ValueError):
        PublicKey(b"\0" * 31)
    assert "seed" not in repr(key) and key.seed.hex() not in repr(key)
    assert PublicKey(key.public.raw) == key.public and len({key.public, PublicKey(key.public.raw)}) == 1
