"""Digests (spec section 2.7): exact bytes, checked against an independent encoder written here."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from accord.protocol import codec
from accord.protocol.digests import output_digest, payload_digest, prompt_digest
from accord.protocol.messages import Attestation, Award, Bid, ChatMessage, Role, Task
from accord.spec.message_vectors import message_vectors
from tests.support import hypothesis_strategies as acst

EXAMPLES = {type(v.message): v.message for v in message_vectors()}


def mp_array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 2**16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def mp_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    n = len(raw)
    if n < 32:
        header = bytes([0xA0 | n])
    elif n < 2**8:
        header = b"\xd9" + bytes([n])
    elif n < 2**16:
        header = b"\xda" + n.to_bytes(2, "big")
    else:
        header = b"\xdb" + n.to_bytes(4, "big")
    return header + raw


def reference_prompt_bytes(messages: list[ChatMessage]) -> bytes:
    """Spec: msgpack array of [role, content] pairs, shortest-form headers, UTF-8 strings."""
    out = mp_array_header(len(messages))
    for m in messages:
        out += b"\x92" + mp_str(m.role.value) + mp_str(m.content)
    return out


@settings(max_examples=100)
@given(
    st.lists(
        acst.chat_messages(content=st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=300))),
        max_size=20,
    )
)
def test_prompt_digest_matches_the_spec_bytes(messages: list[ChatMessage]) -> None:
    assert prompt_digest(messages) == hashlib.sha256(reference_prompt_bytes(messages)).hexdigest()


def test_prompt_digest_known_answers() -> None:
    assert prompt_digest([]) == hashlib.sha256(b"\x90").hexdigest()
    one = [ChatMessage(role=Role.USER, content="hi")]
    assert prompt_digest(one) == hashlib.sha256(b"\x91\x92\xa4user\xa2hi").hexdigest()
    # Both printed in spec/PROTOCOL.md section 2.7:
    assert prompt_digest(one) == "4ee50123f955406813433fd2eaa9c8c1a0beaefc56d7aec8e6f792c21c8d2f66"
    task = EXAMPLES[Task]
    assert isinstance(task, Task)
    assert prompt_digest(task.messages) == "87f837d39d133afad25f29ff29ed3ed63462220480cb0a917385ba4b17405bc8"
    assert task.prompt_digest == prompt_digest(task.messages)


def test_prompt_digest_sees_roles_order_and_boundaries() -> None:
    a = [ChatMessage(role=Role.USER, content="ab"), ChatMessage(role=Role.USER, content="c")]
    b = [ChatMessage(role=Role.USER, content="a"), ChatMessage(role=Role.USER, content="bc")]
    c = [ChatMessage(role=Role.SYSTEM, content="ab"), ChatMessage(role=Role.USER, content="c")]
    assert len({prompt_digest(a), prompt_digest(b), prompt_digest(c), prompt_digest(a[::-1])}) == 4


def test_payload_and_output_digests() -> None:
    assert payload_digest(b"") == hashlib.sha256(b"").hexdigest()
    assert output_digest("é") == hashlib.sha256(b"\xc3\xa9").hexdigest()
    award, bid, attestation = EXAMPLES[Award], EXAMPLES[Bid], EXAMPLES[Attestation]
    assert isinstance(award, Award) and isinstance(attestation, Attestation)
    assert award.bid_digest == payload_digest(codec.encode(bid))
    assert attestation.award_digest == payload_digest(codec.encode(award))
