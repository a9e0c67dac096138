"""What every security vector is made of: the RFC 8032 test keys, the trust they are given, the story they tell.

Pure and deterministic (Ed25519 signatures are deterministic; ids and times are fixed). The RFC 8032 secrets are
public: these keys MUST NOT be trusted anywhere but in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from accord.protocol.messages import ChatMessage, Privacy, Role, Tier, Timings, Usage
from accord.security.attest import attest
from accord.security.certs import Certificate, RevocationList, sign_certificate, sign_revocations
from accord.security.errors import SecurityError
from accord.security.identity import Identity
from accord.security.nkeys import KeyKind
from accord.security.trust import TrustStore
from accord.spec.story import T0_NS, Answer, Parties, S, Story, Timeline, fixed_id, tell

__all__ = [
    "CERT_NOT_AFTER_NS",
    "CERT_NOT_BEFORE_NS",
    "GUARD_START_NS",
    "NOW_NS",
    "RFC8032_SECRETS",
    "Doc",
    "Keys",
    "certificate",
    "keys",
    "outcome_problem",
    "story",
    "trust_store",
    "vector_id",
]

Doc = dict[str, object]
"""One JSON object of the manifest."""
Keys = dict[str, Identity]
"""The test keys by role: contractor, requester, operator, outsider, revoked."""

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
GUARD_START_NS: Final = T0_NS - 60 * S
"""When the receiver's replay guard started (spec 9.3): before every vector's ``ts`` and ``now_ns``."""
_YEAR_NS: Final = 365 * 24 * 3600 * S
CERT_NOT_BEFORE_NS: Final = T0_NS - _YEAR_NS
CERT_NOT_AFTER_NS: Final = T0_NS + _YEAR_NS

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
# who, serial, name, tier, region, residency classes, privacy classes
_CERTIFIED: Final = (
    ("contractor", 1, "edge-fra-1", Tier.EDGE, "eu-central", ["eu"], [Privacy.PUBLIC, Privacy.INTERNAL]),
    ("requester", 2, "requester-1", Tier.DEVICE, "eu-central", ["eu"], [Privacy.PUBLIC]),
    ("revoked", 3, "edge-old-1", Tier.EDGE, "eu-central", ["eu"], [Privacy.PUBLIC]),
)


def vector_id(label: str) -> str:
    return fixed_id("accord-security-vector", label)


def _story_id(label: str) -> str:
    """The story's ids; these vectors were first made with the acknowledgement labelled ``ack``."""
    return vector_id("ack" if label == "award-ack" else label)


def keys() -> Keys:
    return {
        name: Identity.from_private_bytes(
            bytes.fromhex(secret), KeyKind.OPERATOR if name == "operator" else KeyKind.USER
        )
        for name, secret in RFC8032_SECRETS.items()
    }


def certificate(keys: Keys, who: str) -> Certificate:
    """The certificate the operator gives ``who`` (contractor, requester or revoked)."""
    _, serial, name, tier, region, residency, privacy = next(c for c in _CERTIFIED if c[0] == who)
    return Certificate(
        serial=serial,
        agent_id=keys[who].id,
        name=name,
        tier=tier,
        region=region,
        residency=residency,
        privacy=privacy,
        not_before_ns=CERT_NOT_BEFORE_NS,
        not_after_ns=CERT_NOT_AFTER_NS,
        issuer=keys["operator"].id,
    )


def trust_store(keys: Keys) -> TrustStore:
    """The operator as the one anchor, its certificates for three keys, and its list revoking serial 3."""
    operator = keys["operator"]
    store = TrustStore([operator.id])
    for who, *_ in _CERTIFIED:
        store.add_certificate(sign_certificate(certificate(keys, who), operator))
    crl = RevocationList(issuer=operator.id, number=1, issued_ns=T0_NS, serials=[3], agents=[])
    store.add_revocations(sign_revocations(crl, operator))
    return store


def story(keys: Keys) -> Story:
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


def outcome_problem(label: str, expect: Mapping[str, object], refused: SecurityError | None) -> str | None:
    """What is wrong with a vector's outcome (``refused``: the error it raised, None if it passed) against its
    ``expect`` (``ok``, or the ``reason`` it must be refused with); None if nothing. A vector that passed and
    must pass is then compared with what ``expect`` says it is by the caller."""
    if refused is None:
        return None if expect.get("ok") else f"{label}: verified but must be refused with {expect.get('reason')}"
    if expect.get("ok"):
        return f"{label}: refused ({refused}) but must verify"
    if refused.reason.value != expect.get("reason"):
        return f"{label}: refused with {refused.reason.value}, expected {expect.get('reason')}"
    return None
