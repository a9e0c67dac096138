"""MemoryBus specifics and the pure helpers of accord.bus (subjects, permission template). No sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.bus import (
    Bus,
    FaultPlan,
    FaultyBus,
    InvalidSubjectError,
    MemoryBroker,
    MemoryBus,
    PayloadTooLargeError,
    agent_permissions,
    check_subject,
    inbox_prefix,
    kv_award_key,
    subject_matches,
)
from accord.errors import LocalProtocolError
from accord.protocol import subjects
from accord.protocol.messages import Tier

A = "U" + "A" * 55
B = "U" + "B" * 55

tokens = st.text(alphabet="abcxyz019_-", min_size=1, max_size=5)


def test_implementations_satisfy_the_port() -> None:
    assert isinstance(MemoryBus(), Bus)
    assert isinstance(FaultyBus(MemoryBus(), "e", FaultPlan(0)), Bus)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("*.b", "a.b", True),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.x.d", False),
        (">", "a", True),
    ],
)
def test_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


@given(st.lists(tokens, min_size=1, max_size=6))
def test_a_literal_subject_matches_itself_and_its_wildcards(parts: list[str]) -> None:
    subject = ".".join(parts)
    assert check_subject(subject, wildcards=False) == subject
    assert subject_matches(subject, subject)
    assert subject_matches(".".join(["*"] * len(parts)), subject)
    assert subject_matches(">", subject)
    assert not subject_matches(subject + ".more", subject)


@pytest.mark.parametrize("bad", ["", "a b", "a..b", ".a", "a.", "a.b*", "a.>.b", "a\nb"])
def test_bad_subjects(bad: str) -> None:
    with pytest.raises(InvalidSubjectError):
        check_subject(bad, wildcards=True)


def test_wildcards_only_where_allowed() -> None:
    assert check_subject("a.*.>", wildcards=True) == "a.*.>"
    with pytest.raises(InvalidSubjectError):
        check_subject("a.*", wildcards=False)


@pytest.mark.asyncio
async def test_payload_limit() -> None:
    bus = MemoryBroker(max_payload=10).bus()
    await bus.publish("a", b"x" * 10)
    with pytest.raises(PayloadTooLargeError):
        await bus.publish("a", b"x" * 11)


@pytest.mark.asyncio
async def test_queue_group_choice_is_reproducible_with_a_seed() -> None:
    async def run(seed: int) -> list[int]:
        broker = MemoryBroker(seed=seed)
        pub = broker.bus()
        subs = [await broker.bus().subscribe("w", queue="q", max_pending=100) for _ in range(3)]
        for i in range(30):
            await pub.publish("w", b"%d" % i)
        return [s.pending for s in subs]

    assert await run(5) == await run(5)
    assert sum(await run(5)) == 30


@pytest.mark.asyncio
async def test_memory_consumer_redelivers_after_ack_wait() -> None:
    bus = MemoryBus()
    await bus.ensure_stream("S", ["s.>"])
    await bus.publish_durable("s.1", b"x", msg_id="1")
    consumer = await bus.durable_consumer("S", "c", ack_wait_ms=20)
    first = await consumer.fetch(1, timeout_ms=100)
    assert [m.deliveries for m in first] == [1]
    again = await consumer.fetch(1, timeout_ms=1000)  # not acked: comes back after ack_wait
    assert [(m.data, m.deliveries) for m in again] == [(b"x", 2)]
    await again[0].ack()
    assert await consumer.fetch(1, timeout_ms=50) == []


# --- the permission template -----------------------------------------------------------------------------------
def _allowed(perms: dict[str, object], op: str, subject: str) -> bool:
    allow = perms[op]["allow"]  # type: ignore[index]
    return any(subject_matches(p, subject) for p in allow)


def test_agent_may_publish_exactly_as_itself() -> None:
    pa, pb = agent_permissions(A), agent_permissions(B)
    own = [
        subjects.advertise(Tier.CLOUD, "eu", A),
        subjects.announce(Tier.EDGE, "eu-gdpr", "chat", A),
        subjects.announce(None, None, "chat", A),
        subjects.direct(B, A),
        subjects.log("outcome", A),
    ]
    for s in own:
        assert _allowed(pa, "publish", s), s
        assert not _allowed(pb, "publish", s), s
    assert not _allowed(pa, "publish", subjects.direct(A, B)), "cannot speak as B in A's own inbox"
    assert not _allowed(pa, "publish", "$JS.API.STREAM.DELETE.X")
    assert pa["allow_responses"] == {"max": 1}


def test_agent_subscribes_to_its_inbox_and_replies_only() -> None:
    pa = agent_permissions(A)
    assert _allowed(pa, "subscribe", subjects.direct_filter(A))
    assert not _allowed(pa, "subscribe", subjects.direct(B, A)), "B's inbox is B's"
    assert _allowed(pa, "subscribe", f"{inbox_prefix(A)}.xyz.1")
    assert not _allowed(pa, "subscribe", f"{inbox_prefix(B)}.xyz.1")
    assert not any(p.startswith("_INBOX.>") or p == ">" for p in pa["subscribe"]["allow"])
    assert _allowed(pa, "subscribe", subjects.advertise(Tier.DEVICE, "us", B))
    assert not _allowed(pa, "subscribe", subjects.log("outcome", B))
    assert _allowed(agent_permissions(A, read_logs=True), "subscribe", subjects.log("outcome", B))


def test_calls_for_proposals_can_be_narrowed_by_tier_and_residency() -> None:
    pa = agent_permissions(A, tier=Tier.EDGE, residencies=["eu-gdpr"])
    sees = lambda s: _allowed(pa, "subscribe", s)  # noqa: E731
    assert sees(subjects.announce(Tier.EDGE, "eu-gdpr", "chat", B))
    assert sees(subjects.announce(None, None, "chat", B))
    assert sees(subjects.announce(Tier.EDGE, None, "code", B))
    assert not sees(subjects.announce(Tier.CLOUD, "eu-gdpr", "chat", B))
    assert not sees(subjects.announce(Tier.EDGE, "us-hipaa", "chat", B))
    assert _allowed(agent_permissions(A), "subscribe", subjects.announce(Tier.CLOUD, "us", "x", B))
    narrow = agent_permissions(A, tier=Tier.EDGE, residencies=[], skills=["chat"])
    assert _allowed(narrow, "subscribe", subjects.announce(Tier.EDGE, None, "chat", B))
    assert not _allowed(narrow, "subscribe", subjects.announce(Tier.EDGE, None, "code", B))


def test_kv_permissions_confine_writes_to_own_keys() -> None:
    pa = agent_permissions(A, kv_buckets=["awards"])
    assert _allowed(pa, "publish", f"$KV.awards.{kv_award_key(A, 'a' * 32)}")
    assert not _allowed(pa, "publish", f"$KV.awards.{kv_award_key(B, 'a' * 32)}")
    assert _allowed(pa, "publish", "$JS.API.STREAM.INFO.KV_awards")


def test_template_refuses_bad_ids() -> None:
    for bad in ("*", ">", "U" + "a" * 55, "x.y"):
        with pytest.raises(LocalProtocolError):
            agent_permissions(bad)
    with pytest.raises(LocalProtocolError):
        agent_permissions(A, tier=Tier.EDGE, residencies=["eu.*"])
    with pytest.raises(ValueError):
        agent_permissions(A, residencies=["eu"])
