"""Smoke test of the bus benchmark with tiny sizes (no numbers checked: timing goals live in the benchmark)."""

from __future__ import annotations

import pytest

from tests.bench import bus as bench


@pytest.mark.integration
def test_bus_benchmark_runs_and_reports_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench.main(
        ["--messages", "400", "--requests", "128", "--inflight", "8", "--rtt-samples", "20", "--repeats", "1"]
    )
    assert [r.metric.split(",")[0] for r in rows] == [
        "publish (publisher only)",
        "publish -> subscriber",
        "request/reply",
        "request/reply RTT p50",
        "request/reply RTT p99",
    ]
    assert all(r.raw > 0 and r.ours > 0 for r in rows)
    assert "NatsBus vs raw nats-py" in capsys.readouterr().out
