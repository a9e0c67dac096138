"""Hand-written Hypothesis strategies for every Accord v1 message and embedded record.

Every value drawn satisfies the msgspec ``Meta`` bounds of accord.protocol.messages, so
``decode(encode(m)) == m`` holds for all of them (tests/unit/protocol/test_protocol_roundtrip.py checks it).

Usage::

    from tests.support import hypothesis_strategies as acst

    @given(acst.bids(task_id=st.just(task.task_id)))
    def test_something(bid: Bid) -> None: ...

    @given(acst.messages())          # any message type
    @given(acst.messages_of(Award))  # one given type

Every message and record strategy takes keyword overrides, one strategy per field (an unknown field name is a
TypeError). Scalar helpers: ``message_ids()``, ``task_ids()``, ``agent_ids()``, ``digests()``, ``tokens()``,
``model_names()``, ``times_ns()``, ``durations_ms()``, ``micros()``, ``counts()``, ``attempts()``, ``units()``,
``weights()``, ``short_texts()``, ``long_texts()``, ``reason_tokens()``.

Sizes: lists and texts are kept short (well inside the bounds) so that a test of 200 examples stays fast; the
boundary sizes are tested directly in tests/unit/protocol/test_protocol_messages.py.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from accord.protocol.digests import prompt_digest
from accord.protocol.messages import (
    PROTOCOL_VERSION,
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
    ReasonCode,
    Result,
    Role,
    Task,
    Tier,
    Timings,
    Usage,
    Withdraw,
)

__all__ = [
    "MESSAGE_STRATEGIES",
    "RECORD_STRATEGIES",
    "advertises",
    "agent_ids",
    "attempts",
    "attestations",
    "award_acks",
    "award_rejects",
    "awards",
    "bids",
    "cancels",
    "chat_messages",
    "connectivities",
    "constraints",
    "counts",
    "declines",
    "digests",
    "durations_ms",
    "failures",
    "headers",
    "long_texts",
    "messages",
    "messages_of",
    "micros",
    "model_names",
    "model_offers",
    "policies",
    "progresses",
    "reason_tokens",
    "results",
    "short_texts",
    "task_ids",
    "tasks",
    "timings",
    "times_ns",
    "tokens",
    "units",
    "usages",
    "versions",
    "weights",
    "wire_frames",
    "withdraws",
]

S = TypeVar("S", bound=msgspec.Struct)
Strategy = SearchStrategy[Any]

I64_MAX = 2**63 - 1
TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"
MODEL_ALPHABET = TOKEN_ALPHABET + ".:/@+"


# --- scalars ---------------------------------------------------------------------------------------------------
def message_ids() -> SearchStrategy[str]:
    """128 random bits as 32 lowercase hex digits."""
    return st.binary(min_size=16, max_size=16).map(bytes.hex)


def task_ids() -> SearchStrategy[str]:
    return message_ids()


def agent_ids() -> SearchStrategy[str]:
    """'U' + 55 characters of A-Z2-7 (the shape of a NATS user nkey; no checksum is implied)."""
    return st.binary(min_size=35, max_size=35).map(lambda b: "U" + base64.b32encode(b).decode("ascii")[:55])


def digests() -> SearchStrategy[str]:
    """SHA-256 shaped: 64 lowercase hex digits."""
    return st.binary(min_size=32, max_size=32).map(bytes.hex)


def tokens(max_size: int = 64) -> SearchStrategy[str]:
    """A subject-safe token: 1..64 of [A-Za-z0-9_-]."""
    return st.text(TOKEN_ALPHABET, min_size=1, max_size=min(max_size, 64))


def model_names() -> SearchStrategy[str]:
    return st.text(MODEL_ALPHABET, min_size=1, max_size=128)


def times_ns() -> SearchStrategy[int]:
    """Absolute times: anywhere in the int64 range, often near today."""
    return st.one_of(st.integers(0, I64_MAX), st.integers(1_600_000_000 * 10**9, 2_000_000_000 * 10**9))


def durations_ms() -> SearchStrategy[int]:
    return st.integers(0, 7 * 24 * 3600 * 1000)


def micros() -> SearchStrategy[int]:
    return st.integers(0, 10**15)


def counts() -> SearchStrategy[int]:
    return st.integers(0, 2**31 - 1)


def attempts() -> SearchStrategy[int]:
    return st.integers(1, 1000)


def units() -> SearchStrategy[float]:
    """A float in [0, 1] (never NaN)."""
    return st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def weights() -> SearchStrategy[float]:
    return st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


def versions() -> SearchStrategy[int]:
    """A protocol major version as listed in Advertise.protocol_versions (1..255)."""
    return st.integers(1, 255)


def short_texts(max_size: int = 64) -> SearchStrategy[str]:
    """Any Unicode text (no surrogates) of at most ``max_size`` (<= 1024) characters."""
    return st.text(max_size=min(max_size, 1024))


def long_texts(max_size: int = 200) -> SearchStrategy[str]:
    """Any Unicode text (no surrogates); the bound is 256 Ki characters, drawn short by default."""
    return st.text(max_size=max_size)


def reason_tokens() -> SearchStrategy[str]:
    """A known reason code most of the time, sometimes an arbitrary token (a code from a newer minor version)."""
    return st.one_of(st.sampled_from([c.value for c in ReasonCode]), tokens(32))


# --- the generic builder ---------------------------------------------------------------------------------------
def _build(cls: type[S], fields: Mapping[str, Strategy], overrides: Mapping[str, Strategy]) -> SearchStrategy[S]:
    """st.builds over every field of ``cls``; a field without a strategy (a new field: add it here) is refused."""
    names = set(cls.__struct_fields__)
    if missing := names - set(fields):
        raise TypeError(
            f"tests/support/hypothesis_strategies.py has no strategy for {cls.__name__} field(s) {sorted(missing)}"
        )
    if unknown := set(overrides) - names:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return st.builds(cls, **{**fields, **overrides})


# --- embedded records ------------------------------------------------------------------------------------------
def model_offers(**overrides: Strategy) -> SearchStrategy[ModelOffer]:
    fields = {
        "name": model_names(),
        "context_window": st.integers(1, 10_000_000),
        "tokens_per_s": st.floats(min_value=0.0, max_value=1e6, exclude_min=True),
        "price_in_per_1k_micros": micros(),
        "price_out_per_1k_micros": micros(),
        "quality": units(),
        "ttft_ms": durations_ms(),
    }
    return _build(ModelOffer, fields, overrides)


def connectivities(**overrides: Strategy) -> SearchStrategy[Connectivity]:
    fields = {
        "metered": st.booleans(),
        "intermittent": st.booleans(),
        "rtt_ms": durations_ms(),
        "bandwidth_kbps": st.integers(0, 10**9),
    }
    return _build(Connectivity, fields, overrides)


def chat_messages(**overrides: Strategy) -> SearchStrategy[ChatMessage]:
    return _build(ChatMessage, {"role": st.sampled_from(Role), "content": long_texts()}, overrides)


def constraints(**overrides: Strategy) -> SearchStrategy[Constraints]:
    fields = {
        "deadline_ns": times_ns(),
        "max_price_micros": micros(),
        "min_quality": units(),
        "residency": st.none() | tokens(),
        "privacy": st.sampled_from(Privacy),
        "preferred_tiers": st.lists(st.sampled_from(Tier), max_size=3),
    }
    return _build(Constraints, fields, overrides)


def policies(**overrides: Strategy) -> SearchStrategy[Policy]:
    return _build(Policy, {"lambda_price": weights(), "mu_latency": weights()}, overrides)


def usages(**overrides: Strategy) -> SearchStrategy[Usage]:
    return _build(Usage, {"input_tokens": counts(), "output_tokens": counts()}, overrides)


def timings(**overrides: Strategy) -> SearchStrategy[Timings]:
    fields = {"queued_ms": durations_ms(), "ttft_ms": durations_ms(), "total_ms": durations_ms()}
    return _build(Timings, fields, overrides)


# --- messages --------------------------------------------------------------------------------------------------
def headers() -> dict[str, Strategy]:
    """Strategies for the header fields every message carries (``v`` is always this major version)."""
    return {
        "v": st.just(PROTOCOL_VERSION),
        "id": message_ids(),
        "sender": agent_ids(),
        "ts": times_ns(),
        "expires_ns": st.none() | times_ns(),
    }


def advertises(**overrides: Strategy) -> SearchStrategy[Advertise]:
    fields = {
        **headers(),
        "name": tokens(),
        "tier": st.sampled_from(Tier),
        "region": tokens(),
        "residency": st.lists(tokens(16), max_size=16),
        "skills": st.lists(tokens(16), max_size=32),
        "models": st.lists(model_offers(), min_size=1, max_size=4),
        "slots": st.integers(1, 100_000),
        "load": st.integers(0, 100_000),
        "connectivity": connectivities(),
        "battery": st.none() | units(),
        "protocol_versions": st.lists(versions(), min_size=1, max_size=8),
        "ttl_ms": st.integers(100, 3_600_000),
        "seq": counts(),
    }
    return _build(Advertise, fields, overrides)


def withdraws(**overrides: Strategy) -> SearchStrategy[Withdraw]:
    return _build(Withdraw, {**headers(), "reason": reason_tokens()}, overrides)


def _with_prompt_digest(task: Task) -> Task:
    """A task carrying its messages also carries their true digest (as a well-behaved requester sends it)."""
    if not task.messages:
        return task
    return msgspec.structs.replace(task, prompt_digest=prompt_digest(task.messages))


def tasks(**overrides: Strategy) -> SearchStrategy[Task]:
    """Tasks; when ``messages`` is non-empty (and ``prompt_digest`` is not overridden) the digest is theirs."""
    fields = {
        **headers(),
        "task_id": task_ids(),
        "kind": tokens(16),
        "messages": st.lists(chat_messages(), max_size=6),
        "prompt_digest": digests(),
        "prompt_ref": st.none() | short_texts(),
        "est_input_tokens": counts(),
        "max_output_tokens": st.integers(1, 1_000_000),
        "constraints": constraints(),
        "policy": policies(),
        "mechanism": st.sampled_from(Mechanism),
        "bid_window_ms": durations_ms(),
        "attempt": attempts(),
    }
    built = _build(Task, fields, overrides)
    return built if "prompt_digest" in overrides else built.map(_with_prompt_digest)


def bids(**overrides: Strategy) -> SearchStrategy[Bid]:
    fields = {
        **headers(),
        "task_id": task_ids(),
        "attempt": attempts(),
        "model": model_names(),
        "price_micros": micros(),
        "est_latency_ms": durations_ms(),
        "quality": units(),
        "valid_until_ns": times_ns(),
        "tier": st.sampled_from(Tier),
        "region": tokens(),
        "residency": st.lists(tokens(16), max_size=16),
    }
    return _build(Bid, fields, overrides)


def declines(**overrides: Strategy) -> SearchStrategy[Decline]:
    fields = {
        **headers(),
        "task_id": task_ids(),
        "attempt": attempts(),
        "reason": reason_tokens(),
        "detail": short_texts(),
    }
    return _build(Decline, fields, overrides)


def awards(**overrides: Strategy) -> SearchStrategy[Award]:
    fields = {
        **headers(),
        "task_id": task_ids(),
        "attempt": attempts(),
        "winner": agent_ids(),
        "bid_id": message_ids(),
        "bid_digest": digests(),
        "price_micros": micros(),
        "ack_by_ns": times_ns(),
        "lease_until_ns": times_ns(),
    }
    return _build(Award, fields, overrides)


def award_acks(**overrides: Strategy) -> SearchStrategy[AwardAck]:
    fields = {**headers(), "task_id": task_ids(), "attempt": attempts(), "award_id": message_ids()}
    return _build(AwardAck, fields, overrides)


def award_rejects(**overrides: Strategy) -> SearchStrategy[AwardReject]:
    fields = {
        **headers(),
        "task_id": task_ids(),
        "attempt": attempts(),
        "award_id": message_ids(),
        "reason": reason_tokens(),
        "detail": short_texts(),
    }
    return _build(AwardReject, fields, overrides)


def progresses(**overrides: Strategy) -> SearchStrategy[Progress]:
    fields = {
        **headers(),
        "task_id": task_ids(),
        "attempt": attempts(),
        "seq": counts(),
        "delta": long_texts(),
        "output_tokens": counts(),
    }
    return _build(Progress, fields, overrides)


def results(**overrides: Strategy) -> SearchStrategy[Result]:
    fields = {
        **headers(),
        "task_id": task_ids(),
        "attempt": attempts(),
        "award_id": message_ids(),
        "model": model_names(),
        "output": long_texts(),
        "usage": usages(),
        "timings": timings(),
        "attestation": st.binary(max_size=256),
    }
    return _build(Result, fields, overrides)


def attestations(**overrides: Strategy) -> SearchStrategy[Attestation]:
    fields = {
        **headers(),
        "task_id": task_ids(),
        "attempt": attempts(),
        "agent": agent_ids(),
        "requester": agent_ids(),
        "prompt_digest": digests(),
        "award_digest": digests(),
        "output_digest": digests(),
        "model": model_names(),
        "backend": tokens(),
        "usage": usages(),
        "timings": timings(),
    }
    return _build(Attestation, fields, overrides)


def cancels(**overrides: Strategy) -> SearchStrategy[Cancel]:
    fields = {**headers(), "task_id": task_ids(), "attempt": st.none() | attempts(), "reason": reason_tokens()}
    return _build(Cancel, fields, overrides)


def failures(**overrides: Strategy) -> SearchStrategy[Failure]:
    fields = {
        **headers(),
        "task_id": task_ids(),
        "attempt": attempts(),
        "reason": reason_tokens(),
        "detail": short_texts(),
    }
    return _build(Failure, fields, overrides)


MESSAGE_STRATEGIES: dict[type[Message], Callable[..., SearchStrategy[Any]]] = {
    Advertise: advertises,
    Withdraw: withdraws,
    Task: tasks,
    Bid: bids,
    Decline: declines,
    Award: awards,
    AwardAck: award_acks,
    AwardReject: award_rejects,
    Progress: progresses,
    Result: results,
    Attestation: attestations,
    Cancel: cancels,
    Failure: failures,
}
"""One strategy factory per message type (tests check this covers MESSAGE_TYPES)."""

RECORD_STRATEGIES: dict[type[msgspec.Struct], Callable[..., SearchStrategy[Any]]] = {
    ModelOffer: model_offers,
    Connectivity: connectivities,
    ChatMessage: chat_messages,
    Constraints: constraints,
    Policy: policies,
    Usage: usages,
    Timings: timings,
}
"""One strategy factory per embedded record type."""


def messages_of(type_: type[S], **overrides: Strategy) -> SearchStrategy[S]:
    """Messages of one given type, with optional per-field overrides."""
    try:
        factory = MESSAGE_STRATEGIES[type_]  # type: ignore[index]
    except KeyError:
        factory = RECORD_STRATEGIES[type_]
    strategy: SearchStrategy[S] = factory(**overrides)
    return strategy


def messages(**overrides: Strategy) -> SearchStrategy[Message]:
    """Any message, of any type. Each override applies to the types that have that field (e.g.
    ``sender=st.just(me)`` to all, ``task_id=st.just(t)`` to all but Advertise and Withdraw)."""
    return st.one_of(
        *(
            factory(**{k: v for k, v in overrides.items() if k in type_.__struct_fields__})
            for type_, factory in MESSAGE_STRATEGIES.items()
        )
    )


def wire_frames() -> SearchStrategy[bytes]:
    """The msgpack wire bytes of any valid message."""
    from accord.protocol.codec import encode

    return messages().map(encode)
