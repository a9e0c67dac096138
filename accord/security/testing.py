"""A throwaway PKI for tests and examples: one operator, agents with certificates, revocations.

Keys come from an injected ``random.Random`` (deterministic under a seed), never from the OS: this module is
for tests only and its keys MUST NOT be used for anything real.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from accord.protocol.messages import Privacy, Tier
from accord.security.certs import Certificate, RevocationList, sign_certificate, sign_revocations
from accord.security.identity import Identity
from accord.security.nkeys import KeyKind
from accord.security.trust import TrustStore

__all__ = ["Pki", "random_identity"]

_I64_MAX: Final = 2**63 - 1


def random_identity(rng: random.Random, kind: KeyKind = KeyKind.USER) -> Identity:
    """An identity whose secret comes from ``rng`` (deterministic for a seeded rng)."""
    return Identity.from_private_bytes(rng.randbytes(32), kind)


@dataclass
class Pki:
    """An operator, its trust store, and helpers to certify and revoke agents."""

    rng: random.Random = field(default_factory=lambda: random.Random(0))
    operator: Identity = field(init=False)
    trust: TrustStore = field(init=False)
    _serial: int = field(default=0, init=False)
    _revoked_serials: set[int] = field(default_factory=set, init=False)
    _revoked_agents: set[str] = field(default_factory=set, init=False)
    _crl_number: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.operator = random_identity(self.rng, KeyKind.OPERATOR)
        self.trust = TrustStore([self.operator.id])

    def certify(
        self,
        identity: Identity,
        *,
        name: str = "agent",
        tier: Tier = Tier.CLOUD,
        region: str = "eu-central",
        residency: Iterable[str] = ("eu",),
        privacy: Iterable[Privacy] = (Privacy.PUBLIC,),
        not_before_ns: int = 0,
        not_after_ns: int = _I64_MAX,
    ) -> Certificate:
        """Issue a certificate for ``identity`` and add it to the trust store."""
        self._serial += 1
        cert = Certificate(
            serial=self._serial,
            agent_id=identity.id,
            name=name,
            tier=tier,
            region=region,
            residency=list(residency),
            privacy=list(privacy),
            not_before_ns=not_before_ns,
            not_after_ns=not_after_ns,
            issuer=self.operator.id,
        )
        return self.trust.add_certificate(sign_certificate(cert, self.operator))

    def agent(self, name: str = "agent", **cert: Any) -> Identity:
        """A new random agent identity, certified (keyword arguments as for :meth:`certify`)."""
        identity = random_identity(self.rng)
        self.certify(identity, name=name, **cert)
        return identity

    def revoke(self, *, serials: Iterable[int] = (), agents: Iterable[str] = (), now_ns: int = 0) -> None:
        """Publish a new revocation list adding ``serials`` and ``agents``."""
        self._revoked_serials.update(serials)
        self._revoked_agents.update(agents)
        self._crl_number += 1
        crl = RevocationList(
            issuer=self.operator.id,
            number=self._crl_number,
            issued_ns=now_ns,
            serials=sorted(self._revoked_serials),
            agents=sorted(self._revoked_agents),
        )
        self.trust.add_revocations(sign_revocations(crl, self.operator))
