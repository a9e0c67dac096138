"""The trust store: operator anchors, operator-signed agent certificates, revocation lists (spec section 10).

Pure: every decision takes ``now_ns``. Loaded public key objects are cached (building one from bytes costs
about as much as a msgpack decode of a small message, so the hot path never does it; see tests/bench/security.py),
and so is each key's verdict: :meth:`TrustStore.check` remembers the certificate it chose together with the span
of time over which that choice cannot change (between the nearest ``not_before_ns`` / ``not_after_ns`` of the
key's certificates around ``now``), so a frame from a known key costs one dict lookup and two comparisons.
Everything that changes the store (a certificate, a revocation list, a direct entry, a merge) forgets every
remembered verdict.
Everything added is verified on the way in, so a trust file with one bad signature does not load at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from accord.errors import RemoteProtocolError
from accord.files import read_capped
from accord.protocol.codec import decode_as
from accord.protocol.messages import Privacy, Tier
from accord.security.certs import Certificate, RevocationList, check_record_version
from accord.security.ed25519 import PublicKey
from accord.security.envelope import (
    PAYLOAD_TYPE_CERT,
    PAYLOAD_TYPE_REVOCATIONS,
    Envelope,
    b64decode_strict,
    b64encode,
    decode_envelope,
    verify_signature,
)
from accord.security.errors import FrameError, Reason, SecurityError, SignatureError, TrustError
from accord.security.identity import public_key_of
from accord.security.keyfile import key_file_errors, write_owner_only
from accord.security.nkeys import KeyKind

__all__ = ["TRUST_FILE_VERSION", "CertStatus", "TrustStore"]

TRUST_FILE_VERSION: Final = 1
_I64_MAX: Final = 2**63 - 1
_MAX_TRUST_FILE: Final = 64 << 20
_MAX_VERDICTS: Final = 65_536
"""Keys whose verdict is remembered; the cache starts over when it would grow past this."""
_S = TypeVar("_S", bound=msgspec.Struct)


class _TrustFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The JSON trust file. Local, versioned, strict: every field required, unknown fields refused."""

    v: int
    operators: list[str]
    certificates: list[str]
    """Base64 (standard, padded) of each certificate's signed envelope bytes."""
    revocations: list[str]
    """Base64 of each operator's latest signed revocation list."""
    direct: list[Certificate]
    """Keys trusted directly, without an operator (development only)."""


_json_encoder: Final = msgspec.json.Encoder(order="deterministic")
_json_decoder: Final = msgspec.json.Decoder(_TrustFile)


@dataclass(frozen=True, slots=True)
class CertStatus:
    """One certificate and its state at a given time (for ``accord keys show``)."""

    certificate: Certificate
    status: str
    """``valid`` or a :class:`Reason` value."""


class TrustStore:
    """Which keys are trusted, as what, and when. Add operators first, then their certificates."""

    def __init__(self, operators: Iterable[str] = ()) -> None:
        self._operators: dict[str, PublicKey] = {}
        self._certs: dict[str, list[Certificate]] = {}
        self._cert_blobs: dict[bytes, Certificate] = {}
        self._crls: dict[str, tuple[RevocationList, bytes]] = {}
        self._revoked_serials: frozenset[tuple[str, int]] = frozenset()
        self._revoked_agents: frozenset[str] = frozenset()
        self._direct: dict[str, Certificate] = {}
        self._keys: dict[str, PublicKey] = {}
        self._verdicts: dict[str, tuple[Certificate, int, int]] = {}
        """agent id -> (the certificate ``check`` chose, from, until): it holds for ``from <= now < until``."""
        for operator in operators:
            self.add_operator(operator)

    # --- building -------------------------------------------------------------------------------------------
    def add_operator(self, operator_id: str) -> None:
        """Trust ``operator_id`` (``O...``) as an issuer of certificates and revocation lists."""
        key = public_key_of(operator_id, KeyKind.OPERATOR)
        if key is None:
            raise FrameError(Reason.MALFORMED, f"{operator_id!r} is not an operator key id")
        self._operators.setdefault(operator_id, key)

    def _open_signed(self, blob: bytes, payload_type: str) -> Envelope:
        envelope = decode_envelope(blob, payload_type)
        key = self._operators.get(envelope.key_id)
        if key is None:
            raise TrustError(Reason.UNKNOWN_ISSUER, f"{envelope.key_id} is not a trusted operator")
        verify_signature(key, envelope.payload_type, envelope.payload, envelope.sig)
        return envelope

    def add_certificate(self, blob: bytes) -> Certificate:
        """Verify an operator-signed certificate envelope and add it. Adding the same bytes twice is a no-op."""
        blob = bytes(blob)
        known = self._cert_blobs.get(blob)
        if known is not None:
            return known
        envelope = self._open_signed(blob, PAYLOAD_TYPE_CERT)
        cert = _decode_payload(envelope.payload, Certificate)
        check_record_version(cert)
        if cert.issuer != envelope.key_id:
            raise SignatureError(Reason.SENDER_MISMATCH, f"certificate names issuer {cert.issuer}")
        key = public_key_of(cert.agent_id, KeyKind.USER)
        if key is None:  # the pattern admits text whose checksum is wrong
            raise FrameError(Reason.MALFORMED, f"{cert.agent_id} is not a valid agent id")
        self._cert_blobs[blob] = cert
        self._certs.setdefault(cert.agent_id, []).append(cert)
        self._keys.setdefault(cert.agent_id, key)
        self._verdicts.clear()
        return cert

    def add_revocations(self, blob: bytes) -> bool:
        """Verify and install an operator's revocation list; False (and no change) if it is not newer."""
        blob = bytes(blob)
        envelope = self._open_signed(blob, PAYLOAD_TYPE_REVOCATIONS)
        crl = _decode_payload(envelope.payload, RevocationList)
        check_record_version(crl)
        if crl.issuer != envelope.key_id:
            raise SignatureError(Reason.SENDER_MISMATCH, f"revocation list names issuer {crl.issuer}")
        current = self._crls.get(crl.issuer)
        if current is not None and current[0].number >= crl.number:
            return False
        self._crls[crl.issuer] = (crl, blob)
        self._revoked_serials = frozenset(
            (issuer, serial) for issuer, (c, _) in self._crls.items() for serial in c.serials
        )
        self._revoked_agents = frozenset(agent for c, _ in self._crls.values() for agent in c.agents)
        self._verdicts.clear()
        return True

    def trust_directly(
        self,
        agent_id: str,
        *,
        name: str,
        tier: Tier = Tier.CLOUD,
        region: str = "local",
        residency: Iterable[str] = (),
        privacy: Iterable[Privacy] = (Privacy.PUBLIC,),
        not_before_ns: int = 0,
        not_after_ns: int = _I64_MAX,
    ) -> Certificate:
        """DEVELOPMENT ONLY: trust a key with no operator certificate (tests, single-process embedding).

        The entry has ``issuer=None``, is saved under ``direct`` in the trust file and is listed as such by
        ``accord keys show``. Agent-id revocations still apply to it.
        """
        key = public_key_of(agent_id, KeyKind.USER)
        if key is None:
            raise FrameError(Reason.MALFORMED, f"{agent_id!r} is not an agent id")
        cert = msgspec.convert(
            {
                "serial": 0,
                "agent_id": agent_id,
                "name": name,
                "tier": tier,
                "region": region,
                "residency": list(residency),
                "privacy": list(privacy),
                "not_before_ns": not_before_ns,
                "not_after_ns": not_after_ns,
            },
            Certificate,
        )
        self._direct[agent_id] = cert
        self._keys.setdefault(agent_id, key)
        self._verdicts.clear()
        return cert

    # --- deciding -------------------------------------------------------------------------------------------
    def check(self, agent_id: str, now_ns: int) -> Certificate:
        """The certificate that makes ``agent_id`` trusted at ``now_ns``, or TrustError with the reason.

        Several valid certificates (renewal): the one valid longest. None valid: ``revoked`` if the key or any
        of its certificates is revoked, else ``cert_not_yet_valid`` if one is yet to start, else
        ``cert_expired``; ``unknown_key`` when no certificate names the key at all.
        """
        cached = self._verdicts.get(agent_id)
        if cached is not None and cached[1] <= now_ns < cached[2]:
            return cached[0]
        if agent_id in self._revoked_agents:
            raise TrustError(Reason.REVOKED, f"key {agent_id} is revoked")
        best: Certificate | None = None
        reasons: set[Reason] = set()
        for cert in self._candidates(agent_id):
            reason = self._invalid_reason(cert, now_ns)
            if reason is not None:
                reasons.add(reason)
            elif best is None or cert.not_after_ns > best.not_after_ns:
                best = cert
        if best is not None:
            self._remember(agent_id, best, now_ns)
            return best
        for reason in (Reason.REVOKED, Reason.CERT_NOT_YET_VALID, Reason.CERT_EXPIRED):
            if reason in reasons:
                raise TrustError(reason, f"no valid certificate for {agent_id}")
        raise TrustError(Reason.UNKNOWN_KEY, f"no certificate for {agent_id}")

    def _remember(self, agent_id: str, cert: Certificate, now_ns: int) -> None:
        """Cache ``cert`` as the verdict for ``agent_id`` until the next validity bound of any of its
        certificates, and from the last one: between two such bounds the set of valid certificates is fixed."""
        lo, hi = -1, _I64_MAX + 1
        for c in self._candidates(agent_id):
            for edge in (c.not_before_ns, c.not_after_ns + 1):
                if edge <= now_ns:
                    lo = max(lo, edge)
                else:
                    hi = min(hi, edge)
        if len(self._verdicts) >= _MAX_VERDICTS:
            self._verdicts.clear()
        self._verdicts[agent_id] = (cert, lo, hi)

    def public_key(self, key_id: str) -> PublicKey | None:
        """The cached public key object of a key this store holds a certificate for (None otherwise)."""
        return self._keys.get(key_id)

    def _candidates(self, agent_id: str) -> Iterator[Certificate]:
        yield from self._certs.get(agent_id, ())
        direct = self._direct.get(agent_id)
        if direct is not None:
            yield direct

    def _invalid_reason(self, cert: Certificate, now_ns: int) -> Reason | None:
        if cert.agent_id in self._revoked_agents:
            return Reason.REVOKED
        if cert.issuer is not None and (cert.issuer, cert.serial) in self._revoked_serials:
            return Reason.REVOKED
        if now_ns < cert.not_before_ns:
            return Reason.CERT_NOT_YET_VALID
        if now_ns > cert.not_after_ns:
            return Reason.CERT_EXPIRED
        return None

    # --- reading --------------------------------------------------------------------------------------------
    @property
    def operators(self) -> tuple[str, ...]:
        return tuple(self._operators)

    def certificates(self, now_ns: int) -> list[CertStatus]:
        """Every certificate (signed, then direct) with its state at ``now_ns``."""
        out = [CertStatus(c, (self._invalid_reason(c, now_ns) or "valid")) for c in self._cert_blobs.values()]
        out += [CertStatus(c, (self._invalid_reason(c, now_ns) or "valid")) for c in self._direct.values()]
        return out

    def revocations(self, issuer: str) -> RevocationList | None:
        """The installed revocation list of ``issuer``, if any."""
        entry = self._crls.get(issuer)
        return None if entry is None else entry[0]

    def all_revocations(self) -> list[RevocationList]:
        return [crl for crl, _ in self._crls.values()]

    # --- files ----------------------------------------------------------------------------------------------
    def merge(self, other: TrustStore) -> int:
        """Add what ``other`` holds and this store does not: operators, certificates, newer revocation lists,
        direct entries (a trust file re-read while a mesh runs); how many certificates were new."""
        for operator in other._operators:
            self.add_operator(operator)
        added = 0
        for blob in other._cert_blobs:
            if blob not in self._cert_blobs:
                self.add_certificate(blob)
                added += 1
        for _, blob in other._crls.values():
            self.add_revocations(blob)
        for agent_id, cert in other._direct.items():
            if agent_id not in self._direct:
                self._direct[agent_id] = cert
                self._keys.setdefault(agent_id, other._keys[agent_id])
                self._verdicts.clear()
        return added

    def without_certificates(self) -> TrustStore:
        """The same operators and revocation lists and nothing else: a store to issue certificates afresh into
        without forgetting a revocation (revocations only ever grow, spec 10.3)."""
        fresh = TrustStore(self._operators)
        for _, blob in self._crls.values():
            fresh.add_revocations(blob)
        return fresh

    def is_revoked(self, agent_id: str) -> bool:
        """Whether the key, or every certificate this store holds for it, is revoked."""
        if agent_id in self._revoked_agents:
            return True
        certs = self._certs.get(agent_id, [])
        return bool(certs) and all((c.issuer, c.serial) in self._revoked_serials for c in certs)

    def to_json(self) -> bytes:
        """The trust file bytes: compact JSON with sorted keys and a final newline."""
        data = _TrustFile(
            v=TRUST_FILE_VERSION,
            operators=list(self._operators),
            certificates=[b64encode(blob) for blob in self._cert_blobs],
            revocations=[b64encode(blob) for _, blob in self._crls.values()],
            direct=list(self._direct.values()),
        )
        return _json_encoder.encode(data) + b"\n"

    @classmethod
    def from_json(cls, data: bytes | str) -> TrustStore:
        """Parse and verify a trust file; every certificate and list must verify against its operators."""
        if len(data) > _MAX_TRUST_FILE:
            raise FrameError(Reason.TOO_LARGE, "trust file too large")
        try:
            parsed = _json_decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise FrameError(Reason.MALFORMED, f"trust file: {exc}") from exc
        if parsed.v != TRUST_FILE_VERSION:
            raise FrameError(Reason.UNSUPPORTED_VERSION, f"trust file v{parsed.v}, this build reads v1")
        store = cls(parsed.operators)
        for text in parsed.certificates:
            store.add_certificate(b64decode_strict(text))
        for count, text in enumerate(parsed.revocations, 1):
            store.add_revocations(b64decode_strict(text))
            if len(store.all_revocations()) != count:  # one list per operator, whichever is newer
                raise FrameError(Reason.MALFORMED, "trust file holds two revocation lists of one operator")
        for cert in parsed.direct:
            check_record_version(cert)
            if cert.issuer is not None:
                raise FrameError(Reason.MALFORMED, "a direct trust entry must not name an issuer")
            store.trust_directly(
                cert.agent_id,
                name=cert.name,
                tier=cert.tier,
                region=cert.region,
                residency=cert.residency,
                privacy=cert.privacy,
                not_before_ns=cert.not_before_ns,
                not_after_ns=cert.not_after_ns,
            )
        return store

    @classmethod
    def load(cls, path: str | Path) -> TrustStore:
        """The trust file at ``path`` (at most :data:`~accord.files.MAX_FILE_BYTES`, a regular file, else
        :class:`~accord.files.FileRefusedError`)."""
        p = Path(path)
        with key_file_errors(p, "trust file "):
            data = read_capped(p)
        try:
            return cls.from_json(data)
        except SecurityError as exc:
            raise type(exc)(exc.reason, f"{p}: {exc.detail}") from exc

    def save(self, path: str | Path) -> None:
        """Write the trust file (mode 0600, replacing any existing file atomically), keeping every revocation
        list the file holds at that moment (merged in; the newer list of an operator wins): no writer ever drops
        a revocation (spec 10.3). Writers hold an exclusive lock on ``<file>.lock`` from that read to the
        write, so two writers cannot lose each other's revocations."""
        path = Path(path)
        with _exclusive(path.with_name(path.name + ".lock")):
            if path.exists():
                with contextlib.suppress(SecurityError):
                    for _, blob in TrustStore.load(path)._crls.values():
                        with contextlib.suppress(SecurityError):  # an operator this store does not know
                            self.add_revocations(blob)
            write_owner_only(path, self.to_json(), force=True)


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _decode_payload(payload: bytes, type_: type[_S]) -> _S:
    try:
        return decode_as(payload, type_)
    except RemoteProtocolError as exc:
        raise FrameError(Reason.MALFORMED, exc.detail or exc.reason) from exc
