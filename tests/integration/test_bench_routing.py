"""``accord bench routing`` end to end over a real nats-server: a generated set (no data set needed) and the
RouteLLM sets cut to 60 queries each. Numbers are checked for sanity, never for speed."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from accord.bench.models_routing import ModelsBenchResult
from accord.bench.routing_report import RoutingBenchResult, SetResult
from accord.bus.server import live_servers
from accord.cli import app
from accord.routing.files import DEFAULT_KINDS
from tests.support.datasets import dataset, require_datasets

pytestmark = pytest.mark.integration


def run_bench(tmp_path: Path, *args: str) -> tuple[str, RoutingBenchResult]:
    out = tmp_path / "result.json"
    result = CliRunner().invoke(
        app,
        ["bench", "routing", *args, "--json", str(out), "--no-progress", "--plot-dir", str(tmp_path / "plots")],
    )
    assert result.exit_code == 0, result.output
    assert not live_servers(), "the benchmark's nats-server is still running"
    return result.output, msgspec.json.decode(out.read_bytes(), type=RoutingBenchResult)


def check_set(s: SetResult, *, queries: int, cascade: bool) -> None:
    assert s.queries == queries
    assert s.failures == {} and s.text_mismatches == 0 and s.quality_mismatches == 0
    rows = {r.name: r for r in s.rows}
    kinds = [k for k in DEFAULT_KINDS if cascade or k != "cascade"]
    assert set(rows) == {s.weak, s.strong, "random", "random (seeded)", "oracle", "no-info", *kinds}
    assert rows["no-info"].apgr == pytest.approx(0.5)  # cross-fitted, scored per fold: no bias
    weak, strong, random, oracle = rows[s.weak], rows[s.strong], rows["random"], rows["oracle"]
    assert weak.quality < strong.quality
    assert random.apgr == pytest.approx(0.5)
    assert random.cpt50 == pytest.approx(0.5) and random.cpt80 == pytest.approx(0.8)
    assert oracle.apgr is not None and oracle.quality >= strong.quality
    for kind in kinds:
        row = rows[kind]
        assert row.apgr is not None and 0.0 <= row.apgr <= oracle.apgr, kind
        assert weak.quality <= row.quality <= oracle.quality + 1e-12, kind
        if row.cpt50 is not None:
            assert oracle.cpt50 is not None and 0.0 <= row.cpt50 <= 1.0
    assert s.plot is not None and Path(s.plot).stat().st_size > 10_000
    assert s.live, "no live pass ran"
    for live in s.live:
        assert live.failures == {} and live.score_mismatches == 0, live
        assert live.matches and live.strong_calls == live.expected_strong_calls
        assert live.quality == pytest.approx(live.expected_quality)
        assert live.queries == queries
    assert {live.policy for live in s.live} >= ({"cascade"} if cascade else set())
    assert s.tasks >= 2 * queries + queries


def test_bench_routing_on_a_generated_set(tmp_path: Path) -> None:
    output, result = run_bench(tmp_path, "--synthetic", "150", "--folds", "3", "--workers", "1")
    (s,) = result.sets
    check_set(s, queries=150, cascade=True)
    for text in ("THROUGH THE MESH", "oracle", "random", "live routing", "wall time per phase", "failures 0"):
        assert text in output, text


@dataset
def test_bench_routing_on_the_routellm_sets_cut_to_60_queries(tmp_path: Path) -> None:
    datasets = require_datasets()  # None: the vendored rows, and no --dataset needed
    where = ["--dataset", str(datasets / "routellm-evals")] if datasets is not None else []
    output, result = run_bench(tmp_path, *where, "--limit", "60", "--folds", "3", "--workers", "0")
    assert [s.name for s in result.sets] == ["mmlu", "gsm8k", "mt_bench"]
    mmlu, gsm8k, mt_bench = result.sets
    check_set(mmlu, queries=60, cascade=False)  # MMLU records carry no answer text: no cascade
    check_set(gsm8k, queries=60, cascade=True)
    check_set(mt_bench, queries=60, cascade=True)
    assert mt_bench.scale == 10.0 and mmlu.scale == 1.0
    assert mmlu.max_cost_diff_micros <= 1 and gsm8k.max_cost_diff_micros <= 1  # the set's own cost estimate
    assert mmlu.goal is not None and "goal" in mmlu.goal and gsm8k.goal is not None
    assert result.failures == {}
    for name in ("mmlu", "gsm8k", "mt_bench"):
        assert f"{name} THROUGH THE MESH" in output


def test_bench_routing_over_n_models_reproduces_the_offline_curve_live(tmp_path: Path) -> None:
    out = tmp_path / "models.json"
    args = ["bench", "routing", "--models", "all", "--world-models", "5", "--synthetic", "120", "--folds", "3"]
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--no-plot", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert not live_servers(), "the benchmark's nats-server is still running"
    doc = msgspec.json.decode(out.read_bytes(), type=ModelsBenchResult)
    assert len(doc.models) == 5 and len(doc.live) == 2
    for point in doc.live:
        assert point.matches and point.choice_mismatches == 0 and point.failures == {}, point
        assert point.queries == 120 and point.accuracy == pytest.approx(point.expected_accuracy)
    assert doc.offline.curve[-1].lambda_ == 0.0 and doc.offline.min_gap_to_hull > -0.05
