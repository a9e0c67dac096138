"""The example story the golden vectors tell, built from fixed values so that the vectors never change.

A requester calls for proposals on a task; a contractor bids, wins the award at the second price,
acknowledges it, and returns a result that carries its attestation. Two vector sets tell it:

- the message vectors (:mod:`accord.spec.message_vectors`): readable placeholder agent ids and a
  placeholder attestation, since they show what a message looks like on the wire;
- the security vectors (:mod:`accord.spec.security_vectors`): RFC 8032 test keys and a signed
  attestation, since their frames must verify.

What the two tellings differ in is the caller's: who the parties are, how the ids are named, the prompt
and the answer, and a few times of the award round (:class:`Timeline`). The rest (model, prices, the bid
and result times, the lease) is fixed here. Both sets were committed before they shared this code, so
every value either keeps is the one it committed. Pure: reads no clock and writes no file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict

from accord.protocol.codec import encode
from accord.protocol.digests import output_digest, payload_digest, prompt_digest
from accord.protocol.messages import (
    Attestation,
    Award,
    AwardAck,
    Bid,
    ChatMessage,
    Result,
    Tier,
    Timings,
    Usage,
)

__all__ = [
    "MODEL",
    "MS",
    "S",
    "T0_NS",
    "Answer",
    "Parties",
    "Story",
    "Timeline",
    "at",
    "fixed_id",
    "tell",
]

T0_NS: Final = 1_767_225_600_000_000_000
"""2026-01-01T00:00:00Z in ns: the base of every timestamp in the vectors."""
MS: Final = 1_000_000
"""Nanoseconds per millisecond."""
S: Final = 1_000 * MS
"""Nanoseconds per second."""
MODEL: Final = "llama-3.1-8b-instruct:q4"
"""The one model the contractor offers, bids with and answers with."""


def at(ms: int) -> int:
    """The timestamp ``ms`` milliseconds after :data:`T0_NS`."""
    return T0_NS + ms * MS


def fixed_id(namespace: str, label: str) -> str:
    """A 128-bit lowercase hex id derived from a label, so that it is the same on every run."""
    return hashlib.sha256(f"{namespace}:{label}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Parties:
    """The agent ids of the two sides."""

    requester: str
    contractor: str


@dataclass(frozen=True)
class Answer:
    """What the contractor's backend made of the prompt."""

    output: str
    usage: Usage
    timings: Timings
    backend: str


@dataclass(frozen=True)
class Timeline:
    """The times of the award round, in ms after :data:`T0_NS`.

    The defaults are the message vectors' times; the security vectors were made with times of their own.
    """

    bid_valid_until_ms: int = 2_000
    award_ms: int = 1_060
    award_expires_ms: int | None = 1_260
    ack_by_ms: int = 1_260
    ack_ms: int = 1_070


class _Header(TypedDict):
    """The fields every message of the story opens with: its id, sender and time, and the task attempt."""

    id: str
    sender: str
    ts: int
    task_id: str
    attempt: int


@dataclass(frozen=True)
class Story:
    """The messages of one awarded task, attempt 1, in the order they are sent."""

    task_id: str
    bid: Bid
    award: Award
    award_ack: AwardAck
    attestation: Attestation
    """The statement the contractor attests to (the result carries it, signed or not)."""
    result: Result


def tell(
    parties: Parties,
    *,
    ids: Callable[[str], str],
    prompt: Sequence[ChatMessage],
    answer: Answer,
    timeline: Timeline = Timeline(),
    attest: Callable[[Attestation], bytes],
) -> Story:
    """The story between ``parties``.

    ``ids`` turns a label (``task``, ``bid``, ``award``, ``award-ack``, ``attestation``, ``result``) into a
    message or task id; ``attest`` turns the statement into the bytes the result carries. Digests are real:
    the award's bid digest, the statement's prompt, award and output digests.
    """
    requester, contractor = parties.requester, parties.contractor
    task_id = ids("task")

    def header(label: str, sender: str, ms: int) -> _Header:
        return {"id": ids(label), "sender": sender, "ts": at(ms), "task_id": task_id, "attempt": 1}

    bid = Bid(
        **header("bid", contractor, 1_010),
        model=MODEL,
        price_micros=1_200,
        est_latency_ms=900,
        quality=0.62,
        valid_until_ns=at(timeline.bid_valid_until_ms),
        tier=Tier.EDGE,
        region="eu-central",
        residency=["eu"],
    )
    expires = timeline.award_expires_ms
    award = Award(
        **header("award", requester, timeline.award_ms),
        expires_ns=None if expires is None else at(expires),
        winner=contractor,
        bid_id=bid.id,
        bid_digest=payload_digest(encode(bid)),
        price_micros=1_100,
        ack_by_ns=at(timeline.ack_by_ms),
        lease_until_ns=at(5_000),
    )
    ack = AwardAck(**header("award-ack", contractor, timeline.ack_ms), award_id=award.id)
    statement = Attestation(
        **header("attestation", contractor, 1_900),
        agent=contractor,
        requester=requester,
        prompt_digest=prompt_digest(prompt),
        award_digest=payload_digest(encode(award)),
        output_digest=output_digest(answer.output),
        model=MODEL,
        backend=answer.backend,
        usage=answer.usage,
        timings=answer.timings,
    )
    result = Result(
        **header("result", contractor, 1_900),
        award_id=award.id,
        model=MODEL,
        output=answer.output,
        usage=answer.usage,
        timings=answer.timings,
        attestation=attest(statement),
    )
    return Story(task_id=task_id, bid=bid, award=award, award_ack=ack, attestation=statement, result=result)
