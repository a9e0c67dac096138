"""Smoke test: the hostile-frames benchmark (D9) runs end to end with tiny sizes (no timing is asserted)."""

from __future__ import annotations

import pytest

from tests.bench import hostile_frames as bench


def test_every_receive_path_is_measured_for_every_kind_of_frame(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--n", "3", "--repeats", "1"])
    out = capsys.readouterr().out
    for needle in ("agent, any bus (verify)", "requester, authenticated bus (peek)", "unknown key", "x honest"):
        assert needle in out, needle
    rows = bench.measure(2, 1)
    paths = {r.path for r in rows}
    assert len(paths) == 6 and len(rows) == 6 * len(bench.KINDS)
    assert all(r.us > 0 for r in rows) and all(r.ratio == 1.0 for r in rows if r.kind == "honest")
