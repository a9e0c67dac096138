"""Decoder fuzzing: seeded mutations of valid frames, and Hypothesis garbage, fed to codec.decode / decode_json.

The only acceptable outcomes are a decoded message (which must then re-encode and decode to itself) or a
RemoteProtocolError with one of the documented reasons. Any other exception is a crash. Counts per mutation class
and per outcome are printed (through ``capsys.disabled()``, so CI logs show them).

Sizes: 100,000 msgpack frames and 100,000 JSON frames, seeded (the same frames every run), about 5 s in all.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.errors import RemoteProtocolError
from accord.protocol import codec
from accord.protocol.codec import DECODE_ERROR_REASONS
from accord.protocol.messages import MAX_FRAME_BYTES, MESSAGE_TYPES, Message, message_tag
from accord.spec.message_vectors import message_vectors
from tests.support.mutations import (
    INTERESTING_BYTES,
    bitflip,
    byte_set,
    random_value,
    set_random_path,
    splice,
    truncate,
)

MSGPACK_FRAMES = 100_000
JSON_FRAMES = 100_000
SEED = 20_260_101

BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80"]
HUGE_HEADERS = [
    b"\xdb\xff\xff\xff\xff",  # str32, 4 GiB
    b"\xda\xff\xff",  # str16
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xdd\xff\xff\xff\xff",  # array32
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\xdd\x00\x10\x00\x00",  # array32 of 1 Mi (more than the frame could hold)
]
JSON_NASTY = [b"1e999999", b"-0", b"123456789012345678901234567890", b"NaN", b"\"\\ud800\"", b"\"\\u0000\"",
              b"\"\\x41\"", b"[", b"{", b"}", b"]", b"\"", b"null", b"true", b"-", b"1.", b".5", b"0x10",
              b"\"\\uDFFF\\uD800\""]  # fmt: skip


# --- seeds ----------------------------------------------------------------------------------------------------
@dataclass
class Seed:
    message: Message
    frame: bytes
    json: bytes
    data: dict[str, Any]
    strings: list[tuple[int, int, int]] = field(default_factory=list)
    """(header offset, value offset, value length) of string values found in the msgpack frame."""
    json_strings: list[tuple[int, int]] = field(default_factory=list)
    """(value offset, value length) of string values found in the JSON frame."""


def _str_header_len(n: int) -> int:
    return 1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_strings(v)


def _seeds() -> list[Seed]:
    seeds = []
    for vector in message_vectors():
        message = vector.message
        frame = codec.encode(message)
        text = codec.encode_json(message)
        data = msgspec.to_builtins(message, builtin_types=(bytes,))
        seed = Seed(message, frame, text, data)
        for s in set(_walk_strings(data)):
            raw = s.encode()
            pos = frame.find(msgspec.msgpack.encode(s))
            if raw and pos >= 0:
                h = _str_header_len(len(raw))
                seed.strings.append((pos, pos + h, len(raw)))
            jpos = text.find(msgspec.json.encode(s))
            if raw and jpos >= 0 and "\\" not in s and '"' not in s:
                seed.json_strings.append((jpos + 1, len(raw)))
        seed.strings.sort()
        seed.json_strings.sort()
        seeds.append(seed)
    return seeds


SEEDS = _seeds()


# --- mutations: each takes (rng, seed, other seed) and returns bytes --------------------------------------------
Mutation = Callable[[random.Random, Seed, Seed], bytes]


def m_bitflip(rng: random.Random, s: Seed, o: Seed) -> bytes:
    return bitflip(s.frame, rng)


def m_byte_set(rng: random.Random, s: Seed, o: Seed) -> bytes:
    return byte_set(s.frame, rng, INTERESTING_BYTES)


def m_truncate(rng: random.Random, s: Seed, o: Seed) -> bytes:
    return truncate(s.frame, rng)


def m_splice(rng: random.Random, s: Seed, o: Seed) -> bytes:
    return splice(s.frame, o.frame, rng)


def m_bad_utf8(rng: random.Random, s: Seed, o: Seed) -> bytes:
    """Overwrite bytes inside a string value with an invalid UTF-8 sequence, keeping every header valid."""
    _, start, length = rng.choice(s.strings)
    bad = rng.choice(BAD_UTF8)[:length]
    i = start + rng.randrange(length - len(bad) + 1)
    return s.frame[:i] + bad + s.frame[i + len(bad) :]


def m_huge_length(rng: random.Random, s: Seed, o: Seed) -> bytes:
    """Replace a string header (or a random byte) with a header announcing a huge length."""
    header = rng.choice(HUGE_HEADERS)
    if rng.random() < 0.8:
        hpos, start, _ = rng.choice(s.strings)
        return s.frame[:hpos] + header + s.frame[start:]
    i = rng.randrange(len(s.frame))
    return s.frame[:i] + header + s.frame[i + 1 :]


def m_deep_nesting(rng: random.Random, s: Seed, o: Seed) -> bytes:
    depth = rng.choice([2, 10, 100, 500, 1_000, 5_000, 100_000])
    opener = rng.choice([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"])
    nested = msgspec.Raw(opener * depth + b"\xc0")
    if rng.random() < 0.5:
        return msgspec.msgpack.encode({**s.data, "zz_unknown": nested})  # skipped as an unknown field
    key = rng.choice(list(s.data))
    return msgspec.msgpack.encode({**s.data, key: nested})  # in place of a known field


def m_random_bytes(rng: random.Random, s: Seed, o: Seed) -> bytes:
    prefix = rng.choice([b"", b"\x80", b"\x8f", b"\xde\x00\x10", b"\x81\xa4type\xa3bid", b"\xdf\xff\xff\xff\xff"])
    return prefix + rng.randbytes(rng.randrange(0, 600))


def m_type_confusion(rng: random.Random, s: Seed, o: Seed) -> bytes:
    """Structured: a random field (at any depth) gets a value of a random msgpack type."""
    return msgspec.msgpack.encode(set_random_path(s.data, rng, random_value(rng)))


def m_structure(rng: random.Random, s: Seed, o: Seed) -> bytes:
    """Drop a key, repeat a key, swap the type tag, or graft another message's fields."""
    data = dict(s.data)
    op = rng.randrange(4)
    if op == 0:
        del data[rng.choice(list(data))]
    elif op == 1:
        key = rng.choice(list(data))
        body = msgspec.msgpack.encode(data)
        extra = msgspec.msgpack.encode(key) + msgspec.msgpack.encode(random_value(rng))
        count = len(data) + 1
        header = bytes([0x80 | count]) if count < 16 else b"\xde" + count.to_bytes(2, "big")
        return header + body[3 if len(data) >= 16 else 1 :] + extra
    elif op == 2:
        data["type"] = rng.choice([message_tag(t) for t in MESSAGE_TYPES])
    else:
        data.update({k: v for k, v in o.data.items() if rng.random() < 0.5})
    return msgspec.msgpack.encode(data)


MSGPACK_MUTATIONS: dict[str, Mutation] = {
    "bitflip": m_bitflip,
    "byte_set": m_byte_set,
    "truncate": m_truncate,
    "splice": m_splice,
    "bad_utf8": m_bad_utf8,
    "huge_length": m_huge_length,
    "deep_nesting": m_deep_nesting,
    "random_bytes": m_random_bytes,
    "type_confusion": m_type_confusion,
    "structure": m_structure,
}


def j_bitflip(rng: random.Random, s: Seed, o: Seed) -> bytes:
    return bitflip(s.json, rng)


def j_byte_set(rng: random.Random, s: Seed, o: Seed) -> bytes:
    return byte_set(s.json, rng, b'{}[]":,\\0-.eE \x00\x7f\xff')


def j_truncate(rng: random.Random, s: Seed, o: Seed) -> bytes:
    return truncate(s.json, rng)


def j_splice(rng: random.Random, s: Seed, o: Seed) -> bytes:
    return splice(s.json, o.json, rng)


def j_bad_utf8(rng: random.Random, s: Seed, o: Seed) -> bytes:
    start, length = rng.choice(s.json_strings)
    bad = rng.choice(BAD_UTF8)
    i = start + rng.randrange(length + 1)
    return s.json[:i] + bad + s.json[i:]


def j_nasty_token(rng: random.Random, s: Seed, o: Seed) -> bytes:
    """Splice a hostile token (huge number, lone surrogate escape, stray bracket, ...) at a random place."""
    i = rng.randrange(len(s.json))
    j = i + rng.randrange(0, 12)
    return s.json[:i] + rng.choice(JSON_NASTY) + s.json[j:]


def j_deep_nesting(rng: random.Random, s: Seed, o: Seed) -> bytes:
    depth = rng.choice([2, 10, 100, 1_000, 10_000, 100_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    nested = opener * depth + b"0" + closer * depth
    return s.json[:-1] + b',"zz_unknown":' + nested + b"}"


def j_random_bytes(rng: random.Random, s: Seed, o: Seed) -> bytes:
    prefix = rng.choice([b"", b"{", b'{"type":"bid",', b"["])
    return prefix + rng.randbytes(rng.randrange(0, 400))


def j_type_confusion(rng: random.Random, s: Seed, o: Seed) -> bytes:
    value = random_value(rng, ext=False)  # NaN and inf are written as null by msgspec.json
    return msgspec.json.encode(set_random_path(s.data, rng, value))


JSON_MUTATIONS: dict[str, Mutation] = {
    "bitflip": j_bitflip,
    "byte_set": j_byte_set,
    "truncate": j_truncate,
    "splice": j_splice,
    "bad_utf8": j_bad_utf8,
    "nasty_token": j_nasty_token,
    "deep_nesting": j_deep_nesting,
    "random_bytes": j_random_bytes,
    "type_confusion": j_type_confusion,
}


# --- the harness ----------------------------------------------------------------------------------------------
@dataclass
class Report:
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)

    def total(self, mutation: str | None = None) -> int:
        return sum(n for (m, _), n in self.outcomes.items() if mutation is None or m == mutation)


def feed(decode: Callable[[bytes], Message], frame: bytes, label: str, report: Report) -> None:
    """One frame through one decoder; record the outcome, or a crash."""
    try:
        message = decode(frame)
    except RemoteProtocolError as exc:
        if exc.reason not in DECODE_ERROR_REASONS:
            report.crashes.append(f"{label}: undocumented reason {exc.reason!r} for {frame[:80].hex()}")
        report.outcomes[(label, f"rejected:{exc.reason}")] += 1
        return
    except BaseException as exc:  # the point: anything else is a crash
        report.crashes.append(f"{label}: {type(exc).__name__}: {exc!r} for {frame[:80].hex()}")
        report.outcomes[(label, f"CRASH:{type(exc).__name__}")] += 1
        return
    try:  # whatever decodes must be a well-formed message again
        again = codec.decode(codec.encode(message))
        if again != message:
            report.crashes.append(f"{label}: decoded message does not round-trip: {message!r}")
    except BaseException as exc:
        report.crashes.append(f"{label}: decoded message fails to re-encode: {exc!r}")
    report.outcomes[(label, "decoded")] += 1


def fuzz(mutations: dict[str, Mutation], decode: Callable[[bytes], Message], frames: int, seed: int) -> Report:
    report = Report()
    names = sorted(mutations)
    for i in range(frames):
        name = names[i % len(names)]
        rng = random.Random(seed * 1_000_003 + i)
        s, o = rng.choice(SEEDS), rng.choice(SEEDS)
        frame = mutations[name](rng, s, o)
        feed(decode, frame, name, report)
    return report


def _print(title: str, report: Report, seconds: float, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = sorted({o for _, o in report.outcomes})
    mutations = sorted({m for m, _ in report.outcomes})
    width = max(len(o) for o in outcomes)
    with capsys.disabled():
        print(f"\n{title}: {report.total()} frames in {seconds:.1f} s, {len(report.crashes)} crashes")
        print(f"  {'outcome':<{width}} " + " ".join(f"{m[:12]:>12}" for m in mutations) + f" {'total':>8}")
        for outcome in outcomes:
            cells = " ".join(f"{report.outcomes[(m, outcome)]:>12}" for m in mutations)
            print(f"  {outcome:<{width}} {cells} {sum(report.outcomes[(m, outcome)] for m in mutations):>8}")
        for crash in report.crashes[:20]:
            print("  CRASH", crash)


def test_fuzz_msgpack_decoder(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    report = fuzz(MSGPACK_MUTATIONS, codec.decode, MSGPACK_FRAMES, SEED)
    _print("msgpack decoder fuzz", report, time.perf_counter() - start, capsys)
    assert report.total() >= MSGPACK_FRAMES
    assert report.crashes == []
    # Every mutation class ran and reached the decoder; most frames are rejected, some survive.
    for name in MSGPACK_MUTATIONS:
        assert report.total(name) >= MSGPACK_FRAMES // len(MSGPACK_MUTATIONS)
    assert report.outcomes[("bad_utf8", "rejected:malformed")] > 0
    assert report.outcomes[("deep_nesting", "rejected:malformed")] > 0
    assert sum(n for (_, o), n in report.outcomes.items() if o == "decoded") > 0
    assert {o for _, o in report.outcomes} >= {"rejected:malformed", "rejected:invalid", "rejected:unknown_type"}


def test_fuzz_json_decoder(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    report = fuzz(JSON_MUTATIONS, codec.decode_json, JSON_FRAMES, SEED + 1)
    _print("JSON decoder fuzz", report, time.perf_counter() - start, capsys)
    assert report.total() >= JSON_FRAMES
    assert report.crashes == []
    for name in JSON_MUTATIONS:
        assert report.total(name) >= JSON_FRAMES // len(JSON_MUTATIONS)
    assert report.outcomes[("bad_utf8", "rejected:malformed")] > 0
    assert report.outcomes[("deep_nesting", "rejected:malformed")] > 0


def test_the_harness_catches_crashes() -> None:
    """feed() must flag any exception other than RemoteProtocolError (so the fuzz tests can fail)."""

    def broken(frame: bytes) -> Message:
        raise ValueError("boom")

    report = Report()
    feed(broken, b"\x00", "probe", report)
    feed(codec.decode, b"\x00", "probe", report)
    assert len(report.crashes) == 1 and "ValueError" in report.crashes[0]
    assert report.outcomes[("probe", "rejected:invalid")] == 1


def test_frames_over_the_limit_are_refused_unread() -> None:
    for frame in (b"\x00" * (MAX_FRAME_BYTES + 1), SEEDS[0].frame + b"\xc0" * MAX_FRAME_BYTES):
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(frame)
        assert info.value.reason == "frame_too_large"
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode_json(frame)
        assert info.value.reason == "frame_too_large"


# --- Hypothesis garbage ---------------------------------------------------------------------------------------
def _check_garbage(frame: bytes | str) -> None:
    for decode in (codec.decode, codec.decode_json):
        if isinstance(frame, str) and decode is codec.decode:
            continue
        try:
            message = decode(frame)  # type: ignore[operator]
        except RemoteProtocolError as exc:
            assert exc.reason in DECODE_ERROR_REASONS
        else:
            assert codec.decode(codec.encode(message)) == message


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_garbage_bytes(frame: bytes) -> None:
    _check_garbage(frame)


@settings(max_examples=100)
@given(st.text(max_size=512))
def test_garbage_json_text(frame: str) -> None:
    _check_garbage(frame)


def test_lone_surrogate_in_str_input_is_malformed() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode_json('{"type":"bid","id":"\ud800"}')
    assert info.value.reason == "malformed"


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=40),
)
_plausible = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["type", "v", "id", "task_id", "models", "x"]) | st.text(max_size=8), inner,
                      max_size=5),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=100)
@given(
    tag=st.sampled_from([message_tag(t) for t in MESSAGE_TYPES] + ["", "Bid", "zzz"]),
    base=st.sampled_from(SEEDS),
    changes=st.dictionaries(st.text(max_size=20), _plausible, max_size=4),
)
def test_structured_garbage(tag: str, base: Seed, changes: dict[str, Any]) -> None:
    """Maps shaped like messages (a real tag, real field names) with values of arbitrary types."""
    data = {**base.data, **changes, "type": tag}
    _check_garbage(msgspec.msgpack.encode(data))
    _check_garbage(msgspec.json.encode({k: v for k, v in data.items() if not isinstance(v, bytes)}))
