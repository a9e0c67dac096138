"""Attestation vectors (spec 8): the manifest's ``attestations``, and how one is checked.

The first is the story's attestation, in its own files (``attestation.dsse.json`` and the output it attests,
``attestation.output.txt``). The others are inline JSON texts (``envelope_text``), each changing one thing; the
ones that must get past the signature check are signed again by the key they name.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from accord.protocol.codec import encode_json
from accord.security.attest import INTOTO_PAYLOAD_TYPE, MAX_ATTESTATION_BYTES, verify_attestation
from accord.security.envelope import b64encode, pae
from accord.security.errors import SecurityError
from accord.security.identity import Identity
from accord.security.trust import TrustStore
from accord.spec.decoder_vectors import padded
from accord.spec.frame_vectors import context_of
from accord.spec.security_fixtures import NOW_NS, Doc, Keys, outcome_problem, vector_id
from accord.spec.story import Story

__all__ = ["attestation_vectors", "verify_attestation_vector"]


def _compact(value: object, *, sort_keys: bool = True) -> str:
    """JSON as Accord writes it (8.1, 8.2): no insignificant whitespace, keys sorted at every level."""
    return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False)


def _dsse(payload: bytes, *signers: Identity, payload_type: str = INTOTO_PAYLOAD_TYPE, **extra: object) -> str:
    signatures = [{"keyid": s.id, "sig": b64encode(s.sign(pae(INTOTO_PAYLOAD_TYPE, payload)))} for s in signers]
    return _compact(
        {"payload": b64encode(payload), "payloadType": payload_type, "signatures": signatures, **extra}
    )


def _expect_ok(signer: str, payload: bytes) -> Doc:
    statement = json.loads(payload)
    predicate = statement["predicate"]
    return {
        "ok": True,
        "signer": signer,
        "task_id": predicate["task_id"],
        "requester": predicate["requester"],
        "output_sha256": predicate["output_digest"],
        "statement_sha256": hashlib.sha256(payload).hexdigest(),
        "ts": predicate["ts"],
    }


def attestation_vectors(keys: Keys, story: Story) -> list[Doc]:
    contractor, requester, outsider = keys["contractor"], keys["requester"], keys["outsider"]
    good = story.result.attestation
    envelope = json.loads(good)
    payload = base64.b64decode(envelope["payload"])
    statement = json.loads(payload)
    predicate = statement["predicate"]
    [signature] = envelope["signatures"]
    context: Doc = {"task_id": story.task_id, "attempt": 1, "recipient": requester.id}

    def inline(name: str, text: str, envelope_text: str, **extra: object) -> Doc:
        doc: Doc = {"name": name, "description": text, "envelope_text": envelope_text}
        if "padded_length" in extra:
            doc["padded_length"] = extra["padded_length"]
        doc |= {
            "output_text": extra.get("output_text", story.result.output),
            "now_ns": NOW_NS,
            "context": extra.get("context", context),
        }
        if "reason" in extra:
            return doc | {"expect": {"ok": False, "reason": extra["reason"]}}
        statement_bytes = extra["statement"]
        assert isinstance(statement_bytes, bytes)
        expect = _expect_ok(contractor.id, statement_bytes)
        return doc | {"expect": expect | ({"may_refuse": extra["may_refuse"]} if "may_refuse" in extra else {})}

    def signed(
        name: str, text: str, changed: Mapping[str, object], reason: str, signer: Identity = contractor
    ) -> Doc:
        """The statement with some keys changed, signed again (so that only the change can be refused)."""
        return inline(name, text, _dsse(_compact({**statement, **changed}).encode(), signer), reason=reason)

    unsorted = {
        "_type": statement["_type"],
        "subject": statement["subject"],
        "predicateType": statement["predicateType"],
        "predicate": json.loads(encode_json(story.attestation)),  # the order of 2.5, not sorted
    }
    unsorted_bytes = _compact(unsorted, sort_keys=False).encode()
    extended = {
        **statement,
        "x_note": "added by a newer minor version",
        "subject": [
            {
                **statement["subject"][0],
                "x_uri": "urn:x",
                "digest": {"sha512": "0" * 128, "sha256": predicate["output_digest"]},
            }
        ],
        "predicate": {**predicate, "added_in_v1_1": 1},
    }
    extended_bytes = _compact(extended).encode()
    extended_envelope = json.loads(_dsse(extended_bytes, contractor)) | {"x_envelope": 1}
    extended_envelope["signatures"][0]["x_sig"] = 1
    duplicated_text = _compact(statement).replace(
        '"predicateType":', '"predicateType":"urn:other","predicateType":', 1
    )
    duplicated_bytes = duplicated_text.encode()
    wrong = {**predicate, "output_digest": "f" * 64}
    return [
        {
            "name": "result-attestation",
            "description": "The attestation the result frame carries, and the output it attests.",
            "file": "attestation.dsse.json",
            "output_file": "attestation.output.txt",
            "now_ns": NOW_NS,
            "expect": _expect_ok(contractor.id, payload),
            "tamper_evident": True,
        },
        inline(
            "attestation-keys-unsorted",
            "A statement whose keys are not sorted (the predicate in the order of 2.5), signed: a verifier checks "
            "the bytes it received and never depends on key order.",
            _dsse(unsorted_bytes, contractor),
            statement=unsorted_bytes,
        ),
        inline(
            "attestation-unknown-keys",
            "Unknown keys in the envelope, a signature entry, the statement, the subject, its digest set and the "
            "predicate: all ignored.",
            _compact(extended_envelope),
            statement=extended_bytes,
        ),
        inline(
            "attestation-duplicate-key",
            "A statement with predicateType twice, first urn:other and last the right one: a verifier that "
            "accepts it uses the last occurrence (2.4).",
            _dsse(duplicated_bytes, contractor),
            statement=duplicated_bytes,
            may_refuse="malformed",
        ),
        inline(
            "attestation-second-signature",
            "Two signatures, the first by an untrusted key: the first entry that verifies makes the signer.",
            _compact(
                {**envelope, "signatures": [json.loads(_dsse(payload, outsider))["signatures"][0], signature]}
            ),
            statement=payload,
        ),
        inline(
            "attestation-too-large",
            "The good envelope padded with spaces to 64 KiB + 1 byte (still valid JSON): refused for its length.",
            good.decode("ascii"),
            padded_length=MAX_ATTESTATION_BYTES + 1,
            reason="too_large",
        ),
        inline("attestation-not-json", "Not JSON.", "not json", reason="malformed"),
        inline(
            "attestation-wrong-payload-type",
            "The good envelope typed application/json.",
            _compact({**envelope, "payloadType": "application/json"}),
            reason="wrong_payload_type",
        ),
        inline(
            "attestation-payload-unpadded",
            "The good envelope with the payload's base64 padding removed (only the canonical form is accepted).",
            _compact({**envelope, "payload": envelope["payload"].rstrip("=")}),
            reason="malformed",
        ),
        inline(
            "attestation-no-signatures",
            "No signature (1 to 8 are allowed).",
            _compact({**envelope, "signatures": []}),
            reason="malformed",
        ),
        inline(
            "attestation-nine-signatures",
            "The good signature nine times (1 to 8 are allowed).",
            _compact({**envelope, "signatures": [signature] * 9}),
            reason="malformed",
        ),
        inline(
            "attestation-sig-not-base64",
            "The only signature's sig is not base64.",
            _compact({**envelope, "signatures": [{**signature, "sig": "!" * 88}]}),
            reason="malformed",
        ),
        inline(
            "attestation-sig-too-short",
            "The only signature's sig holds 63 bytes.",
            _compact(
                {
                    **envelope,
                    "signatures": [{**signature, "sig": b64encode(base64.b64decode(signature["sig"])[:63])}],
                }
            ),
            reason="malformed",
        ),
        inline(
            "attestation-unknown-signer",
            "The statement signed only by a key no certificate names.",
            _dsse(payload, outsider),
            reason="unknown_key",
        ),
        inline(
            "attestation-bad-signature",
            "The contractor's signature of another statement.",
            _compact({**envelope, "signatures": [json.loads(_dsse(unsorted_bytes, contractor))["signatures"][0]]}),
            reason="bad_signature",
        ),
        inline(
            "attestation-statement-not-json",
            "A signed payload that is not JSON.",
            _dsse(b"not json", contractor),
            reason="malformed",
        ),
        signed(
            "attestation-wrong-statement-type",
            "A statement of another _type (in-toto v0.1).",
            {"_type": "https://in-toto.io/Statement/v0.1"},
            "wrong_payload_type",
        ),
        signed(
            "attestation-wrong-predicate-type",
            "A statement with another predicateType (SLSA provenance).",
            {"predicateType": "https://slsa.dev/provenance/v1"},
            "wrong_payload_type",
        ),
        signed(
            "attestation-predicate-out-of-bounds",
            "A predicate with attempt 0 (bound: 1..1000): the predicate is a v1 Attestation with its bounds.",
            {"predicate": {**predicate, "attempt": 0}},
            "malformed",
        ),
        signed(
            "attestation-predicate-v2",
            "A predicate with v 2.",
            {"predicate": {**predicate, "v": 2}},
            "malformed",
        ),
        signed(
            "attestation-predicate-without-type",
            "A predicate without its type key.",
            {"predicate": {k: v for k, v in predicate.items() if k != "type"}},
            "malformed",
        ),
        signed(
            "attestation-two-subjects",
            "Two subjects (exactly one is allowed).",
            {"subject": statement["subject"] * 2},
            "output_mismatch",
        ),
        signed(
            "attestation-seventeen-subjects",
            "Seventeen subjects (the shape allows 1 to 16).",
            {"subject": statement["subject"] * 17},
            "malformed",
        ),
        signed(
            "attestation-subject-not-predicate",
            "A subject digest that differs from the predicate's output_digest.",
            {"predicate": wrong},
            "output_mismatch",
        ),
        signed(
            "attestation-agent-not-signer",
            "The contractor's statement signed by the requester's (trusted) key.",
            {},
            "sender_mismatch",
            requester,
        ),
        inline(
            "attestation-other-requester",
            "The good attestation checked by another requester.",
            good.decode("ascii"),
            context={**context, "recipient": outsider.id},
            reason="context_mismatch",
        ),
        inline(
            "attestation-other-task",
            "The good attestation checked for another task.",
            good.decode("ascii"),
            context={**context, "task_id": vector_id("other-task")},
            reason="context_mismatch",
        ),
        inline(
            "attestation-other-output",
            "The good attestation checked against another output.",
            good.decode("ascii"),
            output_text=story.result.output + ".",
            reason="output_mismatch",
        ),
    ]


def _envelope_and_output(vector: Mapping[str, object], directory: Path) -> tuple[bytes, bytes | None]:
    if "file" in vector:
        return (directory / str(vector["file"])).read_bytes(), (
            directory / str(vector["output_file"])
        ).read_bytes()
    output = vector.get("output_text")
    envelope = padded(str(vector["envelope_text"]).encode("utf-8"), vector)
    return envelope, None if output is None else str(output).encode("utf-8")


def verify_attestation_vector(vector: Mapping[str, object], directory: Path, trust: TrustStore) -> str | None:
    """None if one manifest attestation vector behaves as it says, else the problem."""
    name = vector.get("name")
    expect = vector["expect"]
    now_ns = vector["now_ns"]
    assert isinstance(expect, Mapping) and isinstance(now_ns, int)
    try:
        envelope, output = _envelope_and_output(vector, directory)
        verified = verify_attestation(
            envelope, trust, now_ns, output=output, expect=context_of(vector.get("context"))
        )
    except OSError as exc:
        return f"attestation {name}: {exc}"
    except SecurityError as exc:
        return outcome_problem(f"attestation {name}", expect, exc)
    problem = outcome_problem(f"attestation {name}", expect, None)
    if problem:
        return problem
    statement = verified.statement
    got = (verified.signer, statement.task_id, statement.requester, verified.output_digest, statement.ts)
    want = tuple(expect.get(k) for k in ("signer", "task_id", "requester", "output_sha256", "ts"))
    if got != want or hashlib.sha256(verified.payload).hexdigest() != expect.get("statement_sha256"):
        return f"attestation {name}: verified as {got}, expected {want}"
    return None
