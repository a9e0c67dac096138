"""mutmut over the core modules, each group of modules against the fast tests that guard it.

``python -m tests.mutation run [GROUP...]`` copies the work tree to a scratch folder per group (mutmut writes a
``mutants/`` tree next to the code), appends that group's ``[tool.mutmut]`` table to the copy's pyproject.toml,
runs ``mutmut run`` there and prints, per module, how many mutants the tests killed, and every survivor's diff.
mutmut first runs the group's tests once to learn which tests reach which function, then runs each mutant against
only those tests (fastest first, stopping at the first failure), under the ``mutation`` Hypothesis profile (the
ci examples, no shrinking) and with the stateful market at ``MARKET_RUNS`` runs instead of 1,000. Mutants that
``mypy --strict`` rejects count as caught by the type checker and run no test. The scratch folders stay (see
``--scratch``), so ``mutmut show NAME`` or ``mutmut results`` can be run in them afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.mutation.planted import copy_tree


@dataclass(frozen=True)
class Group:
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


GROUPS: dict[str, Group] = {
    "protocol": Group(
        ("accord/protocol/requester.py", "accord/protocol/contractor.py", "accord/protocol/market.py"),
        (
            "tests/unit/protocol/test_market_requester.py",
            "tests/unit/protocol/test_market_contractor.py",
            "tests/unit/protocol/test_contractor_evidence.py",
            "tests/unit/protocol/test_market_rules.py",
            "tests/unit/protocol/test_market_tables.py",
            "tests/stateful",
        ),
        {"MARKET_RUNS": "60"},
    ),
    "security": Group(
        ("accord/security/frames.py", "accord/security/replay.py", "accord/security/trust.py"),
        ("tests/unit/security", "tests/unit/spec/test_security_vectors.py"),
    ),
    "strategies": Group(("accord/strategies/base.py",), ("tests/unit/strategies",)),
}

MYPY = (sys.executable, "-m", "mypy", "--strict", "--no-warn-unused-ignores", "accord", "--output", "json")
"""The type check that rejects mutants before any test runs (mutmut's trampolines carry ignores it may not use)."""
STATUS = {0: "survived", 1: "killed", 3: "killed", 37: "type_check", 36: "timeout", 24: "timeout", -24: "timeout"}
"""mutmut's exit codes per mutant (mutmut/stats.py); anything else is counted under its code."""


def config(group: Group) -> str:
    def toml_list(items: Sequence[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["accord"]\n'
        'also_copy = ["spec"]\n'
        f"only_mutate = {toml_list(group.modules)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "--timeout", "600"]\n'
        f"pytest_add_cli_args_test_selection = {toml_list(group.tests)}\n"
        f"type_check_command = {toml_list(MYPY)}\n"
    )


def tally(tree: Path) -> dict[str, Counter[str]]:
    """Per module, the number of mutants in each status, from mutmut's ``.meta`` files."""
    out: dict[str, Counter[str]] = {}
    for meta in sorted((tree / "mutants").rglob("*.py.meta")):
        module = meta.relative_to(tree / "mutants").as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        out[module] = Counter(
            STATUS.get(c, f"exit {c}") if c is not None else "not checked" for c in codes.values()
        )
    return out


def survivors(tree: Path) -> list[str]:
    names: list[str] = []
    for meta in sorted((tree / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        names += sorted(k for k, c in codes.items() if c == 0)
    return names


def show(tree: Path, name: str) -> str:
    """The changed lines of one mutant."""
    diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=tree, capture_output=True, text=True)
    return "\n".join(ln for ln in diff.stdout.splitlines() if re.match(r"^[-+](?![-+])", ln))


def run_group(name: str, scratch: Path, max_children: int, only: str = "") -> dict[str, Counter[str]]:
    group = GROUPS[name]
    if only:  # a part of the group: its modules whose path contains ``only``
        group = Group(tuple(m for m in group.modules if only in m) or group.modules, group.tests, group.env)
    tree = scratch / f"mutmut-{name}"
    copy_tree(tree)
    with (tree / "pyproject.toml").open("a", encoding="utf-8") as f:
        f.write(config(group))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HYPOTHESIS_PROFILE": "mutation", **group.env}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    counts = tally(tree)
    print(f"== {name}: {time.perf_counter() - started:.0f} s, in {tree}")
    for module, c in counts.items():
        tested = c["killed"] + c["survived"] + c["timeout"]
        rate = (c["killed"] + c["timeout"]) / tested if tested else 0.0
        print(f"  {module}: {rate:.1%} killed ({dict(sorted(c.items()))})")
    for mutant in survivors(tree):
        print(f"  SURVIVED {mutant}\n" + "\n".join(f"      {ln}" for ln in show(tree, mutant).splitlines()))
    return counts


def run(names: Sequence[str], scratch: Path, max_children: int, only: str = "") -> int:
    for name in names or GROUPS:
        run_group(name, scratch, max_children, only)
    return 0
