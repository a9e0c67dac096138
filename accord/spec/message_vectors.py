"""Golden message vectors: one deterministic example per message type, plus frames a decoder must refuse.

Pure: builds data from fixed values (fixed ids, agent ids, timestamps), reads no clock and writes no file.
``accord spec vectors`` writes :func:`vector_files` into spec/vectors/messages/; ``accord spec check`` and
tests/unit/spec/test_spec_golden.py decode every committed vector, compare it with its JSON form, re-encode it byte
for byte, and compare the files with what this module generates.

The examples tell one story: a requester announces a task, an edge agent bids and wins, acknowledges,
streams progress, returns a result and its attestation; a device agent declines; plus the other verbs.
The bid, award, acknowledgement, result and attestation come from :mod:`accord.spec.story`, which the
security vectors tell too. Digests inside them are real (the task's prompt digest, the award's bid digest,
the attestation's output and award digests), so an implementer can check those too.

Each valid vector file holds ``{"type", "description", "msgpack_hex", "json"}``; each invalid one holds
``{"name", "description", "msgpack_hex", "reason"}`` where ``reason`` is the decode error reason
(:data:`accord.protocol.codec.DECODE_ERROR_REASONS`).
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
from accord.spec.schemas import JsonObject, render_json
from accord.spec.story import MODEL, T0_NS, Answer, Parties, Story, at, fixed_id, tell

__all__ = [
    "CONTRACTOR",
    "DEVICE_AGENT",
    "INVALID_DIR",
    "REQUESTER",
    "T0_NS",
    "InvalidVector",
    "MessageVector",
    "invalid_vector_document",
    "invalid_vectors",
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
INVALID_DIR: Final = "invalid"
"""Subdirectory (of spec/vectors/messages/) holding the frames a decoder must refuse."""

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


class InvalidVector(msgspec.Struct, frozen=True, kw_only=True):
    """A frame a v1 decoder MUST refuse, and the decode error reason it must refuse it with."""

    name: str
    description: str
    frame: bytes
    reason: str


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


def invalid_vectors() -> list[InvalidVector]:
    """Frames every v1 decoder MUST refuse, each with the decode error reason it maps to."""
    bid = _story().bid
    valid: dict[str, object] = json.loads(encode_json(bid))  # the bid vector as plain data, keys in wire order
    bid_bytes = encode(bid)

    def bid_with(**changes: object) -> bytes:
        """The bid as a raw msgpack map (no types, no validation), these keys' values replaced in place."""
        return msgspec.msgpack.encode({**valid, **changes})

    def bid_without(key: str) -> bytes:
        """The bid as a raw msgpack map without ``key``."""
        return msgspec.msgpack.encode({k: v for k, v in valid.items() if k != key})

    return [
        InvalidVector(
            name="unknown_type",
            description="A well-formed message whose type tag this version does not know.",
            frame=bid_with(type="offer"),
            reason="unknown_type",
        ),
        InvalidVector(
            name="missing_type",
            description="A map without the type key.",
            frame=bid_without("type"),
            reason="invalid",
        ),
        InvalidVector(
            name="missing_required_field",
            description="A bid without its required price_micros.",
            frame=bid_without("price_micros"),
            reason="invalid",
        ),
        InvalidVector(
            name="out_of_bounds",
            description="A bid with quality 1.5 (bound: 0..1).",
            frame=bid_with(quality=1.5),
            reason="invalid",
        ),
        InvalidVector(
            name="float_for_int",
            description="A bid whose price_micros is the float 1200.0 (integers MUST be msgpack ints).",
            frame=bid_with(price_micros=1200.0),
            reason="invalid",
        ),
        InvalidVector(
            name="token_with_newline",
            description='A bid whose region is "eu\\n": a token never contains a newline (or a dot, or a space).',
            frame=bid_with(region="eu\n"),
            reason="invalid",
        ),
        InvalidVector(
            name="uppercase_id",
            description="A bid whose id is uppercase hex (ids are lowercase hex).",
            frame=bid_with(id=bid.id.upper()),
            reason="invalid",
        ),
        InvalidVector(
            name="unsupported_version",
            description="A valid bid carrying v=2: a v1 decoder refuses another major version.",
            frame=bid_with(v=2),
            reason="unsupported_version",
        ),
        InvalidVector(
            name="bin_for_str",
            description="A bid whose model is msgpack bin instead of str.",
            frame=bid_with(model=bid.model.encode()),
            reason="invalid",
        ),
        InvalidVector(
            name="ext_value",
            description="A bid whose model is a msgpack ext value.",
            frame=bid_with(model=msgspec.msgpack.Ext(1, b"x")),
            reason="invalid",
        ),
        InvalidVector(
            name="nil_for_required",
            description="A bid whose required price_micros is nil.",
            frame=bid_with(price_micros=None),
            reason="invalid",
        ),
        InvalidVector(
            name="truncated",
            description="The bid vector's bytes, cut one byte short.",
            frame=bid_bytes[:-1],
            reason="malformed",
        ),
        InvalidVector(
            name="trailing_bytes",
            description="The bid vector's bytes followed by one extra byte (nil).",
            frame=bid_bytes + b"\xc0",
            reason="malformed",
        ),
        InvalidVector(
            name="bad_utf8",
            description="A bid whose region string holds the invalid UTF-8 byte 0xff.",
            frame=bid_with(region="eu-X").replace(b"eu-X", b"eu-\xff"),
            reason="malformed",
        ),
        InvalidVector(
            name="not_a_map",
            description="A msgpack array instead of a map.",
            frame=msgspec.msgpack.encode([1, 2, 3]),
            reason="invalid",
        ),
    ]


def invalid_vector_document(vector: InvalidVector) -> JsonObject:
    return {
        "name": vector.name,
        "description": vector.description,
        "msgpack_hex": vector.frame.hex(),
        "reason": vector.reason,
    }


def vector_files() -> dict[str, bytes]:
    """File path (relative to spec/vectors/messages/, '/'-separated) -> exact file bytes."""
    files = {vector_file_name(type(v.message)): render_json(vector_document(v)) for v in message_vectors()}
    for invalid in invalid_vectors():
        files[f"{INVALID_DIR}/{invalid.name}.json"] = render_json(invalid_vector_document(invalid))
    return files
