"""Smoke test: the security benchmark runs end to end with tiny sizes (no timing is asserted)."""

from __future__ import annotations

import pytest

from tests.bench import security as bench


def test_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--n", "20", "--repeats", "1"])
    out = capsys.readouterr().out
    for needle in ("seal(Bid)", "open_frame(Bid)", "cryptography verify", "ratio", "bytes per remembered id"):
        assert needle in out, needle


def test_every_row_compares_with_a_floor() -> None:
    rows, notes = bench.measure(10, 1)
    assert len(rows) >= 10 and all(r.floor_ns and r.ours_ns > 0 for r in rows)
    assert dict(notes)["frame bytes (Bid)"].split()[0].isdigit()
