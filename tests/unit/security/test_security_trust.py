"""Trust store: certificates, rotation with overlapping validity, revocation, files, direct (dev) trust."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from accord.errors import LocalProtocolError
from accord.protocol.messages import Bid, Privacy, Tier
from accord.security import (
    Certificate,
    FrameError,
    Identity,
    KeyKind,
    Reason,
    ReplayGuard,
    RevocationList,
    SecurityError,
    SignatureError,
    TrustError,
    TrustStore,
    open_frame,
    seal,
    sign_certificate,
    sign_revocations,
)
from accord.security.envelope import (
    PAYLOAD_TYPE_CERT,
    PAYLOAD_TYPE_REVOCATIONS,
    Envelope,
    b64encode,
    decode_envelope,
    encode_envelope,
    pae,
    sign_envelope,
)
from accord.security.testing import Pki, random_identity

_S = 1_000_000_000
T0 = 1_767_225_600 * _S
DAY = 24 * 3600 * _S


def _cert(agent: Identity, operator: Identity, serial: int, start: int, end: int, **kw: object) -> Certificate:
    fields: dict[str, object] = {
        "serial": serial,
        "agent_id": agent.id,
        "name": "alpha",
        "tier": Tier.EDGE,
        "region": "eu-central",
        "residency": ["eu"],
        "privacy": [Privacy.PUBLIC],
        "not_before_ns": start,
        "not_after_ns": end,
        "issuer": operator.id,
    }
    fields.update(kw)
    return msgspec.convert(fields, Certificate)


def _bid(sender: Identity, ts: int) -> Bid:
    rng = random.Random(ts)
    return Bid(
        id=rng.randbytes(16).hex(),
        sender=sender.id,
        ts=ts,
        task_id="ab" * 16,
        model="m",
        price_micros=1,
        est_latency_ms=1,
        quality=0.5,
        valid_until_ns=ts + _S,
        tier=Tier.EDGE,
        region="eu",
    )


@pytest.fixture
def pki() -> Pki:
    return Pki(random.Random(3))


def test_check_returns_the_certificate(pki: Pki) -> None:
    agent = pki.agent("alpha", tier=Tier.DEVICE, residency=["eu", "ch"], privacy=[Privacy.CONFIDENTIAL])
    cert = pki.trust.check(agent.id, T0)
    assert (cert.agent_id, cert.name, cert.tier, cert.residency, cert.privacy, cert.issuer) == (
        agent.id,
        "alpha",
        Tier.DEVICE,
        ["eu", "ch"],
        [Privacy.CONFIDENTIAL],
        pki.operator.id,
    )


def test_validity_window_is_inclusive_and_reasons_are_precise(pki: Pki) -> None:
    agent = random_identity(pki.rng)
    pki.certify(agent, not_before_ns=T0, not_after_ns=T0 + DAY)
    assert pki.trust.check(agent.id, T0).serial == pki.trust.check(agent.id, T0 + DAY).serial
    for now, reason in [(T0 - 1, Reason.CERT_NOT_YET_VALID), (T0 + DAY + 1, Reason.CERT_EXPIRED)]:
        with pytest.raises(TrustError) as info:
            pki.trust.check(agent.id, now)
        assert info.value.reason is reason
    with pytest.raises(TrustError) as info:
        pki.trust.check(random_identity(pki.rng).id, T0)
    assert info.value.reason is Reason.UNKNOWN_KEY
    with pytest.raises(TrustError) as info:
        pki.trust.check("not an id", T0)
    assert info.value.reason is Reason.UNKNOWN_KEY


def test_rotation_both_keys_valid_during_the_overlap(pki: Pki) -> None:
    old, new = random_identity(pki.rng), random_identity(pki.rng)
    pki.certify(old, name="alpha", not_before_ns=T0, not_after_ns=T0 + 10 * DAY)
    pki.certify(new, name="alpha", not_before_ns=T0 + 8 * DAY, not_after_ns=T0 + 40 * DAY)
    guard = ReplayGuard()

    def accepts(identity: Identity, now: int) -> bool:
        try:
            open_frame(seal(_bid(identity, now), identity), pki.trust, guard, now)
        except TrustError:
            return False
        return True

    assert (accepts(old, T0 + DAY), accepts(new, T0 + DAY)) == (True, False)
    assert (accepts(old, T0 + 9 * DAY), accepts(new, T0 + 9 * DAY)) == (True, True)  # the overlap
    assert (accepts(old, T0 + 11 * DAY), accepts(new, T0 + 11 * DAY)) == (False, True)
    assert pki.trust.check(old.id, T0 + 9 * DAY).name == pki.trust.check(new.id, T0 + 9 * DAY).name == "alpha"


def test_renewal_of_one_key_picks_the_longest_valid(pki: Pki) -> None:
    agent = random_identity(pki.rng)
    first = pki.certify(agent, not_before_ns=T0, not_after_ns=T0 + 10 * DAY)
    second = pki.certify(agent, not_before_ns=T0 + 5 * DAY, not_after_ns=T0 + 30 * DAY)
    assert pki.trust.check(agent.id, T0 + DAY) == first
    assert pki.trust.check(agent.id, T0 + 6 * DAY) == second
    assert pki.trust.check(agent.id, T0 + 20 * DAY) == second


def test_revocation_by_serial_and_by_agent(pki: Pki) -> None:
    a, b = random_identity(pki.rng), random_identity(pki.rng)
    a1 = pki.certify(a, not_after_ns=T0 + 10 * DAY)
    a2 = pki.certify(a, not_after_ns=T0 + 20 * DAY)
    pki.certify(b)
    pki.revoke(serials=[a2.serial], now_ns=T0)
    assert pki.trust.check(a.id, T0) == a1, "revoking one certificate leaves the key's other one valid"
    pki.revoke(serials=[a1.serial], now_ns=T0)
    with pytest.raises(TrustError) as info:
        pki.trust.check(a.id, T0)
    assert info.value.reason is Reason.REVOKED
    pki.revoke(agents=[b.id], now_ns=T0)
    with pytest.raises(TrustError) as info:
        pki.trust.check(b.id, T0)
    assert info.value.reason is Reason.REVOKED


def test_revoked_beats_expired_in_the_reason(pki: Pki) -> None:
    agent = random_identity(pki.rng)
    c1 = pki.certify(agent, not_before_ns=0, not_after_ns=T0 - 1)
    pki.certify(agent, not_before_ns=T0 + DAY, not_after_ns=T0 + 2 * DAY)
    with pytest.raises(TrustError) as info:
        pki.trust.check(agent.id, T0)
    assert info.value.reason is Reason.CERT_NOT_YET_VALID
    pki.revoke(serials=[c1.serial])
    with pytest.raises(TrustError) as info:
        pki.trust.check(agent.id, T0)
    assert info.value.reason is Reason.REVOKED


def test_older_revocation_list_does_not_replace_a_newer_one(pki: Pki) -> None:
    agent = pki.agent()
    serial = pki.trust.check(agent.id, T0).serial
    newer = RevocationList(issuer=pki.operator.id, number=5, issued_ns=T0, serials=[serial])
    older = RevocationList(issuer=pki.operator.id, number=4, issued_ns=T0, serials=[])
    assert pki.trust.add_revocations(sign_revocations(newer, pki.operator))
    assert not pki.trust.add_revocations(sign_revocations(older, pki.operator))
    with pytest.raises(TrustError):
        pki.trust.check(agent.id, T0)


def test_certificates_need_a_trusted_operator_and_a_good_signature(pki: Pki) -> None:
    agent = random_identity(pki.rng)
    rogue = random_identity(pki.rng, KeyKind.OPERATOR)
    with pytest.raises(TrustError) as info:
        pki.trust.add_certificate(sign_certificate(_cert(agent, rogue, 1, 0, T0 * 2), rogue))
    assert info.value.reason is Reason.UNKNOWN_ISSUER
    good = sign_certificate(_cert(agent, pki.operator, 1, 0, T0 * 2), pki.operator)
    envelope = decode_envelope(good, PAYLOAD_TYPE_CERT)
    forged = _cert(agent, pki.operator, 1, 0, T0 * 2, name="mallory", privacy=[Privacy.RESTRICTED])
    tampered = encode_envelope(msgspec.structs.replace(envelope, payload=msgspec.msgpack.encode(forged)))
    with pytest.raises(SignatureError) as sig_info:
        pki.trust.add_certificate(tampered)
    assert sig_info.value.reason is Reason.BAD_SIGNATURE
    # An operator cannot issue in another operator's name.
    other = random_identity(pki.rng, KeyKind.OPERATOR)
    pki.trust.add_operator(other.id)
    lying = _cert(agent, pki.operator, 1, 0, T0 * 2)
    payload = msgspec.msgpack.encode(lying)
    signed = Envelope(
        v=1,
        payload_type=PAYLOAD_TYPE_CERT,
        payload=payload,
        key_id=other.id,
        sig=other.sign(pae(PAYLOAD_TYPE_CERT, payload)),
    )
    with pytest.raises(SignatureError) as sig_info:
        pki.trust.add_certificate(encode_envelope(signed))
    assert sig_info.value.reason is Reason.SENDER_MISMATCH
    with pytest.raises(TrustError):
        pki.trust.check(agent.id, T0)


def test_records_of_another_version_are_refused_as_such(pki: Pki) -> None:
    """A certificate or revocation list with v other than 1, signed by the anchor: unsupported_version (10.2)."""
    agent = random_identity(pki.rng)
    crl = RevocationList(issuer=pki.operator.id, number=1, issued_ns=T0)
    for record, payload_type, add in (
        (_cert(agent, pki.operator, 1, 0, T0 * 2), PAYLOAD_TYPE_CERT, pki.trust.add_certificate),
        (crl, PAYLOAD_TYPE_REVOCATIONS, pki.trust.add_revocations),
    ):
        for v in (0, 2, 256):
            payload = msgspec.msgpack.encode(msgspec.structs.replace(record, v=v))
            signed = sign_envelope(payload_type, payload, pki.operator)
            with pytest.raises(FrameError) as info:
                add(encode_envelope(signed))
            assert info.value.reason is Reason.UNSUPPORTED_VERSION
    with pytest.raises(LocalProtocolError):
        sign_revocations(msgspec.structs.replace(crl, v=2), pki.operator)
    data = pki.trust.to_json()
    pki.trust.trust_directly(agent.id, name="dev")
    direct = pki.trust.to_json().replace(b'"v":1,"serial"', b'"v":2,"serial"')
    assert direct != data
    with pytest.raises(FrameError) as info:
        TrustStore.from_json(direct)
    assert info.value.reason is Reason.UNSUPPORTED_VERSION


def test_signing_refuses_what_receivers_would_refuse(pki: Pki) -> None:
    agent = random_identity(pki.rng)
    with pytest.raises(LocalProtocolError):
        sign_certificate(_cert(agent, pki.operator, 1, 0, 1), agent)  # not an operator key
    with pytest.raises(LocalProtocolError):
        sign_certificate(_cert(agent, pki.operator, 1, 10, 5), pki.operator)  # ends before it starts
    bad = msgspec.structs.replace(_cert(agent, pki.operator, 1, 0, 5), name="has spaces")
    with pytest.raises(LocalProtocolError):
        sign_certificate(bad, pki.operator)
    other = random_identity(pki.rng, KeyKind.OPERATOR)
    with pytest.raises(LocalProtocolError):
        sign_certificate(_cert(agent, pki.operator, 1, 0, 5), other)  # issuer is not the signer


def test_file_round_trip_and_caching(pki: Pki, tmp_path: Path) -> None:
    a, b = pki.agent("a"), pki.agent("b")
    pki.revoke(agents=[b.id])
    dev = random_identity(pki.rng)
    pki.trust.trust_directly(
        dev.id,
        name="dev",
        tier=Tier.DEVICE,
        region="lab",
        residency=["eu"],
        privacy=[Privacy.CONFIDENTIAL],
        not_before_ns=T0 - 5,
        not_after_ns=T0 + 10**12,
    )
    path = tmp_path / "trust.json"
    path.write_bytes(b"an older trust file")
    pki.trust.save(path)  # replaces it
    assert path.stat().st_mode & 0o077 == 0
    loaded = TrustStore.load(path)
    direct = loaded.check(dev.id, T0)
    assert (direct.residency, direct.privacy, direct.region) == (["eu"], [Privacy.CONFIDENTIAL], "lab")
    assert (direct.not_before_ns, direct.not_after_ns) == (T0 - 5, T0 + 10**12)
    assert loaded.to_json() == pki.trust.to_json() == path.read_bytes()
    assert loaded.check(a.id, T0).name == "a"
    assert loaded.check(dev.id, T0).issuer is None
    with pytest.raises(TrustError):
        loaded.check(b.id, T0)
    assert loaded.public_key(a.id) is loaded.public_key(a.id), "public key objects are cached"
    statuses = {s.certificate.name: s.status for s in loaded.certificates(T0)}
    assert statuses == {"a": "valid", "b": "revoked", "dev": "valid"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.replace(b'"v":1', b'"v":2'),
        lambda d: d.replace(b'"direct"', b'"directs"'),
        lambda d: d.replace(b'"revocations":[', b'"revocations":["AAAA",'),
        lambda d: d[:-10],
        lambda d: d.replace(b'"operators":["O', b'"operators":["U'),
    ],
)
def test_damaged_trust_files_do_not_load(pki: Pki, damage: object) -> None:
    assert callable(damage)
    pki.agent()
    pki.revoke(serials=[99])
    data = pki.trust.to_json()
    damaged = damage(data)
    assert damaged != data
    with pytest.raises(SecurityError):
        TrustStore.from_json(damaged)


def test_direct_trust_is_explicit_and_revocable(pki: Pki) -> None:
    dev = random_identity(pki.rng)
    with pytest.raises(TrustError):
        pki.trust.check(dev.id, T0)
    cert = pki.trust.trust_directly(dev.id, name="dev")
    assert cert.issuer is None and pki.trust.check(dev.id, T0) == cert
    pki.revoke(agents=[dev.id])
    with pytest.raises(TrustError) as info:
        pki.trust.check(dev.id, T0)
    assert info.value.reason is Reason.REVOKED
    with pytest.raises(FrameError):
        pki.trust.trust_directly("U" + "A" * 55, name="bad-checksum")


def test_key_kinds_are_not_interchangeable(pki: Pki) -> None:
    """An agent's key never becomes an issuer, and an operator's key is never trusted as an agent."""
    agent = pki.agent("a")
    with pytest.raises(FrameError):
        TrustStore().add_operator(agent.id)
    with pytest.raises(FrameError):
        pki.trust.trust_directly(pki.operator.id, name="operator-as-agent")


def test_a_trust_file_holds_one_revocation_list_per_operator(pki: Pki) -> None:
    """Two lists of one operator are refused in either order, not only when the second is older (spec 10.5)."""
    lists = [
        b64encode(sign_revocations(RevocationList(issuer=pki.operator.id, number=n, issued_ns=T0), pki.operator))
        for n in (1, 2)
    ]
    doc = json.loads(pki.trust.to_json())
    for order in (lists, lists[::-1]):
        with pytest.raises(FrameError) as info:
            TrustStore.from_json(json.dumps({**doc, "revocations": order}))
        assert info.value.reason is Reason.MALFORMED
    assert TrustStore.from_json(json.dumps({**doc, "revocations": lists[1:]})).revocations(pki.operator.id)


def test_remembered_verdicts_follow_time_and_every_change(pki: Pki) -> None:
    """``check`` caches each key's verdict between the validity bounds of its certificates; time crossing a
    bound, and every change of the store (revocation, certificate, direct entry, merge), are seen at once."""
    agent = random_identity(pki.rng)
    first = pki.certify(agent, not_before_ns=T0, not_after_ns=T0 + 10 * DAY)
    assert pki.trust.check(agent.id, T0 + DAY) == first  # remembered from here on
    assert pki.trust.check(agent.id, T0 + 10 * DAY) == first  # the last valid instant
    with pytest.raises(TrustError, match="cert_expired"):
        pki.trust.check(agent.id, T0 + 10 * DAY + 1)
    with pytest.raises(TrustError, match="cert_not_yet_valid"):
        pki.trust.check(agent.id, T0 - 1)
    second = pki.certify(agent, not_before_ns=T0 + 5 * DAY, not_after_ns=T0 + 30 * DAY)
    assert pki.trust.check(agent.id, T0 + 6 * DAY) == second, "a new certificate is seen at once"
    assert pki.trust.check(agent.id, T0 + 4 * DAY) == first, "and the old one before the new one starts"

    follower = TrustStore.from_json(pki.trust.to_json())  # a running mesh's copy of the trust file
    assert follower.check(agent.id, T0 + 6 * DAY) == second
    pki.revoke(agents=[agent.id], now_ns=T0)
    with pytest.raises(TrustError, match="revoked"):
        pki.trust.check(agent.id, T0 + 6 * DAY)
    assert follower.check(agent.id, T0 + 6 * DAY) == second, "not merged yet"
    follower.merge(pki.trust)
    with pytest.raises(TrustError, match="revoked"):
        follower.check(agent.id, T0 + 6 * DAY)


def test_a_revocation_list_of_the_same_number_never_replaces_the_installed_one(pki: Pki) -> None:
    """Revocations only grow (spec 10.3): a second list under the number in force, even one the operator signed,
    cannot take a revocation back."""
    agent = pki.agent()
    serial = pki.trust.check(agent.id, T0).serial
    revoking = RevocationList(issuer=pki.operator.id, number=7, issued_ns=T0, serials=[serial])
    forgiving = RevocationList(issuer=pki.operator.id, number=7, issued_ns=T0 + DAY, serials=[])
    assert pki.trust.add_revocations(sign_revocations(revoking, pki.operator))
    assert not pki.trust.add_revocations(sign_revocations(forgiving, pki.operator))
    with pytest.raises(TrustError) as info:
        pki.trust.check(agent.id, T0)
    assert info.value.reason is Reason.REVOKED and pki.trust.is_revoked(agent.id)


def test_is_revoked_means_the_key_or_every_certificate_of_it(pki: Pki) -> None:
    by_key, both_certs, one_cert = pki.agent("k"), pki.agent("b"), pki.agent("o")
    second_b, second_o = pki.certify(both_certs, name="b"), pki.certify(one_cert, name="o")
    assert not any(pki.trust.is_revoked(a.id) for a in (by_key, both_certs, one_cert))
    all_b = [s.certificate.serial for s in pki.trust.certificates(T0) if s.certificate.agent_id == both_certs.id]
    pki.revoke(agents=[by_key.id], serials=[*all_b, second_o.serial])
    assert pki.trust.is_revoked(by_key.id)
    assert pki.trust.is_revoked(both_certs.id) and len(all_b) == 2 and second_b.serial in all_b
    assert not pki.trust.is_revoked(one_cert.id)  # its first certificate still stands
    assert not pki.trust.is_revoked(Identity.generate().id)  # a key nobody certified is unknown, not revoked


def test_merge_adds_only_what_is_new_and_counts_the_new_certificates(pki: Pki) -> None:
    known, fresh, fresher = pki.agent("known"), random_identity(pki.rng), random_identity(pki.rng)
    mine, theirs = TrustStore([pki.operator.id]), TrustStore([pki.operator.id])
    mine.merge(pki.trust)
    pki.certify(fresh, name="fresh")
    pki.certify(fresher, name="fresher")
    theirs.merge(pki.trust)
    both, only_theirs = Identity.generate(), Identity.generate()
    mine.trust_directly(both.id, name="mine")
    theirs.trust_directly(both.id, name="theirs")
    theirs.trust_directly(only_theirs.id, name="new")
    assert mine.merge(theirs) == 2  # the two fresh certificates; the known one is there already
    assert mine.check(fresh.id, T0).name == "fresh" and mine.check(known.id, T0).name == "known"
    assert mine.check(both.id, T0).name == "mine"  # a direct entry this store holds is not replaced
    assert mine.check(only_theirs.id, T0).name == "new"
    assert mine.merge(theirs) == 0


def test_a_direct_entry_defaults_to_the_local_region_from_the_epoch(pki: Pki) -> None:
    key = Identity.generate()
    entry = pki.trust.trust_directly(key.id, name="dev")
    assert (entry.region, entry.not_before_ns, entry.serial, entry.issuer) == ("local", 0, 0, None)
    assert pki.trust.check(key.id, 0) == entry


def test_trust_refusals_name_the_key_or_the_file_part(pki: Pki, tmp_path: Path) -> None:
    """Each typed refusal's detail says what it refused (an operator reads it in a log or a CLI error)."""
    revoked, stranger = pki.agent(), Identity.generate()
    pki.revoke(agents=[revoked.id])
    rogue = random_identity(pki.rng, KeyKind.OPERATOR)
    v2 = json.dumps({**json.loads(pki.trust.to_json()), "v": 2}).encode()
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: pki.trust.check(revoked.id, T0), f"key {revoked.id} is revoked"),
        (lambda: pki.trust.check(stranger.id, T0), f"no certificate for {stranger.id}"),
        (
            lambda: pki.trust.add_certificate(sign_certificate(_cert(stranger, rogue, 1, 0, T0 * 2), rogue)),
            f"{rogue.id} is not a trusted operator",
        ),
        (lambda: TrustStore.from_json(b" " * ((64 << 20) + 1)), "trust file too large"),
        (lambda: TrustStore.from_json(v2), "trust file v2, this build reads v1"),
    ]
    for call, detail in cases:
        with pytest.raises(SecurityError) as info:
            call()
        assert str(info.value).endswith(detail), str(info.value)
    path = tmp_path / "trust.json"
    path.write_bytes(v2)
    path.chmod(0o600)
    with pytest.raises(FrameError) as file_info:
        TrustStore.load(path)
    assert str(file_info.value).endswith(f"{path}: trust file v2, this build reads v1")
