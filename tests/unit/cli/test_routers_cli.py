"""``accord router train / eval / crossfit`` on a generated outcome log, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accord.bench.data.synthetic import synthetic_outcomes
from accord.cli import app
from accord.routing.files import load_router
from accord.routing.records import read_outcomes, write_outcomes

runner = CliRunner()


def _logs(tmp_path: Path, n: int = 300, seed: int = 0) -> Path:
    path = tmp_path / f"log{seed}.jsonl"
    write_outcomes(path, synthetic_outcomes(n, seed=seed))
    return path


def test_train_then_eval_held_out_with_a_plot(tmp_path: Path) -> None:
    train_log, test_log = _logs(tmp_path, seed=1), _logs(tmp_path, seed=2)
    router_file = tmp_path / "r.msgpack"
    result = runner.invoke(app, ["router", "train", str(train_log), "-o", str(router_file), "--kind", "subject"])
    assert result.exit_code == 0, result.output
    assert "300 queries" in result.output
    _, file = load_router(router_file)
    assert file.kind == "subject" and file.trained_rows == 300
    png = tmp_path / "curve.png"
    result = runner.invoke(app, ["router", "eval", str(router_file), str(test_log), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    for word in ("random", "oracle", "subject", "APGR", "CPT(50%)", "CPT(80%)", "AIQ", "held-out"):
        assert word in result.output, word
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_on_training_data_warns(tmp_path: Path) -> None:
    log = _logs(tmp_path)
    router_file = tmp_path / "r.json"
    assert (
        runner.invoke(app, ["router", "train", str(log), "-o", str(router_file), "--kind", "subject"]).exit_code
        == 0
    )
    result = runner.invoke(app, ["router", "eval", str(router_file), str(log)])
    assert result.exit_code == 0
    assert "IN-SAMPLE" in result.output


def test_crossfit_prints_every_kind_asked(tmp_path: Path) -> None:
    log = _logs(tmp_path)
    result = runner.invoke(
        app, ["router", "crossfit", str(log), "--kind", "subject", "--kind", "cascade", "--folds", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "cross-fitted" in result.output and "cascade" in result.output and "subject" in result.output


def test_bad_input_exits_2_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    result = runner.invoke(app, ["router", "train", str(bad), "-o", str(tmp_path / "r.msgpack")])
    assert result.exit_code == 2 and "malformed" in result.output
    log = _logs(tmp_path)
    result = runner.invoke(app, ["router", "train", str(log), "-o", str(tmp_path / "r.msgpack"), "--kind", "nope"])
    assert result.exit_code == 2 and "unknown_kind" in result.output
    result = runner.invoke(app, ["router", "eval", str(bad), str(log)])
    assert result.exit_code == 2
    unscored = tmp_path / "unscored.jsonl"
    unscored.write_text('{"query_id":"a","prompt":"p","model":"m"}\n{"query_id":"a","prompt":"p","model":"n"}\n')
    result = runner.invoke(app, ["router", "train", str(unscored), "-o", str(tmp_path / "r.msgpack")])
    assert result.exit_code == 2 and "no quality signal" in result.output


# --- over N models ---------------------------------------------------------------------------------------------
def _synth(tmp_path: Path, seed: int, models: int = 5, queries: int = 300) -> Path:
    path = tmp_path / f"world{seed}.jsonl"
    args = [
        "router",
        "synth",
        "-o",
        str(path),
        "--models",
        str(models),
        "--queries",
        str(queries),
        "--seed",
        str(seed),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {models * queries} outcome records" in result.output
    return path


def test_train_and_eval_over_n_models_write_what_the_issue_lists(tmp_path: Path) -> None:
    train_log, test_log = _synth(tmp_path, 1), _synth(tmp_path, 2)
    pred = tmp_path / "pred.msgpack"
    result = runner.invoke(app, ["router", "train", str(train_log), "--models", "all", "-o", str(pred)])
    assert result.exit_code == 0, result.output
    assert "predictor over 5 models on 300 queries" in result.output and "calibration error" in result.output
    out, png = tmp_path / "eval.json", tmp_path / "eval.png"
    result = runner.invoke(
        app, ["router", "eval", str(pred), str(test_log), "--json", str(out), "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output and "best single model" in result.output
    doc = json.loads(out.read_text())
    models = {m["model"]: m for m in doc["models"]}
    assert len(models) == 5 and all({"accuracy", "cost_per_query_micros"} <= set(m) for m in models.values())
    curve = doc["curve"]
    assert all({"lambda", "accuracy", "cost_per_query_micros"} <= set(p) for p in curve)
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in curve)
    cheapest = min(m["cost_per_query_micros"] for m in models.values())
    assert curve[0]["cost_per_query_micros"] == pytest.approx(cheapest) and curve[-1]["lambda"] == 0.0
    assert doc["hull"] and doc["oracle"]["curve"] and doc["oracle"]["accuracy"] <= 1.0
    best = max(models.values(), key=lambda m: (m["accuracy"], -m["cost_per_query_micros"]))
    assert doc["best_single"]["model"] == best["model"]
    assert doc["accuracy_at_best_single_cost"] >= best["accuracy"] - 0.02
    assert "cost_at_best_single_accuracy" in doc and "min_gap_to_hull" in doc
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["router", "eval", str(pred), str(train_log)])
    assert result.exit_code == 0 and "IN-SAMPLE" in result.output


def test_train_on_some_models_and_eval_on_a_log_missing_one(tmp_path: Path) -> None:
    log = _synth(tmp_path, 1, models=4, queries=200)
    names = sorted({r.model for r in read_outcomes(log)})
    pred = tmp_path / "pred.json"
    chosen = ",".join(names[:3])
    result = runner.invoke(app, ["router", "train", str(log), "--models", chosen, "-o", str(pred)])
    assert result.exit_code == 0, result.output
    smaller = tmp_path / "two.jsonl"
    write_outcomes(smaller, [r for r in read_outcomes(_synth(tmp_path, 2, 4, 100)) if r.model in names[:2]])
    result = runner.invoke(app, ["router", "eval", str(pred), str(smaller)])
    assert result.exit_code == 0, result.output
    assert "no outcomes of" in result.output
    result = runner.invoke(app, ["router", "train", str(log), "--models", "nope,x", "-o", str(pred)])
    assert result.exit_code == 2 and "unknown_model" in result.output
    result = runner.invoke(app, ["router", "train", str(log), "--models", "all", "--kind", "mf", "-o", str(pred)])
    assert result.exit_code == 2 and "--models trains the predictor" in result.output


def test_crossfit_over_n_models_and_the_no_info_row(tmp_path: Path) -> None:
    log = _synth(tmp_path, 1, models=3, queries=150)
    out = tmp_path / "cf.json"
    result = runner.invoke(
        app, ["router", "crossfit", str(log), "--models", "all", "--folds", "3", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "cross-fitted" in result.output and json.loads(out.read_text())["queries"] == 150
    pair = _logs(tmp_path)
    result = runner.invoke(app, ["router", "crossfit", str(pair), "--kind", "subject", "--folds", "3"])
    assert result.exit_code == 0 and "no-info" in result.output


def test_import_a_csv_log(tmp_path: Path) -> None:
    source = tmp_path / "runs.csv"
    source.write_text("question,model,ok,usd\nq1,a,1,0.00002\nq1,b,0,0.001\nq2,a,0,0.00002\nq2,b,1,0.001\n")
    out = tmp_path / "runs.jsonl"
    args = ["router", "import", str(source), "-o", str(out), "--column", "prompt=question"]
    args += ["--column", "correct=ok", "--column", "cost=usd"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = read_outcomes(out)
    assert [(r.model, r.correct, r.cost_micros) for r in records[:2]] == [("a", True, 20), ("b", False, 1000)]
    result = runner.invoke(app, ["router", "import", str(source), "-o", str(out), "--column", "oops"])
    assert result.exit_code == 2
