"""Smoke test of the codec benchmark (python -m tests.bench.codec) with tiny iteration counts: it runs, measures
every case and prints its table. No timing is asserted (timing goals live in the benchmark's output)."""

from __future__ import annotations

import pytest

from tests.bench import codec as bench


def test_codec_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench.main(["--iterations", "3", "--repeats", "1"])
    assert [(r["message"], r["op"]) for r in rows] == [
        ("Bid", "encode"),
        ("Bid", "decode"),
        ("Task (1 KB prompt)", "encode"),
        ("Task (1 KB prompt)", "decode"),
        ("one id field: pattern vs str", "decode"),
    ]
    for row in rows:
        assert float(str(row["ours"])) > 0 and float(str(row["raw"])) > 0
    assert {"union", "tag_no_meta", "no_patterns"} <= set(rows[1])
    out = capsys.readouterr().out
    assert "ratio" in out and "Bid" in out


def test_plain_structs_carry_the_same_fields() -> None:
    """The floor is only fair if the plain Structs have exactly the message's fields."""
    from accord.protocol.messages import Bid, Task

    assert bench.PlainBid.__struct_fields__ == Bid.__struct_fields__
    assert bench.PlainTask.__struct_fields__ == Task.__struct_fields__
    assert len(bench.sample_task().messages[0].content) == 1024
