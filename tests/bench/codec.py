"""Codec benchmark: accord.protocol.codec against raw msgspec.msgpack on equivalent plain Structs.

    python -m tests.bench.codec [--iterations N] [--repeats R]

For a Bid and for a Task with a 1 KB prompt, measures ns per encode and per decode through
``accord.protocol.codec`` and through raw ``msgspec.msgpack`` on a plain Struct with the same fields and types
but no ``Meta`` constraints and no tag (the floor), in the same run, interleaved. Two more decode columns
attribute the gap: the same tagged union decoder without the codec wrapper (``Decoder(AnyMessage)``), and the
plain Struct decoder with the tag but no Meta. Goal: ratio <= 1.2x. Timing goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import msgspec
from rich.console import Console
from rich.table import Table

from accord.protocol import codec
from accord.protocol.messages import (
    AnyMessage,
    Bid,
    ChatMessage,
    Mechanism,
    MessageId,
    Privacy,
    Role,
    Task,
    Tier,
)
from accord.spec.message_vectors import message_vectors


# --- the floor: the same fields and types, no Meta, no tag --------------------------------------------------
class PlainBid(msgspec.Struct, frozen=True, kw_only=True):
    v: int = 1
    id: str
    sender: str
    ts: int
    expires_ns: int | None = None
    task_id: str
    attempt: int = 1
    model: str
    price_micros: int
    est_latency_ms: int
    quality: float
    valid_until_ns: int
    tier: Tier
    region: str
    residency: list[str] = []


class PlainChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    content: str


class PlainConstraints(msgspec.Struct, frozen=True, kw_only=True):
    deadline_ns: int
    max_price_micros: int
    min_quality: float = 0.0
    residency: str | None = None
    privacy: Privacy = Privacy.PUBLIC
    preferred_tiers: list[Tier] = []


class PlainPolicy(msgspec.Struct, frozen=True, kw_only=True):
    lambda_price: float = 1.0
    mu_latency: float = 0.01


class PlainTask(msgspec.Struct, frozen=True, kw_only=True):
    v: int = 1
    id: str
    sender: str
    ts: int
    expires_ns: int | None = None
    task_id: str
    kind: str = "chat"
    messages: list[PlainChatMessage] = []
    prompt_digest: str
    prompt_ref: str | None = None
    est_input_tokens: int = 0
    max_output_tokens: int = 256
    constraints: PlainConstraints
    policy: PlainPolicy = PlainPolicy()
    mechanism: Mechanism = Mechanism.FIRST_PRICE
    bid_window_ms: int = 50
    attempt: int = 1


class TaggedPlainBid(PlainBid, frozen=True, kw_only=True, tag="bid", tag_field="type"):
    """The floor plus the tag: isolates the cost of Meta validation from the cost of the tag."""


class TaggedPlainTask(PlainTask, frozen=True, kw_only=True, tag="task", tag_field="type"):
    pass


def _plain(message: msgspec.Struct, plain_type: type[msgspec.Struct]) -> msgspec.Struct:
    """The same values in the plain type (nested records converted by msgspec)."""
    data = msgspec.to_builtins(message)
    data.pop("type", None)
    return msgspec.convert(data, plain_type)


def _without_patterns(t: Any) -> Any:
    """``t`` without its ``Meta(pattern=...)`` (other bounds kept), recursing into lists, unions and Structs."""
    origin = get_origin(t)
    if origin is Annotated:
        base, *metas = get_args(t)
        keep = [m for m in metas if not (isinstance(m, msgspec.Meta) and m.pattern is not None)]
        base = _without_patterns(base)
        return Annotated[(base, *keep)] if keep else base  # type: ignore[valid-type]
    if origin in (Union, types.UnionType):
        return Union[tuple(_without_patterns(a) for a in get_args(t))]  # noqa: UP007
    if origin is list:
        return list[_without_patterns(get_args(t)[0])]  # type: ignore[misc]
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return _struct_without_patterns(t)
    return t


_NO_PATTERN_TYPES: dict[type[msgspec.Struct], type[msgspec.Struct]] = {}


def _struct_without_patterns(cls: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The same Struct (tag, fields, defaults, all other Meta bounds) without the regex patterns."""
    if cls in _NO_PATTERN_TYPES:
        return _NO_PATTERN_TYPES[cls]
    hints = get_type_hints(cls, include_extras=True)
    fields: list[tuple[Any, ...]] = []
    for f in msgspec.structs.fields(cls):
        ann = _without_patterns(hints[f.name])
        if f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, ann, msgspec.field(default_factory=f.default_factory)))
        elif f.default is not msgspec.NODEFAULT:
            default = f.default
            if isinstance(default, msgspec.Struct):
                default = msgspec.convert(msgspec.to_builtins(default), _without_patterns(type(default)))
            fields.append((f.name, ann, default))
        else:
            fields.append((f.name, ann))
    config = cls.__struct_config__
    new = msgspec.defstruct(
        f"{cls.__name__}NoPatterns", fields, tag=config.tag, tag_field=config.tag_field, kw_only=True, frozen=True
    )
    _NO_PATTERN_TYPES[cls] = new
    return new


def sample_bid() -> Bid:
    return next(v.message for v in message_vectors() if isinstance(v.message, Bid))


def sample_task(prompt_bytes: int = 1024) -> Task:
    """The golden task with a ~1 KB prompt (user message of ``prompt_bytes`` ASCII characters)."""
    task = next(v.message for v in message_vectors() if isinstance(v.message, Task))
    sentence = "Summarise the attached meeting notes in three bullet points. "
    content = (sentence * (prompt_bytes // len(sentence) + 1))[:prompt_bytes]
    messages = [ChatMessage(role=Role.USER, content=content)]
    from accord.protocol.digests import prompt_digest

    return msgspec.structs.replace(task, messages=messages, prompt_digest=prompt_digest(messages))


def _time_ns(fn: Callable[[], object], iterations: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(iterations):
        fn()
    return (time.perf_counter_ns() - start) / iterations


def measure(cases: dict[str, Callable[[], object]], iterations: int, repeats: int) -> dict[str, float]:
    """Median over ``repeats`` of the mean ns per call; the cases are interleaved within each repeat."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm up
        _time_ns(fn, max(1, iterations // 10))
    for _ in range(repeats):
        for name, fn in cases.items():
            samples[name].append(_time_ns(fn, iterations))
    return {name: statistics.median(values) for name, values in samples.items()}


def run(iterations: int, repeats: int) -> list[dict[str, object]]:
    """One row per (message, operation): ours, raw floor, ratio, and the attribution columns for decode."""
    union_decoder = msgspec.msgpack.Decoder(AnyMessage)
    raw_encoder = msgspec.msgpack.Encoder()
    rows: list[dict[str, object]] = []
    subjects: list[tuple[str, msgspec.Struct, type[msgspec.Struct], type[msgspec.Struct]]] = [
        ("Bid", sample_bid(), PlainBid, TaggedPlainBid),
        ("Task (1 KB prompt)", sample_task(), PlainTask, TaggedPlainTask),
    ]
    for label, message, plain_type, tagged_type in subjects:
        assert isinstance(message, Bid | Task)
        plain = _plain(message, plain_type)
        frame = codec.encode(message)
        plain_frame = raw_encoder.encode(plain)
        tagged_frame = raw_encoder.encode(_plain(message, tagged_type))
        assert tagged_frame == frame, "the tagged plain struct must encode to the same bytes as the message"
        plain_decoder = msgspec.msgpack.Decoder(plain_type)
        tagged_decoder = msgspec.msgpack.Decoder(tagged_type)
        no_pattern_decoder = msgspec.msgpack.Decoder(_struct_without_patterns(type(message)))
        assert msgspec.to_builtins(no_pattern_decoder.decode(frame)) == msgspec.to_builtins(message)
        assert codec.decode(frame) == message and plain_decoder.decode(plain_frame) == plain

        enc = measure(
            {"ours": lambda m=message: codec.encode(m), "raw": lambda p=plain: raw_encoder.encode(p)},
            iterations,
            repeats,
        )
        rows.append({"message": label, "op": "encode", "bytes": len(frame), "raw_bytes": len(plain_frame), **enc})
        dec = measure(
            {
                "ours": lambda f=frame: codec.decode(f),
                "raw": lambda f=plain_frame, d=plain_decoder: d.decode(f),
                "union": lambda f=frame: union_decoder.decode(f),
                "tag_no_meta": lambda f=frame, d=tagged_decoder: d.decode(f),
                "no_patterns": lambda f=frame, d=no_pattern_decoder: d.decode(f),
            },
            iterations,
            repeats,
        )
        rows.append({"message": label, "op": "decode", "bytes": len(frame), "raw_bytes": len(plain_frame), **dec})
    # Attribution of the Meta cost: one string field checked against the id pattern vs a bare str.
    id_frame = raw_encoder.encode(sample_bid().id)
    id_decoder = msgspec.msgpack.Decoder(MessageId)
    str_decoder = msgspec.msgpack.Decoder(str)
    one = measure(
        {"ours": lambda: id_decoder.decode(id_frame), "raw": lambda: str_decoder.decode(id_frame)},
        iterations,
        repeats,
    )
    size = len(id_frame)
    rows.append(
        {"message": "one id field: pattern vs str", "op": "decode", "bytes": size, "raw_bytes": size, **one}
    )
    return rows


def render(rows: list[dict[str, object]], console: Console) -> None:
    table = Table(title="accord.protocol.codec vs raw msgspec.msgpack (ns per call, median of repeats)")
    for column in ("message", "op", "bytes (ours/raw)", "ours ns", "raw ns", "ratio"):
        table.add_column(column, justify="left" if column in ("message", "op") else "right")
    table.add_column("union decoder, no wrapper ns", justify="right")
    table.add_column("tag, no Meta ns", justify="right")
    table.add_column("Meta but no patterns ns", justify="right")
    for row in rows:
        ours, raw = float(str(row["ours"])), float(str(row["raw"]))
        union = row.get("union")
        tag_no_meta = row.get("tag_no_meta")
        no_patterns = row.get("no_patterns")
        table.add_row(
            str(row["message"]),
            str(row["op"]),
            f"{row['bytes']}/{row['raw_bytes']}",
            f"{ours:.0f}",
            f"{raw:.0f}",
            f"{ours / raw:.2f}x",
            "" if union is None else f"{float(str(union)):.0f}",
            "" if tag_no_meta is None else f"{float(str(tag_no_meta)):.0f}",
            "" if no_patterns is None else f"{float(str(no_patterns)):.0f}",
        )
    console.print(table)
    console.print(
        "ours = accord.protocol.codec (tagged union, Meta bounds, frame-size and version checks, error mapping); "
        "raw = msgspec.msgpack on a plain Struct with the same fields and types, no Meta, no tag. "
        "The last three columns decode the same bytes as ours: through the bare union decoder (no codec "
        "wrapper), through a plain tagged Struct (no Meta), and through the message type minus its regex "
        "patterns (all other Meta bounds kept)."
    )


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.codec", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5_000, help="calls per timed sample")
    parser.add_argument("--repeats", type=int, default=31, help="timed samples per case (the median is shown)")
    args = parser.parse_args(argv)
    rows = run(args.iterations, args.repeats)
    render(rows, Console())
    return rows


if __name__ == "__main__":
    main()
