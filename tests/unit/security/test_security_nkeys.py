"""Our nkey encoding against the reference ``nkeys`` package (what nats-py uses for nkey authentication)."""

from __future__ import annotations

import random
from pathlib import Path

import nkeys as ref  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.security import Identity, KeyKind, save_identity
from accord.security import nkeys as ours
from accord.security.envelope import pae

RFC8032_TEST1_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_TEST1_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


@given(st.binary(min_size=32, max_size=32), st.sampled_from(list(KeyKind)))
def test_seed_and_public_encoding_match_the_nkeys_package(secret: bytes, kind: KeyKind) -> None:
    seed = ours.encode_seed(secret, kind)
    assert seed.encode() == ref.encode_seed(secret, int(kind))
    pair = ref.from_seed(bytearray(seed.encode()))
    identity = Identity.from_seed(seed)
    assert identity.id == pair.public_key.decode()
    assert identity.id.startswith(kind.letter) and len(identity.id) == 56
    assert seed.startswith("S" + kind.letter) and len(seed) == 58
    assert ours.decode_seed(seed) == (kind, secret)
    assert ours.decode_public(identity.id) == (kind, identity.public_bytes)
    assert ours.decode_public(identity.id, kind) is not None


def test_rfc8032_key_gives_the_rfc_public_key() -> None:
    identity = Identity.from_private_bytes(RFC8032_TEST1_SECRET)
    assert identity.public_bytes == RFC8032_TEST1_PUBLIC
    assert ours.decode_public(identity.id) == (KeyKind.USER, RFC8032_TEST1_PUBLIC)
    # RFC 8032 TEST 1: the empty message's signature.
    assert identity.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_crc16_matches_the_reference() -> None:
    rng = random.Random(1)
    for _ in range(200):
        data = rng.randbytes(rng.randrange(0, 80))
        assert ours.crc16(data) == ref.crc16(data)


def test_signatures_interoperate_with_nkeys() -> None:
    identity = Identity.from_private_bytes(RFC8032_TEST1_SECRET)
    pair = ref.from_seed(bytearray(identity.seed.encode()))
    message = pae("application/vnd.accord.v1+msgpack", b"payload")
    assert pair.sign(message) == identity.sign(message)
    assert pair.verify(message, identity.sign(message))


def test_a_key_file_is_a_nats_py_nkeys_seed_file(tmp_path: Path) -> None:
    """nats-py reads the seed file, strips whitespace, and calls nkeys.from_seed on it."""
    identity = Identity.generate()
    path = tmp_path / "agent.seed"
    save_identity(identity, path)
    pair = ref.from_seed(bytearray(path.read_bytes().strip()))
    assert pair.public_key.decode() == identity.id


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.lower(),
        lambda t: t + "=",
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # checksum mismatch (or non-canonical tail)
        lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:],
        lambda t: t + "\n",
        lambda t: "é" + t[1:],
    ],
)
def test_damaged_ids_and_seeds_are_refused(mutate: object) -> None:
    assert callable(mutate)
    identity = Identity.generate()
    assert ours.decode_public(mutate(identity.id)) is None
    assert ours.decode_seed(mutate(identity.seed)) is None


def test_kinds_are_not_interchangeable() -> None:
    operator = Identity.generate(KeyKind.OPERATOR)
    assert ours.decode_public(operator.id, KeyKind.USER) is None
    assert ours.decode_public(operator.id, KeyKind.OPERATOR) is not None
    # A public key is not a seed and vice versa.
    assert ours.decode_seed(operator.id) is None
    assert ours.decode_public(operator.seed) is None
    # nkeys' other roles (account 'A', server 'N') are not Accord kinds.
    account_seed = ref.encode_seed(bytes(32), ref.PREFIX_BYTE_ACCOUNT).decode()
    assert ours.decode_seed(account_seed) is None


def test_encoders_refuse_wrong_lengths() -> None:
    with pytest.raises(ValueError):
        ours.encode_public(b"x" * 31)
    with pytest.raises(ValueError):
        ours.encode_seed(b"x" * 33)
