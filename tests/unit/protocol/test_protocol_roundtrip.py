"""Round-trip properties: every message type survives msgpack and JSON unchanged, and encodes deterministically.

One test per type checks both formats (and msgspec's own validation of the drawn value), so that the 13 types
share one example budget: 60 examples per type here, plus 200 of any type in the last test.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.protocol import codec
from accord.protocol.messages import MESSAGE_TYPES, Message
from tests.support import hypothesis_strategies as acst

PER_TYPE = settings(max_examples=60)


@pytest.mark.parametrize("type_", MESSAGE_TYPES, ids=lambda t: t.__name__)
@PER_TYPE
@given(data=st.data())
def test_round_trip(type_: type[Message], data: st.DataObject) -> None:
    message = data.draw(acst.messages_of(type_))
    # The strategy only draws values msgspec itself accepts (convert re-checks every Meta bound).
    assert msgspec.convert(msgspec.to_builtins(message), type_) == message

    frame = codec.encode(message)
    decoded = codec.decode(frame)
    assert type(decoded) is type_
    assert decoded == message
    assert codec.encode(decoded) == frame  # deterministic: the same message always gives the same bytes

    text = codec.encode_json(message)
    from_json = codec.decode_json(text)
    assert type(from_json) is type_
    assert from_json == message
    assert codec.decode_json(text.decode("utf-8")) == message  # str input too
    assert codec.encode_json(from_json) == text


@pytest.mark.parametrize("type_", list(acst.RECORD_STRATEGIES), ids=lambda t: t.__name__)
@PER_TYPE
@given(data=st.data())
def test_record_round_trip_with_decode_as(type_: type[msgspec.Struct], data: st.DataObject) -> None:
    record = data.draw(acst.messages_of(type_))
    assert msgspec.convert(msgspec.to_builtins(record), type_) == record
    assert codec.decode_as(codec.encode(record), type_) == record  # type: ignore[arg-type]


@given(acst.messages())
def test_any_message_round_trips_from_every_buffer_type(message: Message) -> None:
    frame = codec.encode(message)
    assert codec.decode(frame) == message
    assert codec.decode(bytearray(frame)) == message
    assert codec.decode(memoryview(frame)) == message
