"""The offline routing benchmark runs end to end on a tiny generated log (no data set, no timing asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import routing_offline


def test_routing_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = routing_offline.main(
        [
            "--synthetic",
            "150",
            "--folds",
            "2",
            "--kinds",
            "subject",
            "bandit",
            "cascade",
            "--plot-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    for word in ("oracle", "random", "subject", "bandit", "cascade", "APGR", "AIQ", "thompson"):
        assert word in out, word
    assert (tmp_path / "routing_synthetic.png").stat().st_size > 10_000
