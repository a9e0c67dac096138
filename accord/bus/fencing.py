"""Award ownership in a KV bucket, fenced by an epoch (the award's attempt number).

A requester that awards attempt ``n`` of a task records ``(epoch=n, data)`` under the task's key with
compare-and-set. A claim succeeds only if every earlier claim on the key has a smaller epoch, so a stale
requester process (one that paused, lost its connection, or was replaced) can never overwrite a newer award,
and whoever acts on an award can check that its epoch is still the current one (:func:`ensure_current`).
The value layout is fixed: 8 bytes big-endian epoch, then the caller's bytes (e.g. the encoded Award).
"""

from __future__ import annotations

import msgspec

from accord.bus.base import ConflictError, KeyValue

__all__ = ["Claim", "FencedError", "claim", "ensure_current", "read_claim"]

_EPOCH_BYTES = 8


class FencedError(ConflictError):
    """A claim with an equal or newer epoch is already recorded: this writer is stale."""

    reason = "fenced"


class Claim(msgspec.Struct, frozen=True):
    key: str
    epoch: int
    data: bytes
    revision: int


def _decode(key: str, value: bytes, revision: int) -> Claim:
    if len(value) < _EPOCH_BYTES:
        raise ConflictError(f"value under {key!r} is not a fenced claim", subject=key)
    return Claim(
        key=key, epoch=int.from_bytes(value[:_EPOCH_BYTES], "big"), data=value[_EPOCH_BYTES:], revision=revision
    )


async def read_claim(kv: KeyValue, key: str) -> Claim | None:
    entry = await kv.get(key)
    return None if entry is None else _decode(key, entry.value, entry.revision)


async def claim(kv: KeyValue, key: str, *, epoch: int, data: bytes = b"", max_attempts: int = 16) -> Claim:
    """Record ``epoch`` as the owner of ``key``; FencedError if an equal or newer epoch holds it.

    Races between writers are resolved by compare-and-set on the key's revision and retried (up to
    ``max_attempts`` lost races, then ConflictError).
    """
    if not 0 <= epoch < 2**63:
        raise ValueError("epoch out of range")
    value = epoch.to_bytes(_EPOCH_BYTES, "big") + data
    for _ in range(max_attempts):
        current = await read_claim(kv, key)
        try:
            if current is None:
                revision = await kv.create(key, value)
            elif current.epoch >= epoch:
                raise FencedError(f"epoch {epoch} <= recorded epoch {current.epoch}", subject=key)
            else:
                revision = await kv.update(key, value, last_revision=current.revision)
        except FencedError:
            raise
        except ConflictError:
            continue  # someone wrote in between: look again
        return Claim(key=key, epoch=epoch, data=data, revision=revision)
    raise ConflictError(f"lost {max_attempts} races for {key!r}", subject=key)


async def ensure_current(kv: KeyValue, key: str, epoch: int) -> Claim:
    """The recorded claim if it is exactly ``epoch``; FencedError if it is newer (or missing)."""
    current = await read_claim(kv, key)
    if current is None or current.epoch != epoch:
        found = None if current is None else current.epoch
        raise FencedError(f"epoch {epoch} is not current (recorded: {found})", subject=key)
    return current
