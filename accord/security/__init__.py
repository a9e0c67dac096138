"""Identities, signed frames, attestations, the trust store and the replay guard (spec sections 7-10).

Pure: nothing here reads a clock or does I/O except the explicit key- and trust-file functions; every
decision takes ``now_ns``.
"""

from accord.security.attest import (
    INTOTO_PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    VerifiedAttestation,
    attest,
    verify_attestation,
    verify_result_attestation,
)
from accord.security.certs import Certificate, RevocationList, credentials_of, sign_certificate, sign_revocations
from accord.security.envelope import (
    PAYLOAD_TYPE_CERT,
    PAYLOAD_TYPE_FRAME,
    PAYLOAD_TYPE_REVOCATIONS,
    Envelope,
    pae,
)
from accord.security.errors import (
    FrameError,
    KeyFileError,
    Reason,
    ReplayError,
    SecurityError,
    SignatureError,
    TrustError,
)
from accord.security.frames import Expect, Opened, open_frame, peek, seal, verify
from accord.security.identity import (
    Identity,
    check_creds_for,
    creds_user_key,
    load_identity,
    public_key_of,
    save_identity,
)
from accord.security.nkeys import KeyKind
from accord.security.permissions import agent_permissions, certified_permissions, inbox_prefix, kv_award_key
from accord.security.replay import ReplayGuard
from accord.security.trust import CertStatus, TrustStore

__all__ = [
    "INTOTO_PAYLOAD_TYPE",
    "PAYLOAD_TYPE_CERT",
    "PAYLOAD_TYPE_FRAME",
    "PAYLOAD_TYPE_REVOCATIONS",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "CertStatus",
    "Certificate",
    "Envelope",
    "Expect",
    "FrameError",
    "Identity",
    "KeyFileError",
    "KeyKind",
    "Opened",
    "Reason",
    "ReplayError",
    "ReplayGuard",
    "RevocationList",
    "SecurityError",
    "SignatureError",
    "TrustError",
    "TrustStore",
    "VerifiedAttestation",
    "agent_permissions",
    "attest",
    "certified_permissions",
    "check_creds_for",
    "creds_user_key",
    "credentials_of",
    "inbox_prefix",
    "kv_award_key",
    "load_identity",
    "open_frame",
    "pae",
    "peek",
    "public_key_of",
    "save_identity",
    "seal",
    "sign_certificate",
    "sign_revocations",
    "verify",
    "verify_attestation",
    "verify_result_attestation",
]
