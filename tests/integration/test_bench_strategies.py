"""`accord bench routing --strategy`: ensemble, mixture-of-agents and debate through a replay mesh on a generated
set (no data set needed), checked against what the recorded answers allow."""

from __future__ import annotations

import pytest
from rich.console import Console

from accord.bench.data.workload import synthetic_workload
from accord.bench.strategies import reference_rows, run_strategy_bench

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_strategies_through_a_replay_mesh_account_for_every_call() -> None:
    workload = synthetic_workload(40, seed=3)
    n = len(workload.queries)
    console = Console(record=True, width=200)
    rows = await run_strategy_bench(workload, ["ensemble", "moa", "debate"], console, concurrency=16)
    by_name = {row.name: row for row in rows}
    assert list(by_name) == ["weak (device)", "strong (cloud)", "ensemble", "moa", "debate"]
    assert all(row.queries == n and not row.failed for row in rows), [(r.name, r.failed) for r in rows]

    ref = reference_rows(workload)
    weak, strong = by_name["weak (device)"], by_name["strong (cloud)"]
    assert weak.accuracy == pytest.approx(ref["weak"]) and strong.accuracy == pytest.approx(ref["strong"])
    assert weak.calls == n and strong.calls == n and strong.strong_final == n and weak.strong_final == 0

    ensemble, moa, debate = by_name["ensemble"], by_name["moa"], by_name["debate"]
    assert ensemble.calls == 3 * n and moa.calls == 3 * n  # three agents; two proposers and an aggregator
    assert 3 * n <= debate.calls <= 6 * n  # round 2 only where round 1 disagreed
    assert moa.strong_final == n  # the aggregator is the strong model, and a replay answers as recorded
    # every way of combining the two models' fixed answers stays under "either right"
    for row in (ensemble, moa, debate):
        assert row.number_accuracy <= ref["either"] + 1e-9
    # the ensemble asked all three agents once: it paid what the two weak and the strong answers cost
    assert ensemble.paid_micros == pytest.approx(2 * weak.paid_micros + strong.paid_micros, rel=0.02)
    text = console.export_text()
    assert "strategies through the mesh" in text and "replay:" in text
