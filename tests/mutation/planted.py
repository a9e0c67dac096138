"""The bugs of issue 19's table, planted one at a time in a scratch copy, and the tests that catch each.

Each :class:`Planted` is a small source edit (exact text, which must occur once) that reintroduces one bug the
suite must never let through. ``python -m tests.mutation planted`` copies the work tree for each, applies the
edit, runs the fast tests (unit tests of protocol, security, strategies and spec, and the stateful market) under
the ``mutation`` Hypothesis profile (the ci examples, no shrinking) and lists the tests that failed. A bug caught
by fewer than two tests, or by none of its property / stateful tests, makes the command exit non-zero. An edit
whose text no longer occurs (the code moved on) is reported as stale: update the edit, do not drop it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAST_TESTS = (
    "tests/stateful",
    "tests/unit/protocol",
    "tests/unit/security",
    "tests/unit/strategies",
    "tests/unit/spec",
)
PROPERTY_TESTS = (
    "tests/stateful/",
    "test_fuzz",
    "test_no_replay_is_ever_admitted",
    "test_spent_never_exceeds_the_budget",
    "test_payment_never_exceeds_budget",
    "test_second_price_stays_within_the_budget",
    "test_any_bad_signature_over_any_payload",
)
"""Tests that are properties (Hypothesis over generated inputs) or stateful: each bug must be caught by one."""


@dataclass(frozen=True)
class Planted:
    name: str
    what: str
    path: str
    edits: tuple[tuple[str, str], ...]


PLANTED: tuple[Planted, ...] = (
    Planted(
        "second-result",
        "a completed requester accepts a second Result (its fencing treats COMPLETED as awarded)",
        "accord/protocol/requester.py",
        (
            ("        if d.state not in _ON_AWARD:\n", "        if d.state not in (*_ON_AWARD, _S.COMPLETED):\n"),
            ("    return t\n", "    t[(_S.COMPLETED, E.RESULT)] = M._on_result\n    return t\n"),
        ),
    ),
    Planted(
        "decode-first",
        "open_frame decodes the payload before checking its signature",
        "accord/security/frames.py",
        (
            (
                "    _check_signature(envelope, trust)\n    message = _decode_payload(envelope.payload)\n",
                "    message = _decode_payload(envelope.payload)\n    _check_signature(envelope, trust)\n",
            ),
        ),
    ),
    Planted(
        "forget-keeps-horizon",
        "the replay guard's _forget no longer raises the horizon",
        "accord/security/replay.py",
        (("        state.horizon = max(state.horizon, ts)\n", "        del ts\n"),),
    ),
    Planted(
        "cap-ignores-spent",
        "a strategy's task cap ignores what was already spent",
        "accord/strategies/base.py",
        (
            (
                "        return self.budget_micros - self.spent_micros - self.reserved_micros\n",
                "        return self.budget_micros - self.reserved_micros\n",
            ),
        ),
    ),
    Planted(
        "no-reservation",
        "side-by-side strategy calls reserve nothing",
        "accord/strategies/base.py",
        (
            ("        self.reserved_micros += cap\n", "        pass\n"),
            ("            self.reserved_micros -= cap\n", "            pass\n"),
        ),
    ),
    Planted(
        "lease-fails",
        "an expired lease fails the task instead of re-awarding",
        "accord/protocol/requester.py",
        (
            (
                "        return self._attempt_failed(now, ReasonCode.LEASE_EXPIRED, notify=True)\n",
                "        return self._fail(ReasonCode.LEASE_EXPIRED, now)\n",
            ),
        ),
    ),
    Planted(
        "second-price-uncapped",
        "the second price is no longer capped by the budget",
        "accord/protocol/market.py",
        (
            (
                "    return min(max(price, w.price_micros), max_price)\n",
                "    return max(price, w.price_micros)\n",
            ),
        ),
    ),
    Planted(
        "forged-bid-wins",
        "the requester awards a bid whose signature did not verify",
        "accord/protocol/requester.py",
        (
            (
                "        if self.verify_bid(offer.bid_id, offer.digest):\n",
                "        if self.verify_bid(offer.bid_id, offer.digest) or True:\n",
            ),
        ),
    ),
)


class StaleEdit(Exception):
    """The text an edit replaces no longer occurs exactly once."""


def copy_tree(dest: Path) -> None:
    """The work tree's files (tracked and new, not ignored) under ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    if dest.exists():
        shutil.rmtree(dest)
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def plant(tree: Path, bug: Planted) -> None:
    path = tree / bug.path
    text = path.read_text("utf-8")
    for old, new in bug.edits:
        if text.count(old) != 1:
            raise StaleEdit(f"{bug.name}: {bug.path} has {text.count(old)} copies of {old.strip()!r}")
        text = text.replace(old, new)
    path.write_text(text, "utf-8")


def failing_tests(tree: Path, tests: Sequence[str]) -> list[str]:
    """The ids of the tests that fail in ``tree`` (the mutation profile: no shrinking)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HYPOTHESIS_PROFILE"] = "mutation"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=no", "-rf", *tests],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    return sorted({m.group(1) for m in re.finditer(r"^FAILED (\S+)", out, re.MULTILINE)})


def is_property(test_id: str) -> bool:
    return any(p in test_id for p in PROPERTY_TESTS)


def run(names: Sequence[str], scratch: Path, tests: Sequence[str] = FAST_TESTS) -> int:
    """Plant each bug (all, or those named) and report the tests that catch it; 1 if one is caught too thinly."""
    chosen = [b for b in PLANTED if not names or b.name in names]
    weak = 0
    for bug in chosen:
        tree = scratch / f"planted-{bug.name}"
        copy_tree(tree)
        started = time.perf_counter()
        try:
            plant(tree, bug)
        except StaleEdit as exc:
            print(f"STALE {exc}")
            weak += 1
            continue
        failed = failing_tests(tree, tests)
        props = [t for t in failed if is_property(t)]
        ok = len(failed) >= 2 and bool(props)
        weak += not ok
        print(f"{'ok  ' if ok else 'WEAK'} {bug.name}: {bug.what}  ({time.perf_counter() - started:.0f} s)")
        for t in failed:
            print(f"       {'P' if is_property(t) else ' '} {t}")
        shutil.rmtree(tree)
    return 1 if weak else 0
