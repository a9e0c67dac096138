"""Trust vectors (spec 7.4, 10): the manifest's ``certificates``, ``trust_files`` and ``key_files``, and how each
is checked.

- a certificate or revocation list is added to a trust store whose only anchor is the manifest's operator key;
- a trust file is loaded (10.5), and the agent ids its ``expect.checks`` names are checked at ``now_ns``;
- a key file is written with its ``mode`` (absent when ``text`` is null) and loaded, or (``operation``
  ``create``) a new key file is written where it lies (10.6).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from accord.protocol.messages import Tier
from accord.security.certs import RevocationList
from accord.security.envelope import (
    PAYLOAD_TYPE_CERT,
    PAYLOAD_TYPE_FRAME,
    PAYLOAD_TYPE_REVOCATIONS,
    encode_envelope,
    sign_envelope,
)
from accord.security.errors import SecurityError
from accord.security.identity import Identity, load_identity, save_identity
from accord.security.nkeys import KeyKind, encode_public
from accord.security.trust import TrustStore
from accord.spec.rawpack import pack
from accord.spec.security_fixtures import NOW_NS, Doc, Keys, certificate, trust_store
from accord.spec.story import T0_NS

__all__ = [
    "certificate_vectors",
    "key_file_vectors",
    "trust_file_vectors",
    "verify_certificate_vector",
    "verify_key_file_vector",
    "verify_trust_file_vector",
]

_I64_MAX: Final = 2**63 - 1
_BASE32: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _refused(reason: str) -> Doc:
    return {"ok": False, "reason": reason}


def certificate_vectors(keys: Keys) -> list[Doc]:
    operator, outsider = keys["operator"], keys["outsider"]
    cert = msgspec.to_builtins(certificate(keys, "contractor"))
    crl = msgspec.to_builtins(RevocationList(issuer=operator.id, number=2, issued_ns=T0_NS, serials=[3]))
    assert isinstance(cert, dict) and isinstance(crl, dict)
    bad_agent = keys["contractor"].id[:-1] + ("A" if keys["contractor"].id[-1] != "A" else "B")

    def vector(name: str, kind: str, text: str, payload: Mapping[str, object], expect: Doc, **how: object) -> Doc:
        payload_type = PAYLOAD_TYPE_CERT if kind == "certificate" else PAYLOAD_TYPE_REVOCATIONS
        signer = how.get("signer", operator)
        assert isinstance(signer, Identity)
        envelope = sign_envelope(str(how.get("payload_type", payload_type)), pack(payload), signer)
        return {
            "name": name,
            "description": text,
            "kind": kind,
            "envelope_hex": encode_envelope(envelope).hex(),
            "expect": expect,
        }

    certified: Doc = {"ok": True, "agent_id": cert["agent_id"], "serial": cert["serial"]}
    return [
        vector("cert", "certificate", "The contractor's certificate.", cert, certified),
        vector(
            "cert-unknown-key",
            "certificate",
            "The certificate with one more key: ignored (10.2, as 2.4).",
            {**cert, "added_in_v1_1": 1},
            certified,
        ),
        vector(
            "cert-v2", "certificate", "A certificate with v 2.", {**cert, "v": 2}, _refused("unsupported_version")
        ),
        vector(
            "cert-serial-too-large",
            "certificate",
            "A serial of 2^63 (bound: 0..2^63-1).",
            {**cert, "serial": 2**63},
            _refused("malformed"),
        ),
        vector(
            "cert-serial-negative", "certificate", "A serial of -1.", {**cert, "serial": -1}, _refused("malformed")
        ),
        vector(
            "cert-time-too-large",
            "certificate",
            "A not_after_ns of 2^63 (a time is 0..2^63-1).",
            {**cert, "not_after_ns": 2**63},
            _refused("malformed"),
        ),
        vector(
            "cert-bad-agent-id",
            "certificate",
            "An agent_id of the right shape whose checksum is wrong.",
            {**cert, "agent_id": bad_agent},
            _refused("malformed"),
        ),
        vector(
            "cert-unknown-issuer",
            "certificate",
            "The certificate signed by a key that is not an anchor.",
            cert,
            _refused("unknown_issuer"),
            signer=outsider,
        ),
        vector(
            "cert-issuer-not-signer",
            "certificate",
            "A certificate naming another operator as its issuer, signed by the anchor.",
            {**cert, "issuer": encode_public(outsider.public_bytes, KeyKind.OPERATOR)},
            _refused("sender_mismatch"),
        ),
        vector(
            "cert-frame-typed",
            "certificate",
            "The certificate in an envelope typed as a frame.",
            cert,
            _refused("wrong_payload_type"),
            payload_type=PAYLOAD_TYPE_FRAME,
        ),
        vector(
            "revocations-unknown-key",
            "revocations",
            "A revocation list with one more key: ignored.",
            {**crl, "added_in_v1_1": 1},
            {"ok": True, "number": 2},
        ),
        vector(
            "revocations-v2",
            "revocations",
            "A revocation list with v 2.",
            {**crl, "v": 2},
            _refused("unsupported_version"),
        ),
        vector(
            "revocations-number-too-large",
            "revocations",
            "A number of 2^63 (bound: 0..2^63-1).",
            {**crl, "number": 2**63},
            _refused("malformed"),
        ),
    ]


def verify_certificate_vector(vector: Mapping[str, object], anchor: str) -> str | None:
    name, expect = vector.get("name"), vector["expect"]
    assert isinstance(expect, Mapping)
    store = TrustStore([anchor])
    blob = bytes.fromhex(str(vector["envelope_hex"]))
    try:
        if vector["kind"] == "certificate":
            cert = store.add_certificate(blob)
            got: Doc = {"ok": True, "agent_id": cert.agent_id, "serial": cert.serial}
        else:
            store.add_revocations(blob)
            got = {"ok": True, "number": store.all_revocations()[0].number}
    except SecurityError as exc:
        got = _refused(exc.reason.value)
    return None if got == expect else f"certificate {name}: {got}, expected {dict(expect)}"


def trust_file_vectors(keys: Keys) -> list[Doc]:
    requester = keys["requester"].id
    base = json.loads(trust_store(keys).to_json())
    empty = {"v": 1, "operators": [], "certificates": [], "revocations": [], "direct": []}
    # A direct entry: the certificate record of 10.2 in JSON, issuer null; v, residency and privacy left default.
    direct = {
        "serial": 0,
        "agent_id": requester,
        "name": "dev-requester",
        "tier": Tier.DEVICE.value,
        "region": "lab",
        "not_before_ns": 0,
        "not_after_ns": _I64_MAX,
    }
    padded = next(text for text in [*base["certificates"], *base["revocations"]] if text.endswith("="))
    unpadded = {k: [t.rstrip("=") if t == padded else t for t in base[k]] for k in ("certificates", "revocations")}
    trusted: Doc = {"ok": True, "checks": {requester: "valid"}}

    def vector(name: str, text: str, content: Mapping[str, object], expect: Doc) -> Doc:
        return {
            "name": name,
            "description": text,
            "text": json.dumps(content, separators=(",", ":")),
            "now_ns": NOW_NS,
            "expect": expect,
        }

    return [
        vector(
            "trust-direct-entry",
            "A key trusted directly: a certificate record with issuer absent (null) and v, residency and privacy "
            "left at their defaults (1, [], [public]).",
            {**empty, "direct": [direct]},
            trusted,
        ),
        vector(
            "trust-direct-entry-unknown-key",
            "A direct entry with issuer null and one more key: ignored (it is a certificate record).",
            {**empty, "direct": [{**direct, "issuer": None, "added_in_v1_1": 1}]},
            trusted,
        ),
        vector(
            "trust-file",
            "The vectors' trust file: the contractor is certified, the revoked key is revoked.",
            base,
            {"ok": True, "checks": {keys["contractor"].id: "valid", keys["revoked"].id: "revoked"}},
        ),
        vector("trust-unknown-field", "A trust file with one more key.", {**base, "x": 1}, _refused("malformed")),
        vector(
            "trust-missing-field",
            "A trust file without direct (every field is required).",
            {k: v for k, v in base.items() if k != "direct"},
            _refused("malformed"),
        ),
        vector("trust-v2", "A trust file with v 2.", {**base, "v": 2}, _refused("unsupported_version")),
        vector(
            "trust-direct-with-issuer",
            "A direct entry naming an issuer.",
            {**empty, "direct": [{**direct, "issuer": keys["operator"].id}]},
            _refused("malformed"),
        ),
        vector(
            "trust-direct-v2",
            "A direct entry with v 2.",
            {**empty, "direct": [{**direct, "v": 2}]},
            _refused("unsupported_version"),
        ),
        vector(
            "trust-noncanonical-base64",
            "A signed entry whose base64 lacks its padding (only the canonical form is accepted).",
            {**base, **unpadded},
            _refused("malformed"),
        ),
        vector(
            "trust-two-revocation-lists",
            "The operator's revocation list twice (one list per operator).",
            {**base, "revocations": base["revocations"] * 2},
            _refused("malformed"),
        ),
    ]


def verify_trust_file_vector(vector: Mapping[str, object]) -> str | None:
    name, expect, now_ns = vector.get("name"), vector["expect"], vector["now_ns"]
    assert isinstance(expect, Mapping) and isinstance(now_ns, int)
    try:
        store = TrustStore.from_json(str(vector["text"]))
    except SecurityError as exc:
        got: Doc = _refused(exc.reason.value)
    else:
        checks = expect.get("checks", {})
        assert isinstance(checks, Mapping)
        got = {"ok": True, "checks": {agent: _status(store, agent, now_ns) for agent in checks}}
    return None if got == expect else f"trust file {name}: {got}, expected {dict(expect)}"


def _status(store: TrustStore, agent_id: str, now_ns: int) -> str:
    try:
        store.check(agent_id, now_ns)
    except SecurityError as exc:
        return exc.reason.value
    return "valid"


def _spare_bits_set(seed: str) -> str:
    """The seed with the two spare low bits of its last character set (58 x 5 bits hold 36 bytes + 2 bits)."""
    value = _BASE32.index(seed[-1])
    assert value & 3 == 0, "a canonical seed leaves the spare bits zero"
    return seed[:-1] + _BASE32[value | 3]


def key_file_vectors(keys: Keys) -> list[Doc]:
    contractor, operator = keys["contractor"], keys["operator"]
    seed = contractor.seed
    changed = seed[:20] + _BASE32[(_BASE32.index(seed[20]) + 1) % 32] + seed[21:]

    def vector(
        name: str, text: str, content: str | None, expect: Doc, *, mode: str = "0600", op: str = "load"
    ) -> Doc:
        return {
            "name": name,
            "description": text,
            "operation": op,
            "text": content,
            "mode": mode,
            "expect": expect,
        }

    def loads(identity: Identity) -> Doc:
        return {"ok": True, "id": identity.id, "kind": identity.kind.name.lower()}

    return [
        vector("seed-agent", "The contractor's seed and a newline.", seed + "\n", loads(contractor)),
        vector("seed-operator", "The operator's seed and a newline.", operator.seed + "\n", loads(operator)),
        vector(
            "seed-surrounding-whitespace",
            "The seed between spaces, ending in CR LF: whitespace around the seed is ignored.",
            f"  {seed}\r\n",
            loads(contractor),
        ),
        vector(
            "seed-other-control-character",
            "The seed after a vertical tab: only spaces, tabs, CR and LF around the seed are ignored.",
            f"\v{seed}\n",
            _refused("bad_key_file"),
        ),
        vector(
            "seed-spare-bits",
            "The seed with the two spare bits of its last character set: not a seed (7.4).",
            _spare_bits_set(seed) + "\n",
            _refused("bad_key_file"),
        ),
        vector(
            "seed-bad-checksum",
            "The seed with its 21st character changed.",
            changed + "\n",
            _refused("bad_key_file"),
        ),
        vector("seed-lowercase", "The seed in lowercase.", seed.lower() + "\n", _refused("bad_key_file")),
        vector("seed-public-id", "An agent id instead of a seed.", contractor.id + "\n", _refused("bad_key_file")),
        vector(
            "seed-group-readable",
            "A good seed in a file the group may read (mode 0640).",
            seed + "\n",
            _refused("insecure_key_file"),
            mode="0640",
        ),
        vector("seed-missing", "No file.", None, _refused("key_file_missing")),
        vector(
            "seed-create-over-existing",
            "Creating a key file where one exists (without force).",
            seed + "\n",
            _refused("key_file_exists"),
            op="create",
        ),
    ]


def verify_key_file_vector(vector: Mapping[str, object], directory: Path) -> str | None:
    """Write the vector's file into ``directory`` (which it must own), then load or create a key file there."""
    name, expect, text = vector.get("name"), vector["expect"], vector.get("text")
    assert isinstance(expect, Mapping)
    path = directory / f"{name}.seed"
    if text is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(str(text).encode("utf-8"))
        os.chmod(path, int(str(vector["mode"]), 8))
    try:
        if vector["operation"] == "create":
            save_identity(Identity.from_seed(str(text)), path)
            got: Doc = {"ok": True}
        else:
            identity = load_identity(path)
            got = {"ok": True, "id": identity.id, "kind": identity.kind.name.lower()}
    except SecurityError as exc:
        got = _refused(exc.reason.value)
    return None if got == expect else f"key file {name}: {got}, expected {dict(expect)}"
