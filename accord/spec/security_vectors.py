"""Golden security vectors (spec/vectors/security/): signed frames, an attestation and a trust file.

Made deterministically (Ed25519 signatures are deterministic) from the RFC 8032 section 7.1 test keys, fixed ids
and fixed timestamps; the messages are the story of :mod:`accord.spec.story`, told between those keys.
``python -m accord.spec.security_vectors write spec`` writes them; :func:`check` verifies the committed files and
compares them with what :func:`generate` makes now (``accord spec check`` calls it).

The RFC 8032 secrets are public: these keys MUST NOT be trusted anywhere but in tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.messages import ChatMessage, Message, Privacy, Role, Tier, Timings, Usage
from accord.security.attest import attest, verify_attestation
from accord.security.certs import Certificate, RevocationList, sign_certificate, sign_revocations
from accord.security.envelope import PAYLOAD_TYPE_CERT, PAYLOAD_TYPE_FRAME, encode_envelope, sign_envelope
from accord.security.errors import SecurityError
from accord.security.frames import Expect, open_frame, seal
from accord.security.identity import Identity
from accord.security.nkeys import KeyKind
from accord.security.replay import ReplayGuard
from accord.security.trust import TrustStore
from accord.spec.story import T0_NS, Answer, Parties, S, Story, Timeline, fixed_id, tell

__all__ = ["VECTORS_SUBDIR", "check", "generate", "write"]

VECTORS_SUBDIR: Final = Path("vectors") / "security"

# RFC 8032 section 7.1 secret keys: TEST 1, TEST 2, TEST 3, TEST 1024, TEST SHA(abc).
RFC8032_SECRETS: Final = {
    "contractor": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "requester": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "operator": "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
    "outsider": "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
    "revoked": "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
}
NOW_NS: Final = T0_NS + 2 * S
"""The time at which the vectors are verified (unless one says otherwise)."""
_YEAR_NS: Final = 365 * 24 * 3600 * S

_PROMPT: Final = (ChatMessage(role=Role.USER, content="Summarise: the data stays in the EU."),)
_ANSWER: Final = Answer(
    output="The data remains within the EU.",
    usage=Usage(input_tokens=12, output_tokens=9),
    timings=Timings(queued_ms=3, ttft_ms=180, total_ms=620),
    backend="llamacpp",
)
_TIMELINE: Final = Timeline(
    bid_valid_until_ms=3_000, award_ms=1_070, award_expires_ms=None, ack_by_ms=1_570, ack_ms=1_080
)


def _id(label: str) -> str:
    return fixed_id("accord-security-vector", label)


def _story_id(label: str) -> str:
    """The story's ids; these vectors were first made with the acknowledgement labelled ``ack``."""
    return _id("ack" if label == "award-ack" else label)


def _keys() -> dict[str, Identity]:
    return {
        name: Identity.from_private_bytes(
            bytes.fromhex(secret), KeyKind.OPERATOR if name == "operator" else KeyKind.USER
        )
        for name, secret in RFC8032_SECRETS.items()
    }


def _trust_file(keys: dict[str, Identity]) -> bytes:
    operator = keys["operator"]
    store = TrustStore([operator.id])
    specs = [
        ("contractor", 1, "edge-fra-1", Tier.EDGE, "eu-central", ["eu"], [Privacy.PUBLIC, Privacy.INTERNAL]),
        ("requester", 2, "requester-1", Tier.DEVICE, "eu-central", ["eu"], [Privacy.PUBLIC]),
        ("revoked", 3, "edge-old-1", Tier.EDGE, "eu-central", ["eu"], [Privacy.PUBLIC]),
    ]
    for who, serial, name, tier, region, residency, privacy in specs:
        cert = Certificate(
            serial=serial,
            agent_id=keys[who].id,
            name=name,
            tier=tier,
            region=region,
            residency=residency,
            privacy=privacy,
            not_before_ns=T0_NS - _YEAR_NS,
            not_after_ns=T0_NS + _YEAR_NS,
            issuer=operator.id,
        )
        store.add_certificate(sign_certificate(cert, operator))
    crl = RevocationList(issuer=operator.id, number=1, issued_ns=T0_NS, serials=[3], agents=[])
    store.add_revocations(sign_revocations(crl, operator))
    return store.to_json()


def _story(keys: dict[str, Identity]) -> Story:
    """The shared story (accord.spec.story) between the test keys, with an attestation the contractor signs."""
    contractor = keys["contractor"]
    return tell(
        Parties(requester=keys["requester"].id, contractor=contractor.id),
        ids=_story_id,
        prompt=_PROMPT,
        answer=_ANSWER,
        timeline=_TIMELINE,
        attest=lambda statement: attest(statement, contractor),
    )


def _frame_vectors(keys: dict[str, Identity], story: Story) -> list[dict[str, object]]:
    contractor, requester = keys["contractor"], keys["requester"]
    bid, award, ack, result = story.bid, story.award, story.award_ack, story.result
    task = {"task_id": bid.task_id, "attempt": 1}
    good_bid = seal(bid, contractor)
    bad_sig = bytearray(good_bid)
    bad_sig[-1] ^= 0x01  # the envelope's last field is sig: its last byte
    # An outsider's key, and a trusted key signing a bid that claims to come from someone else.
    outsider_bid = seal(_with(bid, sender=keys["outsider"].id), keys["outsider"])
    # seal() makes neither (its sender must be the signer, its type a frame's): sign them by hand.
    impersonation = encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, encode(bid), requester))
    cert_typed = encode_envelope(sign_envelope(PAYLOAD_TYPE_CERT, encode(bid), contractor))
    revoked_bid = seal(_with(bid, sender=keys["revoked"].id), keys["revoked"])
    # Bytes that are no message at all, under a signature that does not verify: a receiver that decoded before
    # verifying would report them malformed (and would have parsed an attacker's bytes first).
    garbage = bytearray(encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, b"\xc1 not msgpack", contractor)))
    garbage[-1] ^= 0x01

    def ok(name: str, frame: bytes, msg: Message, context: dict[str, object], text: str) -> dict[str, object]:
        return {
            "name": name,
            "description": text,
            "frame_hex": frame.hex(),
            "now_ns": NOW_NS,
            "context": context,
            "expect": {
                "ok": True,
                "type": type(msg).__name__,
                "signer": msg.sender,
                "payload_sha256": payload_digest(encode(msg)),
            },
        }

    def bad(name: str, frame: bytes, reason: str, text: str, **extra: object) -> dict[str, object]:
        return {
            "name": name,
            "description": text,
            "frame_hex": frame.hex(),
            "now_ns": extra.get("now_ns", NOW_NS),
            "context": extra.get("context", task),
            "expect": {"ok": False, "reason": reason},
        }

    return [
        ok("bid", good_bid, bid, task, "A bid by the contractor (RFC 8032 TEST 1 key)."),
        ok(
            "award",
            seal(award, requester),
            award,
            {**task, "recipient": contractor.id},
            "The requester (TEST 2 key) awards the task to the contractor.",
        ),
        ok(
            "award_ack", seal(ack, contractor), ack, {**task, "award_id": award.id}, "The contractor acknowledges."
        ),
        ok(
            "result",
            seal(result, contractor),
            result,
            {**task, "award_id": award.id, "sender": contractor.id},
            "The result, carrying the attestation of attestation.dsse.json.",
        ),
        bad("bid-bad-signature", bytes(bad_sig), "bad_signature", "The bid with the last signature byte flipped."),
        bad(
            "garbage-bad-signature",
            bytes(garbage),
            "bad_signature",
            "Undecodable payload bytes under a bad signature: refused for the signature, never parsed.",
        ),
        bad("bid-unknown-key", outsider_bid, "unknown_key", "A bid signed by a key no certificate names."),
        bad(
            "bid-revoked", revoked_bid, "revoked", "A bid signed by a key whose certificate (serial 3) is revoked."
        ),
        bad(
            "bid-sender-mismatch",
            impersonation,
            "sender_mismatch",
            "The contractor's bid payload signed by the requester's (trusted) key.",
        ),
        bad(
            "bid-wrong-payload-type",
            cert_typed,
            "wrong_payload_type",
            "A bid payload in an envelope typed as a certificate.",
        ),
        bad("bid-stale", good_bid, "stale", "The good bid, received 61 s after its ts.", now_ns=bid.ts + 61 * S),
        bad("bid-future", good_bid, "future", "The good bid, received 6 s before its ts.", now_ns=bid.ts - 6 * S),
        bad(
            "bid-other-task",
            good_bid,
            "context_mismatch",
            "The good bid, replayed into another task.",
            context={"task_id": _id("other-task"), "attempt": 1},
        ),
    ]


def _with(message: Message, **changes: object) -> Message:
    return msgspec.structs.replace(message, **changes)


def generate() -> dict[str, bytes]:
    """Every vector file, by name, as bytes."""
    keys = _keys()
    story = _story(keys)
    result, statement = story.result, story.attestation
    manifest = {
        "description": "Accord security vectors; see spec/PROTOCOL.md sections 7-10. RFC 8032 test keys: "
        "never trust them outside tests.",
        "trust": "trust.json",
        "replay_guard": {"max_age_ms": 60_000, "max_skew_ms": 5_000},
        "keys": {
            name: {
                "rfc8032_secret_hex": RFC8032_SECRETS[name],
                "public_hex": ident.public_bytes.hex(),
                "id": ident.id,
                "seed": ident.seed,
            }
            for name, ident in keys.items()
        },
        "frames": _frame_vectors(keys, story),
        "attestations": [
            {
                "name": "result-attestation",
                "file": "attestation.dsse.json",
                "output_file": "attestation.output.txt",
                "now_ns": NOW_NS,
                "expect": {
                    "ok": True,
                    "signer": keys["contractor"].id,
                    "task_id": statement.task_id,
                    "requester": statement.requester,
                    "output_sha256": statement.output_digest,
                    "statement_sha256": hashlib.sha256(_statement_bytes(result.attestation)).hexdigest(),
                },
            }
        ],
    }
    return {
        "manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
        "trust.json": _trust_file(keys),
        "attestation.dsse.json": result.attestation,
        "attestation.output.txt": result.output.encode("utf-8"),
    }


def _statement_bytes(envelope: bytes) -> bytes:
    payload: str = json.loads(envelope)["payload"]
    return base64.b64decode(payload)


def write(spec_dir: str | Path) -> list[Path]:
    """Write the vectors under ``spec_dir/vectors/security``; returns the paths written."""
    out = Path(spec_dir) / VECTORS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in generate().items():
        (out / name).write_bytes(data)
        written.append(out / name)
    return written


def _context(raw: object) -> Expect | None:
    if not isinstance(raw, dict):
        return None
    return Expect(
        task_id=raw.get("task_id"),
        attempt=raw.get("attempt"),
        award_id=raw.get("award_id"),
        recipient=raw.get("recipient"),
        sender=raw.get("sender"),
    )


def verify_frame_vector(vector: dict[str, object], trust: TrustStore) -> str | None:
    """None if one manifest frame vector behaves as it says, else the problem."""
    name = vector.get("name")
    frame = bytes.fromhex(str(vector["frame_hex"]))
    now_ns = vector["now_ns"]
    expect = vector["expect"]
    assert isinstance(now_ns, int) and isinstance(expect, dict)
    try:
        opened = open_frame(frame, trust, ReplayGuard(), now_ns, expect=_context(vector.get("context")))
    except SecurityError as exc:
        if expect.get("ok"):
            return f"frame {name}: refused ({exc}) but must verify"
        if exc.reason.value != expect.get("reason"):
            return f"frame {name}: refused with {exc.reason.value}, expected {expect.get('reason')}"
        return None
    if not expect.get("ok"):
        return f"frame {name}: verified but must be refused with {expect.get('reason')}"
    got = (type(opened.message).__name__, opened.signer, opened.digest)
    want = (expect.get("type"), expect.get("signer"), expect.get("payload_sha256"))
    return None if got == want else f"frame {name}: verified as {got}, expected {want}"


def verify_attestation_vector(vector: dict[str, object], directory: Path, trust: TrustStore) -> str | None:
    name = vector.get("name")
    expect = vector["expect"]
    now_ns = vector["now_ns"]
    assert isinstance(expect, dict) and isinstance(now_ns, int)
    try:
        envelope = (directory / str(vector["file"])).read_bytes()
        output = (directory / str(vector["output_file"])).read_bytes()
        verified = verify_attestation(envelope, trust, now_ns, output=output)
    except (SecurityError, OSError) as exc:
        return f"attestation {name}: {exc}"
    got = (verified.signer, verified.statement.task_id, verified.statement.requester, verified.output_digest)
    want = (expect.get("signer"), expect.get("task_id"), expect.get("requester"), expect.get("output_sha256"))
    if got != want or hashlib.sha256(verified.payload).hexdigest() != expect.get("statement_sha256"):
        return f"attestation {name}: verified as {got}, expected {want}"
    return None


def check(spec_dir: str | Path) -> list[str]:
    """Problems with the committed security vectors (empty: all good).

    Every frame and attestation must verify (or be refused with its stated reason) against the committed trust
    file, and every file must equal what :func:`generate` makes now (a difference means the wire changed:
    regenerate with ``python -m accord.spec.security_vectors write spec`` and review the diff).
    """
    directory = Path(spec_dir) / VECTORS_SUBDIR
    problems: list[str] = []
    try:
        manifest = json.loads((directory / "manifest.json").read_text("utf-8"))
        trust = TrustStore.load(directory / str(manifest["trust"]))
    except (OSError, ValueError, KeyError, SecurityError) as exc:
        return [f"{directory}: cannot load the manifest or trust file: {exc}"]
    for vector in manifest.get("frames", []):
        problem = verify_frame_vector(vector, trust)
        if problem:
            problems.append(problem)
    for vector in manifest.get("attestations", []):
        problem = verify_attestation_vector(vector, directory, trust)
        if problem:
            problems.append(problem)
    for name, data in generate().items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_bytes() != data:
            problems.append(
                f"{path}: differs from the generator (python -m accord.spec.security_vectors write spec)"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m accord.spec.security_vectors (write|check) [SPEC_DIR]``."""
    args = sys.argv[1:] if argv is None else argv
    commands: dict[str, Callable[[str], int]] = {"write": _cmd_write, "check": _cmd_check}
    if not args or args[0] not in commands:
        print("usage: python -m accord.spec.security_vectors (write|check) [SPEC_DIR]", file=sys.stderr)
        return 2
    return commands[args[0]](args[1] if len(args) > 1 else "spec")


def _cmd_write(spec_dir: str) -> int:
    for path in write(spec_dir):
        print(path)
    return 0


def _cmd_check(spec_dir: str) -> int:
    problems = check(spec_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
