"""A mesh's state dir: its keys and trust file, shared by `accord up`, `accord ask` and `accord agents`.

With no trust file configured the mesh is its own operator: it creates an operator key once and certifies every
agent and the local requester with the residency and privacy classes of the mesh file.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from accord.logs import get_logger
from accord.mesh.config import MeshConfig, MeshConfigError, StrategyBackendConfig
from accord.protocol.messages import Privacy, Tier
from accord.routing.store import OutcomeStore
from accord.security import (
    Certificate,
    Identity,
    KeyKind,
    SecurityError,
    TrustStore,
    load_identity,
    save_identity,
)
from accord.security.certs import sign_certificate

__all__ = ["REQUESTER_NAME", "MeshState", "gateway_requester_name", "load_trust"]

log = get_logger(__name__)

_YEAR_NS = 365 * 24 * 3600 * 10**9
REQUESTER_NAME = "requester"
"""The identity name of the mesh's local requester (what `accord ask` signs with)."""


@dataclass
class MeshState:
    """Keys and trust of one mesh, kept in its state dir."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def trust_file(self) -> Path:
        return self.directory / "trust.json"

    @property
    def url_file(self) -> Path:
        return self.directory / "nats.url"

    @property
    def outcomes_file(self) -> Path:
        return self.directory / "outcomes.sqlite3"

    def outcome_store(self) -> OutcomeStore:
        """The mesh's outcome store (created on first use): every attempt its requesters awarded, and how it
        ended; the reputation of its agents across processes."""
        return OutcomeStore(self.outcomes_file)

    def identity(self, name: str, kind: KeyKind = KeyKind.USER) -> Identity:
        """The identity stored under ``name`` (created on first use, mode 0600; commands that start at once
        agree on one key: creation holds the state dir's lock)."""
        path = self.directory / "keys" / f"{name}.seed"
        if path.exists():
            return load_identity(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.locked():
            if path.exists():
                return load_identity(path)
            identity = Identity.generate(kind)
            save_identity(identity, path)
            return identity

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state dir's lock (keys and the trust file are made under it)."""
        fd = os.open(self.directory / "state.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def certify_all(self, config: MeshConfig, identities: dict[str, Identity]) -> TrustStore:
        """Make this mesh the operator of its own agents: a trust file with one certificate per identity.

        An existing trust file in the state dir is reused and only extended: identities it does not certify as
        the mesh file describes them (new agents, changed ones, the HTTP API's callers) get a certificate added,
        so several ``accord up --only NAME`` processes and ``accord serve`` share one file, and running agents
        pick up what is added (:func:`accord.mesh.run.run_mesh` follows the file). Its revocation lists are
        never dropped, and a revoked key is never certified again (``accord keys revoke``; delete the key's
        seed file to give the agent a new identity).
        """
        operator = self.identity("operator", KeyKind.OPERATOR)
        with self.locked():
            return self._certify_all(config, identities, operator)

    def _certify_all(self, config: MeshConfig, identities: dict[str, Identity], operator: Identity) -> TrustStore:
        now = time.time_ns()
        wanted = {name: self._describe(config, name, identity) for name, identity in identities.items()}
        trust = TrustStore([operator.id])
        if self.trust_file.exists():
            try:
                existing = TrustStore.load(self.trust_file)
                if existing.operators == (operator.id,):
                    trust = existing  # extended, never replaced: running agents merge what is added
            except SecurityError as exc:
                log.warning("mesh.trust_file_replaced", file=str(self.trust_file), error=str(exc))
        revoked = sorted(name for name, c in wanted.items() if trust.is_revoked(c.agent_id))
        for name in revoked:  # never certified again: a revocation sticks (a new key is a new identity)
            log.warning("mesh.key_revoked", name=name, key=wanted.pop(name).agent_id)
        missing = {name: c for name, c in wanted.items() if not _covers(trust, {name: c}, operator.id, now)}
        if not missing:
            return trust
        if any(_certified(trust, cert.agent_id, now) for cert in missing.values()):
            # a description changed (or a certificate runs out): issue every certificate afresh, so that no old
            # certificate keeps granting what the mesh file no longer says; the revocation lists stay
            trust, missing = trust.without_certificates(), wanted
        for serial, (_name, cert) in enumerate(sorted(missing.items()), start=1):
            cert = msgspec.structs.replace(
                cert,
                serial=int(now // 1000) + serial,
                not_before_ns=now - 3600 * 10**9,
                not_after_ns=now + _YEAR_NS,
                issuer=operator.id,
            )
            trust.add_certificate(sign_certificate(cert, operator))
        trust.save(self.trust_file)
        return trust

    @staticmethod
    def _describe(config: MeshConfig, name: str, identity: Identity) -> Certificate:
        """The certificate fields the mesh file implies for ``name`` (validity and issuer left to the caller)."""
        agent = next((a for a in config.agents if name in a.replica_names()), None)
        return Certificate(
            serial=0,
            agent_id=identity.id,
            name=name,
            tier=agent.tier if agent else Tier.EDGE,
            region=agent.region if agent else "local",
            residency=list(agent.residency) if agent else _all_residencies(config),
            privacy=list(agent.privacy) if agent else list(Privacy),
            not_before_ns=0,
            not_after_ns=0,
            issuer="",
        )


def _covers(trust: TrustStore, wanted: dict[str, Certificate], operator: str, now: int) -> bool:
    """True if ``trust`` certifies every wanted identity, by ``operator``, as described, for at least a day."""
    for want in wanted.values():
        try:
            cert = trust.check(want.agent_id, now)
        except SecurityError:
            return False
        if (
            cert.issuer != operator
            or cert.not_after_ns < now + 24 * 3600 * 10**9
            or (cert.name, cert.tier, cert.region, sorted(cert.residency), sorted(cert.privacy))
            != (want.name, want.tier, want.region, sorted(want.residency), sorted(want.privacy))
        ):
            return False
    return True


def _certified(trust: TrustStore, agent_id: str, now: int) -> bool:
    try:
        trust.check(agent_id, now)
    except SecurityError:
        return False
    return True


def _all_residencies(config: MeshConfig) -> list[str]:
    return sorted({r for a in config.agents for r in a.residency})[:16]


def load_trust(
    config: MeshConfig,
    state: MeshState,
    *,
    require: Iterable[str] = (),
    requesters: Mapping[str, Identity] | None = None,
) -> tuple[TrustStore, dict[str, Identity]]:
    """Identities of every agent replica and of the local requester, and the trust store that covers them.

    ``requesters``: more requester identities by name (the HTTP API's callers), certified like the local
    requester when the mesh is its own operator, and required to be trusted otherwise. With a trust file
    configured, every identity named in ``require`` must be trusted by it now; otherwise MeshConfigError names
    the agent, its key and the reason (an unknown key would only be refused by every peer, silently).
    """
    identities: dict[str, Identity] = {}
    gateways: dict[str, str] = {}  # a gateway agent -> the identity name of its own requester
    for agent in config.agents:
        for name in agent.replica_names():
            identities[name] = load_identity(agent.key) if agent.key and agent.count == 1 else state.identity(name)
            if isinstance(agent.backend, StrategyBackendConfig):
                gateways[name] = gateway_requester_name(name)
                identities[gateways[name]] = state.identity(gateways[name])
    identities[REQUESTER_NAME] = state.identity(REQUESTER_NAME)
    identities.update(requesters or {})
    require = [n for name in require for n in (name, gateways.get(name)) if n is not None]
    require += list(requesters or {})
    if config.trust.file is None:
        return state.certify_all(config, identities), identities
    trust = TrustStore.load(config.trust.file)
    now = time.time_ns()
    for name in require:
        identity = identities.get(name)
        if identity is None:
            raise MeshConfigError(f"no agent named {name!r} in the mesh file")
        try:
            trust.check(identity.id, now)
        except SecurityError as exc:
            raise MeshConfigError(
                f"{name}: its key {identity.id} is not trusted by {config.trust.file} "
                f"({exc.reason.value}); certify it with `accord keys issue` or fix the key file"
            ) from exc
    return trust, identities


def gateway_requester_name(agent: str) -> str:
    """The identity under which a gateway agent's own requester runs its strategy's tasks."""
    return f"{agent}-requester"
