"""Floods at the security layer (issue 15): the replay guard stays bounded under 10^5 admitted frames (spec 9.2,
11.9), and trust comes before decode on every receive path (spec 7.5, D9): a frame from a key the receiver does
not trust is refused before its payload is copied out of the envelope, let alone decoded, and changes nothing.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator

import msgspec
import pytest

import accord.security.frames as frames_module
from accord.bus.base import BusMessage
from accord.bus.memory import MemoryBroker
from accord.protocol import subjects
from accord.protocol.codec import encode
from accord.protocol.messages import Bid, Tier
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester
from accord.security import (
    PAYLOAD_TYPE_FRAME,
    Envelope,
    Identity,
    Reason,
    ReplayGuard,
    SecurityError,
    open_frame,
    peek,
    seal,
)
from accord.security.envelope import EnvelopeView, encode_envelope
from accord.security.testing import Pki, random_identity
from tests.support.flood import FLOOD_N, KIB, bid, flood
from tests.support.runtime_kit import AgentSpec, make_agent

S = 1_000_000_000
T0 = 1_767_225_600 * S


# --- the replay guard --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("senders", [1, FLOOD_N], ids=["one sender", "as many senders"])
def test_replay_guard_keeps_at_most_its_ids_and_senders_under_a_flood(
    senders: int, capsys: pytest.CaptureFixture[str]
) -> None:
    guard = ReplayGuard(start_ns=T0)
    result = flood(
        f"replay guard, {'one sender' if senders == 1 else 'as many senders'}",
        FLOOD_N,
        lambda i: guard.admit(f"U{i % senders:055d}", f"{i:032x}", T0 + i, None, T0 + i),
        lambda: len(guard),
        capsys,
    )
    assert result.held == min(FLOOD_N, guard.max_ids_per_sender if senders == 1 else guard.max_senders)
    assert guard.sender_count == min(senders, guard.max_senders)
    assert result.peak_bytes < guard.max_senders * 2 * KIB


def test_frames_from_unknown_keys_leave_the_replay_guard_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    """10^5 frames of 1 KiB from keys nobody certified, each naming another key: all refused as unknown_key, the
    guard (and its honest entries) exactly as before, and nothing held."""
    pki = Pki(random.Random(1))
    honest = pki.agent("honest")
    guard = ReplayGuard(start_ns=T0)
    open_frame(seal(_bid(honest.id), honest), pki.trust, guard, T0)
    before = guard.snapshot()
    template = _raw_frame(_bid("U" + "F" * 55), key_id="U" + "F" * 55, pad=1024)
    reasons: Counter[Reason] = Counter()

    def feed(i: int) -> None:
        try:
            open_frame(template.replace(b"F" * 55, b"%055d" % i), pki.trust, guard, T0)
        except SecurityError as exc:
            reasons[exc.reason] += 1

    result = flood("replay guard, frames from unknown keys", FLOOD_N, feed, lambda: len(guard), capsys)
    assert reasons == {Reason.UNKNOWN_KEY: FLOOD_N}
    assert guard.snapshot() == before and result.held == 1
    assert result.peak_bytes < 64 * KIB


# --- trust before decode (D9) ------------------------------------------------------------------------------------
def _bid(sender: str) -> Bid:
    return bid("7" * 32, sender, now=T0, bid_id="b" * 32)


def _raw_frame(message: Bid, *, key_id: str, sig: bytes = bytes(64), pad: int = 0) -> bytes:
    """An envelope around ``message``'s payload (``pad`` bytes of unknown field appended), signed with ``sig``."""
    payload = encode(message) if not pad else _padded(message, pad)
    return encode_envelope(Envelope(v=1, payload_type=PAYLOAD_TYPE_FRAME, payload=payload, key_id=key_id, sig=sig))


def _padded(message: Bid, pad: int) -> bytes:
    return msgspec.msgpack.encode({**msgspec.msgpack.decode(encode(message)), "padding": "x" * pad})


@pytest.fixture
def decoder_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts payload decodes and payload copies out of the envelope, on every receive path."""
    calls: Counter[str] = Counter()
    decode = frames_module.decode
    envelope = EnvelopeView.envelope

    def counting_decode(payload: bytes) -> object:
        calls["decode"] += 1
        return decode(payload)

    def counting_envelope(self: EnvelopeView) -> Envelope:
        calls["copy"] += 1
        return envelope(self)

    monkeypatch.setattr(frames_module, "decode", counting_decode)
    monkeypatch.setattr(EnvelopeView, "envelope", counting_envelope)
    yield calls


def _receivers(pki: Pki, authenticated: bool) -> tuple[Agent, Requester]:
    broker = MemoryBroker()
    agent = make_agent(pki, broker.bus(), AgentSpec("receiver"), authenticated_bus=authenticated)
    requester = Requester(pki.agent("req"), bus=broker.bus(), trust=pki.trust, authenticated_bus=authenticated)
    return agent, requester


def _paths(pki: Pki, authenticated: bool) -> list[tuple[str, Callable[[str, bytes], None]]]:
    """Every receive path, fed one frame published as ``publisher``."""
    agent, requester = _receivers(pki, authenticated)

    def cfp(who: str, frame: bytes) -> None:
        agent._receive(BusMessage(subjects.announce(None, None, "chat", who), frame), broadcast=True)

    def agent_inbox(who: str, frame: bytes) -> None:
        agent._receive(BusMessage(subjects.direct(agent.id, who), frame), broadcast=False)

    def requester_inbox(who: str, frame: bytes) -> None:
        requester._receive(BusMessage(subjects.direct(requester.id, who), frame))

    def adverts(who: str, frame: bytes) -> None:
        requester._receive_advert(BusMessage(subjects.advertise(Tier.CLOUD, "eu", who), frame))

    return [
        ("agent cfp", cfp),
        ("agent inbox", agent_inbox),
        ("requester inbox", requester_inbox),
        ("requester adverts", adverts),
        ("open_frame", lambda who, f: open_frame(f, pki.trust, ReplayGuard(start_ns=T0), T0, publisher=who)),
        ("peek", lambda who, f: peek(f, trust=pki.trust, now_ns=T0, publisher=who)),
    ]


@pytest.mark.parametrize("authenticated", [False, True], ids=["any bus", "authenticated bus"])
def test_d9_a_frame_from_an_unknown_key_is_refused_before_its_payload_is_copied_or_decoded(
    authenticated: bool, decoder_calls: Counter[str]
) -> None:
    pki = Pki(random.Random(1))
    stranger = random_identity(random.Random(2))
    paths = _paths(pki, authenticated)
    decoder_calls.clear()  # certificates were decoded while the receivers were set up
    for size in (0, 1_000_000):  # a small frame and a 1 MiB one
        frame = _raw_frame(_bid(stranger.id), key_id=stranger.id, pad=size)
        for name, receive in paths:
            try:
                receive(stranger.id, frame)
            except SecurityError as exc:
                assert exc.reason is Reason.UNKNOWN_KEY, name
            assert decoder_calls == {}, (name, size)


def test_d9_a_frame_with_a_bad_signature_from_a_known_key_is_refused_before_its_payload_is_decoded(
    decoder_calls: Counter[str],
) -> None:
    """Verified paths check the signature over the payload bytes before decoding them (spec 7.5 steps 4, 5)."""
    pki = Pki(random.Random(1))
    known = pki.agent("known")
    frame = _raw_frame(_bid(known.id), key_id=known.id, sig=bytes(64), pad=1_000_000)
    for name, receive in _paths(pki, authenticated=False):
        decoder_calls.clear()
        try:
            receive(known.id, frame)
        except SecurityError as exc:
            assert exc.reason is Reason.BAD_SIGNATURE, name
        # peek never checks a signature (it is for frames the connection authenticated); a requester peeks an
        # advert from a trusted key to tell a repeated verified card from a new one, which it then verifies
        if name not in ("peek", "requester adverts"):
            assert decoder_calls["decode"] == 0, name


def test_an_honest_frame_is_copied_and_decoded_once(decoder_calls: Counter[str]) -> None:
    pki = Pki(random.Random(1))
    honest: Identity = pki.agent("honest")
    decoder_calls.clear()
    open_frame(seal(_bid(honest.id), honest), pki.trust, ReplayGuard(start_ns=T0), T0, publisher=honest.id)
    assert decoder_calls == {"copy": 1, "decode": 1}
