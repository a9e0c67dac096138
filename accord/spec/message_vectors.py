"""Golden message vectors: one deterministic example per message type, plus the decoder's edge cases.

Pure: builds data from fixed values (fixed ids, agent ids, timestamps), reads no clock and writes no file.
``accord spec vectors`` writes :func:`vector_files` into spec/vectors/messages/; ``accord spec check`` and
tests/unit/spec/test_spec_golden.py decode every committed vector, compare it with its JSON form, re-encode it byte
for byte, and compare the files with what this module generates.

The examples tell one story: a requester announces a task, an edge agent bids and wins, acknowledges,
streams progress, returns a result and its attestation; a device agent declines; plus the other verbs.
The bid, award, acknowledgement, result and attestation come from :mod:`accord.spec.story`, which the
security vectors tell too. Digests inside them are real (the task's prompt digest, the award's bid digest,
the attestation's output and award digests), so an implementer can check those too.

Each example's file holds ``{"type", "description", "msgpack_hex", "json"}``. The frames a decoder must refuse
(``invalid/``) or accept although they are not canonical (``accept/``), and the JSON spellings a reader must
accept (``json/``), are varied from these examples by :mod:`accord.spec.decoder_vectors`.
"""

from __future__ import annotations

import json
from typing import Final

import msgspec

from accord.protocol.codec import encode, encode_json
from accord.protocol.digests import prompt_digest
from accord.protocol.messages import (
    MESSAGE_TYPES,
    Advertise,
    Attestation,
    Award,
    AwardAck,
    AwardReject,
    Bid,
    Cancel,
    ChatMessage,
    Connectivity,
    Constraints,
    Decline,
    Failure,
    Mechanism,
    Message,
    ModelOffer,
    Policy,
    Privacy,
    Progress,
    Result,
    Role,
    Task,
    Tier,
    Timings,
    Usage,
    Withdraw,
    message_tag,
)
from accord.spec.decoder_vectors import Examples, decoder_vector_files
from accord.spec.schemas import JsonObject, render_json
from accord.spec.story import MODEL, T0_NS, Answer, Parties, Story, at, fixed_id, tell

__all__ = [
    "CONTRACTOR",
    "DEVICE_AGENT",
    "REQUESTER",
    "T0_NS",
    "MessageVector",
    "message_vectors",
    "vector_document",
    "vector_file_name",
    "vector_files",
]


def _agent(name: str) -> str:
    """A readable, pattern-valid agent id: 'U' + name + 'A' padding to 56 characters (not a real key)."""
    body = (name + "A" * 55)[:55]
    return "U" + body


def _id(label: str) -> str:
    return fixed_id("accord-vector", label)


REQUESTER: Final = _agent("REQUESTER")
CONTRACTOR: Final = _agent("CONTRACTQREDGE")
DEVICE_AGENT: Final = _agent("DEVICEPHQNE")

_PROMPT: Final = (
    ChatMessage(role=Role.SYSTEM, content="Answer in one sentence."),
    ChatMessage(role=Role.USER, content="Résumez: « Les données restent dans l'UE. » (日本語も可)"),
)
_ANSWER: Final = Answer(
    output="The data stays in the EU.",
    usage=Usage(input_tokens=48, output_tokens=9),
    timings=Timings(queued_ms=5, ttft_ms=190, total_ms=820),
    backend="llama_cpp",
)
_PLACEHOLDER_ATTESTATION: Final = b'{"payloadType":"application/vnd.in-toto+json","payload":"","signatures":[]}'

_DESCRIPTIONS: Final[dict[type[Message], str]] = {
    Advertise: "An edge agent's card: one model with its price sheet, residency class eu, 4 slots.",
    Withdraw: "The edge agent leaves the mesh (reason shutdown).",
    Task: (
        "A call for proposals with two chat messages (non-ASCII content), its prompt digest, "
        "constraints (deadline, budget, residency eu, internal privacy, edge or cloud), second price."
    ),
    Bid: "The edge agent's bid for attempt 1 (expires_ns null).",
    Decline: "A device agent declines: not certified for residency eu.",
    Award: (
        "The requester awards attempt 1 to the edge agent at the second price; bid_digest is the "
        "SHA-256 of the bid vector's msgpack bytes."
    ),
    AwardAck: "The winner accepts the award (award_id = the award's id).",
    AwardReject: "An agent refuses the award of attempt 2: busy.",
    Progress: "The first streamed chunk of output (seq 0).",
    Result: (
        "The result of attempt 1 with usage and timings; attestation is a placeholder byte string "
        "(encoded as msgpack bin, as base64 in JSON)."
    ),
    Attestation: (
        "The statement the winner attests to: prompt digest of the task, award digest (SHA-256 of the "
        "award vector's bytes), output digest (SHA-256 of the UTF-8 output)."
    ),
    Cancel: "The requester cancels every attempt of another task.",
    Failure: "A contractor reports that its backend timed out.",
}


class MessageVector(msgspec.Struct, frozen=True, kw_only=True):
    """One golden example: the message and what it shows."""

    description: str
    message: Message


def _story() -> Story:
    """The shared story (accord.spec.story) told with the readable agent ids and a placeholder attestation."""
    return tell(
        Parties(requester=REQUESTER, contractor=CONTRACTOR),
        ids=_id,
        prompt=_PROMPT,
        answer=_ANSWER,
        attest=lambda _statement: _PLACEHOLDER_ATTESTATION,
    )


def _examples() -> list[Message]:
    """The story's messages plus one of each other type, told around the same task."""
    story = _story()
    task_id = story.task_id
    advertise = Advertise(
        id=_id("advertise"),
        sender=CONTRACTOR,
        ts=T0_NS,
        expires_ns=at(10_000),
        name="edge-fra-1",
        tier=Tier.EDGE,
        region="eu-central",
        residency=["eu"],
        skills=["chat", "summarize"],
        models=[
            ModelOffer(
                name=MODEL,
                context_window=131_072,
                tokens_per_s=85.5,
                price_in_per_1k_micros=40,
                price_out_per_1k_micros=120,
                quality=0.62,
                ttft_ms=180,
            )
        ],
        slots=4,
        load=1,
        connectivity=Connectivity(metered=False, intermittent=False, rtt_ms=12, bandwidth_kbps=250_000),
        battery=None,
        protocol_versions=[1],
        ttl_ms=10_000,
        seq=42,
    )
    task = Task(
        id=_id("task-message"),
        sender=REQUESTER,
        ts=at(1_000),
        expires_ns=at(3_000),
        task_id=task_id,
        kind="chat",
        messages=list(_PROMPT),
        prompt_digest=prompt_digest(_PROMPT),
        prompt_ref=None,
        est_input_tokens=48,
        max_output_tokens=128,
        constraints=Constraints(
            deadline_ns=at(6_000),
            max_price_micros=5_000,
            min_quality=0.5,
            residency="eu",
            privacy=Privacy.INTERNAL,
            preferred_tiers=[Tier.EDGE, Tier.CLOUD],
        ),
        policy=Policy(lambda_price=2.0, mu_latency=0.05),
        mechanism=Mechanism.SECOND_PRICE,
        bid_window_ms=50,
        attempt=1,
    )
    decline = Decline(
        id=_id("decline"),
        sender=DEVICE_AGENT,
        ts=at(1_005),
        task_id=task_id,
        attempt=1,
        reason="residency",
        detail="not certified for residency class eu",
    )
    award_reject = AwardReject(
        id=_id("award-reject"),
        sender=CONTRACTOR,
        ts=at(1_075),
        task_id=task_id,
        attempt=2,
        award_id=_id("award-attempt-2"),
        reason="busy",
        detail="all 4 slots taken",
    )
    progress = Progress(
        id=_id("progress"),
        sender=CONTRACTOR,
        ts=at(1_300),
        task_id=task_id,
        attempt=1,
        seq=0,
        delta="The data ",
        output_tokens=3,
    )
    cancel = Cancel(
        id=_id("cancel"), sender=REQUESTER, ts=at(1_950), task_id=_id("task-2"), attempt=None, reason="superseded"
    )
    failure = Failure(
        id=_id("failure"),
        sender=CONTRACTOR,
        ts=at(2_500),
        task_id=_id("task-3"),
        attempt=2,
        reason="backend_timeout",
        detail="backend did not answer within 3000 ms",
    )
    withdraw = Withdraw(id=_id("withdraw"), sender=CONTRACTOR, ts=at(9_000), reason="shutdown")
    told = [story.bid, story.award, story.award_ack, story.attestation, story.result]
    return [advertise, withdraw, task, decline, award_reject, progress, cancel, failure, *told]


def message_vectors() -> list[MessageVector]:
    """One example per message type, in MESSAGE_TYPES order."""
    examples = {type(message): message for message in _examples()}
    return [MessageVector(message=examples[type_], description=_DESCRIPTIONS[type_]) for type_ in MESSAGE_TYPES]


def vector_file_name(type_: type[Message]) -> str:
    """``<tag>.json``, e.g. ``award_ack.json``."""
    return f"{message_tag(type_)}.json"


def vector_document(vector: MessageVector) -> JsonObject:
    """The JSON document of one valid vector file."""
    parsed = json.loads(encode_json(vector.message))
    return {
        "type": message_tag(type(vector.message)),
        "description": vector.description,
        "msgpack_hex": encode(vector.message).hex(),
        "json": parsed,
    }


def vector_files() -> dict[str, bytes]:
    """File path (relative to spec/vectors/messages/, '/'-separated) -> exact file bytes."""
    vectors = message_vectors()
    files = {vector_file_name(type(v.message)): render_json(vector_document(v)) for v in vectors}
    examples = {type(v.message): v.message for v in vectors}
    bid, task, result = examples[Bid], examples[Task], examples[Result]
    assert isinstance(bid, Bid) and isinstance(task, Task) and isinstance(result, Result)
    return files | decoder_vector_files(Examples(bid=bid, task=task, result=result))
