"""Decentralised NATS auth for tests, without `nsc`: an operator, its accounts and their users as NATS JWT v2.

A JWT is ``<header>.<claims>.<signature>``, each part base64url without padding: the header is
``{"typ":"JWT","alg":"ed25519-nkey"}``; the claims carry ``jti`` (base32, unpadded, of SHA-512/256 over the
standard claims with an empty ``jti``, as the nats-io/jwt v2 library computes it), ``iat``, ``iss`` (the signer's
public nkey), ``sub`` (the subject's public nkey), ``name`` and a ``nats`` object with the ``type`` (``operator``,
``account``, ``user``), ``version`` 2 and the type's fields; the signature is Ed25519 by the issuer over
``<header>.<claims>``. An operator signs accounts, an account (or one of its signing keys, then the user names
the account in ``issuer_account``) signs users. A user's ``pub``/``sub``/``resp`` permissions are nats-server's
``publish``/``subscribe``/``allow_responses`` blocks under their JWT names (:func:`jwt_permissions`).

The server side is nats-server's ``operator`` (the operator JWT), ``system_account`` and the MEMORY resolver with
every account JWT preloaded (:meth:`DecentralisedAuth.server_config`, given to
:class:`accord.bus.server.NatsServer` as ``extra``). A client connects with a ``.creds`` file: the decorated user
JWT, then the decorated user seed (:func:`write_creds`, mode 0600 like every key file)::

    auth = DecentralisedAuth()
    server = NatsServer(jetstream=False, extra=auth.server_config())
    creds = auth.account.creds(path, user_seed=identity.seed, permissions=agent_permissions(identity.id))
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import nkeys

from accord.security.keyfile import write_owner_only

__all__ = [
    "Account",
    "DecentralisedAuth",
    "Operator",
    "encode_jwt",
    "jwt_permissions",
    "new_seed",
    "public_key",
    "write_creds",
]

_HEADER: Final = {"typ": "JWT", "alg": "ed25519-nkey"}
_UNLIMITED: Final = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
"""An account's limits: none (nats-io/jwt v2 ``OperatorLimits``: NATS, account and JetStream limits inline)."""

_CLAIMS_ORDER: Final = ("aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub")
"""The standard claims in the order Go's encoding/json writes ``ClaimsData`` (the jti hash is over this)."""


def new_seed(prefix: int) -> str:
    """A fresh seed (``SO...``, ``SA...``, ``SU...``) for ``nkeys.PREFIX_BYTE_OPERATOR|ACCOUNT|USER``."""
    return str(nkeys.encode_seed(os.urandom(32), prefix).decode("ascii"))


def public_key(seed: str) -> str:
    """The public nkey (``O...``, ``A...``, ``U...``) of a seed."""
    return str(nkeys.from_seed(bytearray(seed.encode("ascii"))).public_key.decode("ascii"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_jwt(
    signer_seed: str,
    *,
    subject: str,
    name: str,
    nats: Mapping[str, Any],
    expires: int | None = None,
    issued_at: int | None = None,
) -> str:
    """A NATS JWT v2 with ``nats`` as its type-specific part, signed by ``signer_seed`` (which sets ``iss``)."""
    std: dict[str, Any] = {
        "exp": expires,
        "iat": int(time.time()) if issued_at is None else issued_at,
        "iss": public_key(signer_seed),
        "name": name,
        "sub": subject,
    }
    std = {k: std[k] for k in _CLAIMS_ORDER if std.get(k) is not None}
    std["jti"] = base64.b32encode(hashlib.new("sha512_256", _json(std)).digest()).rstrip(b"=").decode("ascii")
    claims = {**std, "nats": {**nats, "version": 2}}
    signing_input = f"{_b64(_json(_HEADER))}.{_b64(_json(claims))}"
    signature = nkeys.from_seed(bytearray(signer_seed.encode("ascii"))).sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64(signature)}"


def jwt_permissions(permissions: Mapping[str, Any]) -> dict[str, Any]:
    """A nats-server ``permissions`` block (``publish``, ``subscribe``, ``allow_responses``; e.g.
    :func:`accord.security.agent_permissions`) under the names a user JWT gives them (``pub``, ``sub``,
    ``resp``)."""
    out: dict[str, Any] = {}
    for server_name, jwt_name in (("publish", "pub"), ("subscribe", "sub")):
        block = permissions.get(server_name)
        if block is None:
            continue
        if not isinstance(block, Mapping):  # a bare list means "allow these"
            block = {"allow": list(block)}
        out[jwt_name] = {k: list(v) for k, v in block.items() if k in ("allow", "deny") and v}
    responses = permissions.get("allow_responses")
    if responses:
        limits = responses if isinstance(responses, Mapping) else {}
        out["resp"] = {"max": int(limits.get("max", 1)), "ttl": 0}  # ttl 0: the server's default expiry
    return out


def write_creds(path: Path, user_jwt: str, user_seed: str) -> Path:
    """A ``.creds`` file (user JWT, then the user seed, each in its decorated block) with mode 0600."""
    if not user_seed.startswith("SU"):
        raise ValueError("a creds file holds a user seed (SU...)")
    text = (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
    write_owner_only(path, text.encode("ascii"), force=True)
    return path


class Operator:
    """An operator key and the accounts it signs."""

    def __init__(self, name: str = "accord-op", *, system_account: str | None = None) -> None:
        self.name = name
        self.seed = new_seed(nkeys.PREFIX_BYTE_OPERATOR)
        self.id = public_key(self.seed)
        self.system_account = system_account

    def jwt(self) -> str:
        nats: dict[str, Any] = {"type": "operator"}
        if self.system_account is not None:
            nats["system_account"] = self.system_account
        return encode_jwt(self.seed, subject=self.id, name=self.name, nats=nats)

    def account(self, name: str, *, signing_key: bool = False) -> Account:
        """A new account signed by this operator (with a signing key of its own for users, if asked)."""
        return Account(self, name, signing_key=signing_key)


class Account:
    """An account key (and optionally a signing key) and the users it signs."""

    def __init__(self, operator: Operator, name: str, *, signing_key: bool = False) -> None:
        self.operator = operator
        self.name = name
        self.seed = new_seed(nkeys.PREFIX_BYTE_ACCOUNT)
        self.id = public_key(self.seed)
        self.signing_seed = new_seed(nkeys.PREFIX_BYTE_ACCOUNT) if signing_key else None

    def jwt(self) -> str:
        nats: dict[str, Any] = {"type": "account", "limits": dict(_UNLIMITED)}
        if self.signing_seed is not None:
            nats["signing_keys"] = [public_key(self.signing_seed)]
        return encode_jwt(self.operator.seed, subject=self.id, name=self.name, nats=nats)

    def user_jwt(
        self,
        user: str,
        *,
        name: str = "user",
        permissions: Mapping[str, Any] | None = None,
        signer: str | None = None,
        expires: int | None = None,
    ) -> str:
        """A user JWT for the public key ``user`` (``U...``) with nats-server ``permissions`` (None: none).

        Signed by the account's signing key when it has one (``issuer_account`` then names the account), else by
        the account key; ``signer`` (a seed) overrides either, to forge a user the account never issued."""
        nats: dict[str, Any] = {"type": "user", **jwt_permissions(permissions or {})}
        nats.update({"subs": -1, "data": -1, "payload": -1})
        seed = signer or self.signing_seed or self.seed
        if seed != self.seed:
            nats["issuer_account"] = self.id
        return encode_jwt(seed, subject=user, name=name, nats=nats, expires=expires)

    def creds(
        self,
        path: Path,
        *,
        user_seed: str | None = None,
        name: str = "user",
        permissions: Mapping[str, Any] | None = None,
        signer: str | None = None,
        expires: int | None = None,
    ) -> Path:
        """A creds file for a user of this account: ``user_seed`` (e.g. an agent's own key, so the connection is
        authenticated as the key that signs its frames) or a fresh user key."""
        seed = user_seed if user_seed is not None else new_seed(nkeys.PREFIX_BYTE_USER)
        token = self.user_jwt(public_key(seed), name=name, permissions=permissions, signer=signer, expires=expires)
        return write_creds(path, token, seed)


class DecentralisedAuth:
    """An operator with a system account and one application account, as nats-server's MEMORY resolver serves
    them. ``preload`` lists the accounts the server knows; an account left out of it is unknown to the server."""

    def __init__(self, *, signing_key: bool = True) -> None:
        self.operator = Operator()
        self.system = self.operator.account("SYS")
        self.operator.system_account = self.system.id
        self.account = self.operator.account("ACCORD", signing_key=signing_key)
        self.preload = [self.system, self.account]

    def server_config(self) -> dict[str, Any]:
        """What nats-server needs for decentralised auth (keys of a :class:`~accord.bus.server.NatsServer`'s
        ``extra``): the operator JWT, the system account and the MEMORY resolver with every account preloaded."""
        return {
            "operator": self.operator.jwt(),
            "system_account": self.system.id,
            "resolver": "MEMORY",
            "resolver_preload": {a.id: a.jwt() for a in self.preload},
        }
