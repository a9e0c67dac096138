"""Smoke test of ``python -m tests.bench.market`` at tiny sizes (no timing asserts: numbers live in the bench)."""

from __future__ import annotations

import io

from rich.console import Console

from tests.bench import market as bench


def test_market_bench_runs_and_prints_a_table() -> None:
    out = io.StringIO()
    rows = bench.run(quick=True, console=Console(file=out, width=160))
    names = [name for name, _, _ in rows]
    assert names == [
        "round, 10 bidders",
        "round, 100 bidders",
        "market.select, 10 offers",
        "market.select, 100 offers",
        "registry.shortlist k=8, 1,000 agents",
    ]
    assert all(ours > 0 and floor > 0 for _, ours, floor in rows)
    text = out.getvalue()
    assert "ratio (time)" in text and "round, 100 bidders" in text


def test_a_bench_round_completes_every_task() -> None:
    rounds = bench.RoundBench(10)
    for _ in range(3):
        rounds.round()
    assert rounds.completed == 3
    assert all(c.used_slots == 0 for c in rounds.contractors.values())
