"""The README's code runs as written: the embedding example is executed in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.paths import REPO_ROOT


def _python_block_after(heading: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def test_the_embedding_example_runs_and_prints_a_verified_answer() -> None:
    code = _python_block_after("## Embedding an agent or a requester")
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={"PATH": "", "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr
    answer, agent_id, price, output_checked = done.stdout.split()[-4:]
    assert agent_id.startswith("U") and len(agent_id) == 56
    assert int(price) <= 1_000
    assert output_checked == "True"
    assert answer
