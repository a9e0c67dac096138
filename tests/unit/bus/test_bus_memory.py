"""MemoryBus specifics and the pure helpers of accord.bus (subject matching and checks). No sockets."""

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
    check_subject,
    subject_matches,
)

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
