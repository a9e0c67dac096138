"""Agent certificates and revocation lists: msgspec records an operator signs into an :class:`Envelope`.

A certificate binds an agent id (its public key) to a name, tier, region and the residency and privacy classes
the agent may serve, for ``[not_before_ns, not_after_ns]``. Rotation is a second certificate for the same name
with another key and an overlapping validity; both keys are accepted during the overlap. A revocation list
withdraws certificates by serial (that certificate only) and keys by agent id (every certificate of that key).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta

from accord.errors import LocalProtocolError, RemoteProtocolError
from accord.protocol.codec import decode_as
from accord.protocol.market import Credentials
from accord.protocol.messages import AgentId, Privacy, ResidencyClasses, Tier, TimeNs, Token
from accord.security.envelope import (
    PAYLOAD_TYPE_CERT,
    PAYLOAD_TYPE_REVOCATIONS,
    encode_envelope,
    sign_envelope,
)
from accord.security.errors import FrameError, Reason
from accord.security.identity import Identity
from accord.security.nkeys import KeyKind

__all__ = [
    "RECORD_VERSION",
    "Certificate",
    "OperatorId",
    "RevocationList",
    "credentials_of",
    "Serial",
    "check_record_version",
    "sign_certificate",
    "sign_revocations",
]

OperatorId = Annotated[str, Meta(pattern=r"^O[A-Z2-7]{55}\Z", description="nkey text of an operator key")]
Serial = Annotated[int, Meta(ge=0, le=2**63 - 1)]
MAX_REVOKED: Final = 100_000
RECORD_VERSION: Final = 1
"""The only ``v`` of a certificate or revocation list this build reads; any other is ``unsupported_version``."""


class Certificate(msgspec.Struct, frozen=True, kw_only=True):
    """What an operator vouches for about one agent key. Unknown keys are ignored (spec 2.4, 10.2)."""

    v: int = RECORD_VERSION
    """Any msgpack int on the wire, so that another version is refused as such (check_record_version)."""
    serial: Serial
    """Unique per issuer; revocation by serial withdraws this certificate only."""
    agent_id: AgentId
    name: Token
    """The agent's stable name; several keys (rotation) may carry the same name."""
    tier: Tier
    region: Token
    residency: ResidencyClasses = []
    """Residency classes the agent may serve (a task with ``residency=eu`` needs ``eu`` here)."""
    privacy: Annotated[list[Privacy], Meta(max_length=4)] = msgspec.field(default_factory=lambda: [Privacy.PUBLIC])
    """Privacy classes the agent may serve."""
    not_before_ns: TimeNs
    not_after_ns: TimeNs
    issuer: OperatorId | None = None
    """The signing operator; None only for keys trusted directly (development, never in a signed cert)."""


class RevocationList(msgspec.Struct, frozen=True, kw_only=True):
    """An operator's complete list of revocations; a higher ``number`` from the same issuer replaces it."""

    v: int = RECORD_VERSION
    issuer: OperatorId
    number: Serial
    issued_ns: TimeNs
    serials: Annotated[list[Serial], Meta(max_length=MAX_REVOKED)] = []
    agents: Annotated[list[AgentId], Meta(max_length=MAX_REVOKED)] = []


_encoder: Final = msgspec.msgpack.Encoder(order="deterministic")


def _check_operator(operator: Identity, issuer: str | None) -> None:
    if operator.kind is not KeyKind.OPERATOR:
        raise LocalProtocolError(f"{operator.id} is not an operator key")
    if issuer != operator.id:
        raise LocalProtocolError(f"issuer {issuer} is not the signing operator {operator.id}")


def check_record_version(record: Certificate | RevocationList) -> None:
    """Raise FrameError(unsupported_version) unless ``record.v`` is :data:`RECORD_VERSION` (spec 10.2, 10.3)."""
    if record.v != RECORD_VERSION:
        raise FrameError(Reason.UNSUPPORTED_VERSION, f"{type(record).__name__} v{record.v}, this build reads v1")


def _validated(record: Certificate | RevocationList) -> bytes:
    """Encode, and refuse what no receiver would accept (msgspec checks bounds on decode, not on construction)."""
    if record.v != RECORD_VERSION:
        raise LocalProtocolError(f"a {type(record).__name__} is v{RECORD_VERSION}")
    payload = _encoder.encode(record)
    try:
        decode_as(payload, type(record))
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"invalid {type(record).__name__}: {exc.detail}") from exc
    return payload


def sign_certificate(cert: Certificate, operator: Identity) -> bytes:
    """The signed envelope bytes of ``cert`` (whose ``issuer`` must be ``operator``)."""
    _check_operator(operator, cert.issuer)
    if cert.not_after_ns < cert.not_before_ns:
        raise LocalProtocolError("certificate not_after_ns precedes not_before_ns")
    return encode_envelope(sign_envelope(PAYLOAD_TYPE_CERT, _validated(cert), operator))


def sign_revocations(crl: RevocationList, operator: Identity) -> bytes:
    """The signed envelope bytes of a revocation list (whose ``issuer`` must be ``operator``)."""
    _check_operator(operator, crl.issuer)
    return encode_envelope(sign_envelope(PAYLOAD_TYPE_REVOCATIONS, _validated(crl), operator))


def credentials_of(cert: Certificate) -> Credentials:
    """The market's view of a certificate (spec 10.2): tier, region, residency and privacy classes."""
    return Credentials(
        tier=cert.tier, region=cert.region, residency=frozenset(cert.residency), privacy=frozenset(cert.privacy)
    )
