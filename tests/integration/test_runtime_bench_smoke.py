"""The rounds benchmark runs end to end with tiny sizes (its numbers are not checked: no timing asserts)."""

from __future__ import annotations

import pytest

from tests.bench.rounds import Args, print_table, run


@pytest.mark.integration
def test_rounds_benchmark_runs_with_tiny_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    args = Args(seconds=0.5, warmup=0.2, inflight=4, fanout=3, hundred=12, far=8, repeats=1, settle=0.2)
    rows = run(args)
    assert [name for name, _, _ in rows] == ["10 agents", "12 agents", "18 advertised (10 near)"]
    for name, ours, raw in rows:
        assert ours.rounds > 0 and ours.failed == 0, name
        assert raw is not None and raw.rounds > 0, name
    print_table(rows, args)
    assert "rate / raw" in capsys.readouterr().out
