"""Signed-frame vectors (spec 7.1-7.5, 9): the manifest's ``frames``, and how one is checked.

Each vector is a frame with the time and context to receive it at, and what must happen: it verifies (as a
given type, signer and payload digest) or it is refused with a reason (spec 7.8 documents the layout). The good
frames come from the story; the others change one thing each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.messages import MAX_FRAME_BYTES, MESSAGE_TYPES, Cancel, Message
from accord.security.envelope import PAYLOAD_TYPE_CERT, PAYLOAD_TYPE_FRAME, encode_envelope, sign_envelope
from accord.security.errors import SecurityError
from accord.security.frames import Expect, open_frame, seal
from accord.security.replay import ReplayGuard
from accord.security.trust import TrustStore
from accord.spec.decoder_vectors import padded
from accord.spec.rawpack import map_as, pack, repeated
from accord.spec.security_fixtures import (
    CERT_NOT_AFTER_NS,
    CERT_NOT_BEFORE_NS,
    NOW_NS,
    Doc,
    Keys,
    outcome_problem,
    vector_id,
)
from accord.spec.story import S, Story, at

__all__ = ["CONTEXT_KEYS", "context_of", "frame_vectors", "guard_of", "verify_frame_vector"]

CONTEXT_KEYS: Final = ("task_id", "attempt", "award_id", "recipient", "sender", "types")
"""The keys a vector's ``context`` may hold (spec 7.5 step 7, 7.8)."""
_TYPES: Final = {t.__name__: t for t in MESSAGE_TYPES}


def _with(message: Message, **changes: object) -> Message:
    return msgspec.structs.replace(message, **changes)


def frame_vectors(keys: Keys, story: Story) -> list[Doc]:
    contractor, requester, outsider = keys["contractor"], keys["requester"], keys["outsider"]
    bid, award, ack, result = story.bid, story.award, story.award_ack, story.result
    task: Doc = {"task_id": bid.task_id, "attempt": 1}
    good_bid = seal(bid, contractor)
    bad_sig = bytearray(good_bid)
    bad_sig[-1] ^= 0x01  # the envelope's last field is sig: its last byte
    # An outsider's key, and a trusted key signing a bid that claims to come from someone else.
    outsider_bid = seal(_with(bid, sender=outsider.id), outsider)
    # seal() makes neither (its sender must be the signer, its type a frame's): sign them by hand.
    impersonation = encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, encode(bid), requester))
    cert_typed = encode_envelope(sign_envelope(PAYLOAD_TYPE_CERT, encode(bid), contractor))
    revoked_bid = seal(_with(bid, sender=keys["revoked"].id), keys["revoked"])
    # Bytes that are no message at all, under a signature that does not verify: a receiver that decoded before
    # verifying would report them malformed (and would have parsed an attacker's bytes first).
    garbage = bytearray(encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, b"\xc1 not msgpack", contractor)))
    garbage[-1] ^= 0x01
    signed_bid = sign_envelope(PAYLOAD_TYPE_FRAME, encode(bid), contractor)
    env = msgspec.structs.asdict(signed_bid)  # to be varied and packed by hand
    cancel_all = Cancel(
        id=vector_id("cancel-all"), sender=requester.id, ts=at(1_950), task_id=bid.task_id, reason="superseded"
    )
    cancel_one = _with(cancel_all, id=vector_id("cancel-attempt-1"), attempt=1, reason="ack_timeout")
    expiring = _with(bid, id=vector_id("bid-expiring"), expires_ns=at(1_500))

    def ok(name: str, frame: bytes, msg: Message, context: Doc, text: str, **extra: object) -> Doc:
        expect: Doc = {
            "ok": True,
            "type": type(msg).__name__,
            "signer": msg.sender,
            "payload_sha256": payload_digest(encode(msg)),
        }
        if "may_refuse" in extra:
            expect["may_refuse"] = extra["may_refuse"]
        return {
            "name": name,
            "description": text,
            "frame_hex": frame.hex(),
            "now_ns": extra.get("now_ns", NOW_NS),
            "context": context,
            "expect": expect,
            "tamper_evident": extra.get("tamper_evident", True),
        }

    def bad(name: str, frame: bytes, reason: str, text: str, **extra: object) -> Doc:
        doc: Doc = {"name": name, "description": text, "frame_hex": frame.hex()}
        if "padded_length" in extra:
            doc["padded_length"] = extra["padded_length"]
        doc |= {"now_ns": extra.get("now_ns", NOW_NS), "context": extra.get("context", task)}
        if "after" in extra:
            doc["after"] = extra["after"]
        return doc | {"expect": {"ok": False, "reason": reason}}

    def hand_made(name: str, envelope: bytes, text: str, **extra: object) -> Doc:
        """The bid in an envelope varied by hand: it verifies, but a byte change need not break it."""
        return ok(name, envelope, bid, task, text, tamper_evident=False, **extra)

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
            context={"task_id": vector_id("other-task"), "attempt": 1},
        ),
        # --- spec 1.1 ---------------------------------------------------------------------------------------
        ok(
            "cancel-all-attempts",
            seal(cancel_all, requester),
            cancel_all,
            {**task, "attempt": 2, "sender": requester.id},
            "The requester cancels every attempt (attempt null), received in the context of attempt 2: a Cancel "
            "of every attempt matches any attempt (7.5 step 7).",
        ),
        bad(
            "cancel-other-attempt",
            seal(cancel_one, requester),
            "context_mismatch",
            "The requester cancels attempt 1, received in the context of attempt 2.",
            context={**task, "attempt": 2},
        ),
        bad(
            "award-other-recipient",
            seal(award, requester),
            "context_mismatch",
            "The award to the contractor, received by another agent (recipient: Award.winner).",
            context={**task, "recipient": outsider.id},
        ),
        bad(
            "bid-other-type",
            good_bid,
            "context_mismatch",
            "The good bid where only an Award or a Cancel is expected (types are section 3 type names).",
            context={**task, "types": ["Award", "Cancel"]},
        ),
        bad(
            "bid-context-award-id",
            good_bid,
            "context_mismatch",
            "The good bid where an answer to an award is expected: a message without the field the context "
            "names (a bid has no award_id) does not match.",
            context={**task, "award_id": award.id},
        ),
        bad(
            "bid-replay",
            good_bid,
            "replay",
            "The good bid again, after the same guard admitted it (after: bid).",
            after=["bid"],
        ),
        bad(
            "bid-expired",
            seal(expiring, contractor),
            "expired",
            "A bid whose expires_ns (T0 + 1.5 s) has passed by more than max_skew (5 s).",
            now_ns=at(6_501),
        ),
        ok(
            "bid-expired-within-skew",
            seal(expiring, contractor),
            expiring,
            task,
            "A bid whose expires_ns (T0 + 1.5 s) passed 5 s ago on the receiver's clock: within max_skew, the "
            "sender's clock may be that far behind (9.1, 9.3).",
            now_ns=at(6_500),
        ),
        bad(
            "bid-cert-expired",
            good_bid,
            "cert_expired",
            "The good bid after its signer's certificate ended (trust comes before freshness, 7.5 step 3).",
            now_ns=CERT_NOT_AFTER_NS + 1,
        ),
        bad(
            "bid-cert-not-yet-valid",
            good_bid,
            "cert_not_yet_valid",
            "The good bid before its signer's certificate starts.",
            now_ns=CERT_NOT_BEFORE_NS - 1,
        ),
        bad(
            "bid-too-large",
            good_bid,
            "too_large",
            "The good bid padded to 1 MiB + 1 byte: refused for its length before it is parsed.",
            padded_length=MAX_FRAME_BYTES + 1,
        ),
        bad("bid-trailing-bytes", good_bid + b"\xc0", "malformed", "The good bid followed by one byte (nil)."),
        bad("bid-envelope-v2", pack({**env, "v": 2}), "unsupported_version", "The good bid in an envelope v 2."),
        bad(
            "bid-envelope-v256",
            pack({**env, "v": 256}),
            "unsupported_version",
            "The good bid in an envelope v 256: any int but 1 is another version.",
        ),
        hand_made(
            "bid-envelope-unknown-key",
            pack({**env, "added_in_v1_1": "x"}),
            "The good bid's envelope with one more key: ignored (7.1).",
        ),
        hand_made(
            "bid-envelope-keys-reversed",
            pack(dict(reversed(env.items()))),
            "The good bid's envelope with its keys in reverse order.",
        ),
        hand_made(
            "bid-envelope-duplicate-key",
            pack(repeated(env, "key_id", outsider.id)),
            "The good bid's envelope with key_id twice, first the outsider's and last the contractor's: a "
            "receiver that accepts it uses the last occurrence (2.4).",
            may_refuse="malformed",
        ),
        bad(
            "bid-envelope-non-str-key",
            pack(map_as([*env.items(), (1, 1)])),
            "malformed",
            "The good bid's envelope with one more key, the int 1.",
        ),
        bad(
            "bid-payload-type-too-long",
            pack({**env, "payload_type": PAYLOAD_TYPE_FRAME.ljust(129, "+")}),
            "malformed",
            "The good bid's envelope with a payload_type of 129 characters (bound: 128).",
        ),
        bad(
            "bid-key-id-too-long",
            pack({**env, "key_id": contractor.id.ljust(65, "A")}),
            "malformed",
            "The good bid's envelope with a key_id of 65 characters (bound: 64).",
        ),
        bad(
            "bid-sig-too-short",
            pack({**env, "sig": signed_bid.sig[:63]}),
            "malformed",
            "The good bid's envelope with a sig of 63 bytes.",
        ),
        bad(
            "bid-payload-trailing-bytes",
            encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, encode(bid) + b"\xc0", contractor)),
            "malformed",
            "The contractor signs the bid's bytes followed by one byte: it verifies, then does not decode.",
        ),
        bad(
            "bid-payload-v2",
            encode_envelope(sign_envelope(PAYLOAD_TYPE_FRAME, encode(_with(bid, v=2)), contractor)),
            "malformed",
            "The contractor signs the bid with v 2: inside an envelope every decode failure is malformed (7.5).",
        ),
    ]


def context_of(raw: object) -> Expect | None:
    """The receiver's context a vector names (``context``), or None."""
    if not isinstance(raw, Mapping):
        return None
    return Expect(
        task_id=raw.get("task_id"),
        attempt=raw.get("attempt"),
        award_id=raw.get("award_id"),
        recipient=raw.get("recipient"),
        sender=raw.get("sender"),
        types=tuple(_TYPES[name] for name in raw.get("types", ())),
    )


def guard_of(manifest: Mapping[str, object]) -> ReplayGuard:
    """A new replay guard as the manifest's ``replay_guard`` describes it."""
    config = manifest["replay_guard"]
    assert isinstance(config, Mapping)
    return ReplayGuard(
        max_age_ms=config["max_age_ms"], max_skew_ms=config["max_skew_ms"], start_ns=config["start_ns"]
    )


def _open(vector: Mapping[str, object], trust: TrustStore, guard: ReplayGuard) -> tuple[str, str, str]:
    frame = padded(bytes.fromhex(str(vector["frame_hex"])), vector)
    now_ns = vector["now_ns"]
    assert isinstance(now_ns, int)
    opened = open_frame(frame, trust, guard, now_ns, expect=context_of(vector.get("context")))
    return type(opened.message).__name__, opened.signer, opened.digest


def verify_frame_vector(
    vector: Mapping[str, object], trust: TrustStore, manifest: Mapping[str, object]
) -> str | None:
    """None if one manifest frame vector behaves as it says, else the problem."""
    name = vector.get("name")
    expect = vector["expect"]
    frames = manifest["frames"]
    assert isinstance(expect, Mapping) and isinstance(frames, list)
    after = vector.get("after", [])
    assert isinstance(after, list)
    guard = guard_of(manifest)
    try:
        for earlier in after:  # admitted first, by the same guard
            _open(next(v for v in frames if v["name"] == earlier), trust, guard)
        got = _open(vector, trust, guard)
    except SecurityError as exc:
        return outcome_problem(f"frame {name}", expect, exc)
    want = (expect.get("type"), expect.get("signer"), expect.get("payload_sha256"))
    problem = outcome_problem(f"frame {name}", expect, None)
    return problem or (None if got == want else f"frame {name}: verified as {got}, expected {want}")
