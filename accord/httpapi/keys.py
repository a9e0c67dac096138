"""API keys of the HTTP API: each bearer token stands for one requester identity with a budget.

A keys file (TOML)::

    [[keys]]
    name = "alice"                 # the requester identity api-alice (made and certified in the mesh's state dir)
    token_env = "ALICE_API_KEY"    # the bearer token, from the environment (never in the file)
    budget_micros = 2_000_000      # what alice's requests may spend in all, for the life of the server

    [[keys]]
    name = "ci"
    token_sha256 = "9f86d0..."     # or the token's SHA-256 (hex)
    key = "ci.seed"                # a requester key of its own (certify it in the trust file)
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from accord.bus.base import Bus
from accord.errors import AccordError
from accord.files import FileRefusedError, read_capped
from accord.httpapi.errors import ApiError
from accord.protocol.shortlists import CachingRegistry
from accord.runtime.requester import Requester
from accord.security import Identity, TrustStore

__all__ = ["ApiKeyConfig", "ApiKeysError", "Caller", "Callers", "load_api_keys", "make_callers", "token_digest"]


class ApiKeysError(AccordError):
    """The keys file cannot be used; the message names the file and the field."""


class ApiKeyConfig(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,40}\Z")]
    token_env: str | None = None
    token_sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")] | None = None
    budget_micros: Annotated[int, Meta(ge=0, le=10**15)] | None = None
    """What this key's requests may spend in all (None: no limit)."""
    key: str | None = None
    """A requester key file for this caller; None: the mesh's state dir makes ``api-NAME``."""

    @property
    def identity_name(self) -> str:
        return f"api-{self.name}"


class _KeysFile(Struct, kw_only=True, forbid_unknown_fields=True):
    keys: Annotated[list[ApiKeyConfig], Meta(min_length=1)]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_api_keys(path: Path) -> dict[str, ApiKeyConfig]:
    """Token digest -> key, from a keys file (relative ``key`` paths taken from the file's directory)."""
    try:
        parsed = msgspec.toml.decode(read_capped(path), type=_KeysFile)
    except FileRefusedError as exc:
        raise ApiKeysError(f"{path}: cannot read the keys file: {exc.detail}") from exc
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ApiKeysError(f"{path}: {exc}") from exc
    out: dict[str, ApiKeyConfig] = {}
    for i, key in enumerate(parsed.keys):
        where = f"{path}: keys[{i}] ({key.name})"
        if (key.token_env is None) == (key.token_sha256 is None):
            raise ApiKeysError(f"{where}: give exactly one of token_env and token_sha256")
        if key.token_env is not None:
            token = os.environ.get(key.token_env)
            if not token:
                raise ApiKeysError(f"{where}: environment variable {key.token_env} is not set")
            digest = token_digest(token)
        else:
            assert key.token_sha256 is not None
            digest = key.token_sha256
        if digest in out:
            raise ApiKeysError(f"{where}: the same token as {out[digest].name}")
        if key.key is not None:
            key = msgspec.structs.replace(key, key=str(path.parent / Path(key.key).expanduser()))
        out[digest] = key
    return out


@dataclass
class Caller:
    """Who sends a request: a requester, and the budget its key still has (reservations held by running
    requests count against it, so concurrent requests never overspend)."""

    name: str
    requester: Requester
    budget_micros: int | None = None
    spent_micros: int = 0
    reserved_micros: int = 0

    @property
    def left_micros(self) -> int | None:
        if self.budget_micros is None:
            return None
        return self.budget_micros - self.spent_micros - self.reserved_micros

    def reserve(self, want_micros: int) -> int:
        """Hold up to ``want_micros`` of the budget for one request; what it may spend. ApiError 402 when the
        budget is used up."""
        left = self.left_micros
        granted = want_micros if left is None else min(want_micros, left)
        if granted <= 0 and want_micros > 0:
            raise ApiError(
                402,
                "insufficient_quota",
                "budget_exceeded",
                f"the budget of key {self.name} is used up (spent {self.spent_micros} of {self.budget_micros} "
                "micro-USD)",
            )
        self.reserved_micros += granted
        return granted

    def settle(self, reserved_micros: int, spent_micros: int) -> None:
        self.reserved_micros -= reserved_micros
        self.spent_micros += spent_micros


@dataclass
class Callers:
    """Bearer token -> caller; with no keys, every request is the one ``open`` caller."""

    by_digest: dict[str, Caller]
    open: Caller | None = None

    def find(self, authorization: str | None) -> Caller:
        if self.open is not None:
            return self.open
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            digest = token_digest(token.strip())
            for known, caller in self.by_digest.items():
                if hmac.compare_digest(known, digest):
                    return caller
        raise ApiError(401, "invalid_request_error", "invalid_api_key", "missing or unknown API key (Bearer)")

    def all(self) -> list[Caller]:
        """Every caller; the first one's requester watches the adverts (the others share its registry)."""
        return [*([self.open] if self.open is not None else []), *self.by_digest.values()]


def make_callers(
    bus: Bus | Callable[[str], Bus],
    trust: TrustStore,
    *,
    keys: Mapping[str, ApiKeyConfig] | None = None,
    identities: Mapping[str, Identity] | None = None,
    open_identity: Identity | None = None,
    authenticated_bus: bool = False,
) -> Callers:
    """One requester per API key (``identities`` by :attr:`ApiKeyConfig.identity_name`), or with no keys one
    open caller as ``open_identity``; on ``bus``, or on ``bus(agent_id)``'s connection (a mesh that authenticates
    every party as its own key), sharing one registry that the first one feeds."""
    registry = CachingRegistry()
    made: list[Requester] = []

    def requester(identity: Identity) -> Requester:
        connection = bus(identity.id) if callable(bus) else bus
        made.append(
            Requester(
                identity,
                bus=connection,
                trust=trust,
                registry=registry,
                watch_adverts=not made,
                authenticated_bus=authenticated_bus,
            )
        )
        return made[-1]

    if not keys:
        if open_identity is None:
            raise ApiKeysError("no API keys and no identity for open access")
        return Callers({}, open=Caller("open", requester(open_identity)))
    assert identities is not None
    return Callers(
        {
            digest: Caller(key.name, requester(identities[key.identity_name]), key.budget_micros)
            for digest, key in keys.items()
        }
    )
