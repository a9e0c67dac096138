"""Smoke test: the backend benchmark runs end to end with tiny sizes (simulated rows only, no model load)."""

from __future__ import annotations

import pytest

from tests.bench import backends


@pytest.mark.asyncio
async def test_the_benchmark_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    await backends.main([], tokens=4, runs=1, sim_calls=20)
    out = capsys.readouterr().out
    assert "simulated, instant" in out
    assert "calls/s" in out
    assert "ratio" in out
