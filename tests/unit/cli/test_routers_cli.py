"""``accord router train / eval / crossfit`` on a generated outcome log, in process."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from accord.bench.data.synthetic import synthetic_outcomes
from accord.cli import app
from accord.routing.files import load_router
from accord.routing.records import write_outcomes

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
