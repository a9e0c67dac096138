"""Who may connect to a mesh's own nats-server, and as what (spec 11.6).

`accord up` runs its embedded server with one NATS user per key its trust store holds a valid certificate for:
the key is the user (an nkey, the same key that signs the party's frames) and its permissions let it publish
only as itself and see only the calls for proposals of its certified tier and residency classes. No anonymous
connection is accepted; a key whose certificate is revoked or ends loses its user when the mesh reloads them.
Receivers on such a bus may rely on the subject's last token to name the publisher (``authenticated_bus``).
"""

from __future__ import annotations

from typing import Final

from accord.bus.nats import NatsBus
from accord.bus.server import NkeyUser
from accord.security import Identity, TrustStore, certified_permissions, inbox_prefix

__all__ = ["connect_as", "mesh_users"]

_NOBODY: Final = Identity.generate().id
"""A user nobody holds the key of: keeps the server's user list from ever being empty (an empty list would
switch authorization off and let anonymous clients in)."""


def mesh_users(trust: TrustStore, now_ns: int) -> list[NkeyUser]:
    """One NATS user per key with a valid certificate at ``now_ns``, with its certified permissions."""
    users: dict[str, NkeyUser] = {}
    for status in trust.certificates(now_ns):
        if status.status == "valid":
            cert = status.certificate
            users[cert.agent_id] = NkeyUser(cert.agent_id, certified_permissions(cert))
    if not users:
        users[_NOBODY] = NkeyUser(_NOBODY, {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}})
    return [users[k] for k in sorted(users)]


def connect_as(
    url: str,
    identity: Identity,
    *,
    name: str,
    creds: str | None = None,
    nkey_seed: str | None = None,
    own_creds: str | None = None,
) -> NatsBus:
    """A bus connection for ``identity``: authenticated as its own key (its nkey seed; replies under its own
    inbox prefix), unless the mesh file names shared credentials (``creds`` or ``nkey_seed``). ``own_creds`` is a
    ``.creds`` file of ``identity``'s own (a JWT user with its permissions): it wins over shared credentials, and
    replies come under its own inbox prefix, as its permissions require."""
    if own_creds is not None:
        return NatsBus(url, name=name, credentials=own_creds, inbox_prefix=inbox_prefix(identity.id))
    if creds is not None or nkey_seed is not None:
        return NatsBus(url, name=name, nkey_seed=nkey_seed, credentials=creds)
    return NatsBus(url, name=name, nkey_seed=identity.seed, inbox_prefix=inbox_prefix(identity.id))
