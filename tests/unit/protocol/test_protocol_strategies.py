"""The shared Hypothesis strategies (tests/support/hypothesis_strategies.py): complete, valid by msgspec's own
validation, overridable."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.protocol import codec
from accord.protocol.digests import prompt_digest
from accord.protocol.messages import MESSAGE_TYPES, Message, Task
from tests.support import hypothesis_strategies as acst

FEW = settings(max_examples=50)  # these check the strategies' plumbing; the round-trip tests draw more


def test_one_strategy_per_message_type() -> None:
    assert set(acst.MESSAGE_STRATEGIES) == set(MESSAGE_TYPES)


def _struct_types(t: msgspec.inspect.Type) -> set[type]:
    """Every Struct type reachable from an inspected type (through lists, unions, Annotated)."""
    found: set[type] = set()
    if isinstance(t, msgspec.inspect.StructType):
        found.add(t.cls)
        for f in t.fields:
            found |= _struct_types(f.type)
    elif isinstance(t, msgspec.inspect.UnionType):
        for member in t.types:
            found |= _struct_types(member)
    elif isinstance(t, msgspec.inspect.ListType | msgspec.inspect.Metadata):
        found |= _struct_types(t.item_type if isinstance(t, msgspec.inspect.ListType) else t.type)
    return found


def test_one_strategy_per_embedded_record() -> None:
    embedded: set[type] = set()
    for message_type in MESSAGE_TYPES:
        embedded |= _struct_types(msgspec.inspect.type_info(message_type)) - {message_type}
    assert embedded == set(acst.RECORD_STRATEGIES)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(TypeError, match="no field"):
        acst.bids(no_such_field=st.just(1))


@FEW
@given(acst.bids(task_id=st.just("ab" * 16), attempt=st.just(3)))
def test_overrides_apply(bid: Message) -> None:
    assert bid.task_id == "ab" * 16  # type: ignore[attr-defined]
    assert bid.attempt == 3  # type: ignore[attr-defined]


@FEW
@given(acst.messages(sender=st.just("U" + "A" * 55), task_id=st.just("cd" * 16)))
def test_messages_overrides_apply_where_the_field_exists(message: Message) -> None:
    assert message.sender == "U" + "A" * 55
    assert getattr(message, "task_id", "cd" * 16) == "cd" * 16


@FEW
@given(acst.tasks())
def test_tasks_with_messages_carry_their_prompt_digest(task: Task) -> None:
    if task.messages:
        assert task.prompt_digest == prompt_digest(task.messages)


@FEW
@given(acst.wire_frames())
def test_wire_frames_decode(frame: bytes) -> None:
    assert isinstance(codec.decode(frame), Message)


@FEW
@given(acst.agent_ids(), acst.message_ids(), acst.digests(), acst.tokens())
def test_scalar_shapes(agent: str, mid: str, digest: str, token: str) -> None:
    assert len(agent) == 56 and agent[0] == "U" and set(agent[1:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert len(mid) == 32 and set(mid) <= set("0123456789abcdef")
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    assert 1 <= len(token) <= 64 and set(token) <= set(acst.TOKEN_ALPHABET)
