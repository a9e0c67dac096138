"""The N-model routing benchmark runs end to end on a small generated world (no data set, no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import routing_models


def test_routing_models_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "models.json"
    args = ["--models", "4", "--train", "200", "--test", "200", "--json", str(out), "--plot-dir", str(tmp_path)]
    assert routing_models.main(args) == 0
    printed = capsys.readouterr().out
    for word in ("single models", "best single model", "Bayes router", "goal:", "least gap"):
        assert word in printed, word
    (report,) = json.loads(out.read_text())
    assert len(report["models"]) == 4 and report["reference"] and report["curve"][-1]["lambda"] == 0.0
    assert (tmp_path / "routing_models_world0.png").stat().st_size > 10_000
