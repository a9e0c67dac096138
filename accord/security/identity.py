"""Ed25519 identities. An agent id is the nkey text of its public key (``U...``); an operator's is ``O...``.

A key file holds exactly the nkey seed text (``SU...`` or ``SO...``) and a newline, so the same file can be given
to nats-py as ``nkeys_seed`` and the one key both authenticates the connection and signs the frames.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path

from accord.security import nkeys
from accord.security.ed25519 import PrivateKey, PublicKey
from accord.security.errors import KeyFileError, Reason
from accord.security.keyfile import read_private, write_owner_only
from accord.security.nkeys import KeyKind

__all__ = ["Identity", "check_creds_for", "creds_user_key", "load_identity", "public_key_of", "save_identity"]


class Identity:
    """A private Ed25519 key and its public id. ``repr`` never shows the secret."""

    __slots__ = ("_private", "id", "kind", "public_bytes", "public_key")

    def __init__(self, private: PrivateKey, kind: KeyKind = KeyKind.USER) -> None:
        self._private = private
        self.kind = kind
        self.public_key: PublicKey = private.public
        self.public_bytes: bytes = private.public.raw
        self.id: str = nkeys.encode_public(self.public_bytes, kind)

    @classmethod
    def generate(cls, kind: KeyKind = KeyKind.USER) -> Identity:
        return cls(PrivateKey.generate(), kind)

    @classmethod
    def from_private_bytes(cls, seed: bytes, kind: KeyKind = KeyKind.USER) -> Identity:
        """From a raw 32-byte Ed25519 secret (RFC 8032's "secret key")."""
        return cls(PrivateKey(seed), kind)

    @classmethod
    def from_seed(cls, text: str) -> Identity:
        """From nkey seed text (``SU...`` / ``SO...``); raises KeyFileError(bad_key_file) if it is not one."""
        decoded = nkeys.decode_seed(text.strip(" \t\r\n"))  # spec 10.6: surrounding ASCII whitespace only
        if decoded is None:
            raise KeyFileError(Reason.BAD_KEY_FILE, "not an nkey user or operator seed")
        kind, seed = decoded
        return cls.from_private_bytes(seed, kind)

    @property
    def seed(self) -> str:
        """The nkey seed text. Secret: write it only with :func:`save_identity`."""
        return nkeys.encode_seed(self._private.seed, self.kind)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"Identity({self.kind.name.lower()} {self.id})"


def save_identity(identity: Identity, path: str | Path, *, force: bool = False) -> None:
    """Write the seed to ``path`` with mode 0600 (refusing to replace an existing file unless ``force``)."""
    write_owner_only(Path(path), (identity.seed + "\n").encode("ascii"), force=force)


def load_identity(path: str | Path, *, kind: KeyKind | None = None) -> Identity:
    """Load a seed file. Refused with KeyFileError when group or others can access it, or it is not a seed."""
    p = Path(path)
    data = read_private(p)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise KeyFileError(Reason.BAD_KEY_FILE, f"{p} is not an nkey seed file") from exc
    try:
        identity = Identity.from_seed(text)
    except KeyFileError as exc:
        raise KeyFileError(Reason.BAD_KEY_FILE, f"{p} is not an nkey seed file") from exc
    if kind is not None and identity.kind is not kind:
        raise KeyFileError(
            Reason.BAD_KEY_FILE, f"{p} holds an {identity.kind.name.lower()} key, expected {kind.name.lower()}"
        )
    return identity


def public_key_of(key_id: str, kind: KeyKind | None = None) -> PublicKey | None:
    """The Ed25519 public key an nkey id names, or None if it is not a valid id (of ``kind``)."""
    decoded = nkeys.decode_public(key_id, kind)
    if decoded is None:
        return None
    return PublicKey(decoded[1])


_CREDS_BLOCK = re.compile(r"-{3,}BEGIN ([A-Z ]+)-{3,}\s*\n\s*(\S+)\s*\n\s*-{3,}END \1-{3,}")
"""A decorated block of a NATS ``.creds`` file: ``-----BEGIN NATS USER JWT-----``, the text, ``------END ...``."""


def creds_user_key(path: str | Path) -> str:
    """The NATS user a ``.creds`` file connects as: the public key of its user seed, which its user JWT must
    name as its subject. Read as a key file (owner-only, spec 10.6). KeyFileError(bad_key_file) when the file
    holds no user seed, no JWT, or a JWT issued for another key: the server would then authenticate the
    connection as a user other than the party whose frames it carries (spec 11.6)."""
    p = Path(path)
    try:
        text = read_private(p).decode("ascii")
    except UnicodeDecodeError as exc:
        raise KeyFileError(Reason.BAD_KEY_FILE, f"{p} is not a NATS creds file") from exc
    blocks = {name: body for name, body in _CREDS_BLOCK.findall(text)}
    seed, jwt = blocks.get("USER NKEY SEED"), blocks.get("NATS USER JWT")
    if seed is None or jwt is None:
        raise KeyFileError(Reason.BAD_KEY_FILE, f"{p} is not a NATS creds file (a user JWT, then a user seed)")
    try:
        user = Identity.from_seed(seed)
    except KeyFileError as exc:
        raise KeyFileError(Reason.BAD_KEY_FILE, f"{p}: its seed is not an nkey user seed") from exc
    if user.kind is not KeyKind.USER:
        raise KeyFileError(Reason.BAD_KEY_FILE, f"{p} holds an {user.kind.name.lower()} seed, not a user seed")
    claims: object = None
    parts = jwt.split(".")
    if len(parts) == 3:  # header.claims.signature, base64url without padding
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (binascii.Error, ValueError) as exc:
            raise KeyFileError(Reason.BAD_KEY_FILE, f"{p}: its user JWT cannot be decoded") from exc
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if subject != user.id:
        raise KeyFileError(
            Reason.BAD_KEY_FILE, f"{p}: its user JWT is for {subject!r}, its seed for {user.id}: not one user"
        )
    return user.id


def check_creds_for(path: str | Path, party_id: str) -> None:
    """Refuse a ``.creds`` file that would not connect as ``party_id``: the server authenticates the connection
    as the file's user, and receivers take the subject's last token for the publisher (spec 11.6).
    KeyFileError(bad_key_file) naming both keys (or the reason :func:`creds_user_key` gives)."""
    user = creds_user_key(path)
    if user != party_id:
        raise KeyFileError(
            Reason.BAD_KEY_FILE,
            f"{path} connects as the NATS user {user}, not as the party's key {party_id}: issue its user JWT for "
            "that key (`accord keys show` prints it)",
        )
