"""The kit's documentation and reports, without a bus: spec/CONFORMANCE.md lists exactly what the kit checks,
every section a check cites exists in spec/PROTOCOL.md, and the reports render and parse."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from typing import Final

from rich.console import Console

from accord.conformance import (
    CHECK_IDS,
    CheckResult,
    ConformanceReport,
    Status,
    all_checks,
    print_report,
    to_json,
    to_junit,
)
from accord.conformance.fixtures import FIXTURES, Fault
from accord.conformance.session import corrupt_signature
from accord.protocol.messages import Cancel
from accord.security import Identity, SecurityError, TrustStore, open_frame, seal
from tests.support.paths import SPEC_DIR

SPEC: Final = SPEC_DIR


def test_conformance_doc_lists_every_check_as_the_kit_states_it() -> None:
    doc = (SPEC / "CONFORMANCE.md").read_text(encoding="utf-8")
    for c in all_checks():
        row = f"| `{c.id}` | {', '.join(f'§{s}' for s in c.sections)} | {c.requirement} |"
        assert row in doc, f"spec/CONFORMANCE.md is stale for {c.id}"
    for fault, fixture in FIXTURES.items():
        breaks = ", ".join(f"`{b}`" for b in sorted(fixture.breaks)) or "none: passes every check"
        assert f"| `{fault.value}` | {fixture.description} | {breaks} |" in doc, fault
    documented = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", doc, flags=re.MULTILINE)
    assert documented == list(CHECK_IDS)


def test_every_cited_section_exists() -> None:
    protocol = (SPEC / "PROTOCOL.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", protocol, flags=re.MULTILINE))
    for c in all_checks():
        missing = [s for s in c.sections if s not in headings]
        assert not missing, (c.id, missing)


def test_fixtures_break_only_known_checks_and_cover_every_fault() -> None:
    assert set(FIXTURES) == set(Fault)
    assert not FIXTURES[Fault.NONE].breaks
    for fault, fixture in FIXTURES.items():
        assert fixture.breaks <= set(CHECK_IDS), fault
        assert fault is Fault.NONE or fixture.breaks, fault
    covered = set().union(*(f.breaks for f in FIXTURES.values()))
    # task.bid_eligible is exercised by every fixture's positive path (one that never bids fails almost all).
    assert set(CHECK_IDS) - covered == {"task.bid_eligible"}


def test_a_corrupted_signature_is_refused_as_bad_signature() -> None:
    kit = Identity.generate()
    trust = TrustStore()
    trust.trust_directly(kit.id, name="kit")
    frame = seal(Cancel(id="0" * 32, sender=kit.id, ts=1, task_id="1" * 32), kit)
    open_frame(frame, trust, None, 1)
    try:
        open_frame(corrupt_signature(frame), trust, None, 1)
    except SecurityError as exc:
        assert exc.reason.value == "bad_signature"
    else:  # pragma: no cover - the point of the test
        raise AssertionError("a corrupted signature verified")


def _report() -> ConformanceReport:
    report = ConformanceReport("UAGENT", "UKIT", "nats://127.0.0.1:4222", 1_700_000_000 * 10**9, 1234)
    frame: dict[str, object] = {"subject": "accord.v1.dm.UKIT.UAGENT", "message": {"type": "bid", "price": 3}}
    report.results = [
        CheckResult("bid.window", "In time", Status.FAILED, ("3.4", "6.5"), "in time", "late <&>", [frame], 5),
        CheckResult("task.decline_kind", "Kinds", Status.NOT_APPLICABLE, ("6.7",), "decline", "serves all", [], 1),
        CheckResult("award.ack", "Acks", Status.PASSED, ("5.6",), "ack", "AwardAck after 3 ms", [], 2),
    ]
    return report


def test_reports_render_for_humans_and_ci() -> None:
    report = _report()
    assert not report.ok and report.counts() == {"passed": 1, "failed": 1, "not_applicable": 1}
    data = json.loads(to_json(report))
    assert data["counts"] == report.counts() and data["ok"] is False
    assert data["checks"][0]["spec"] == ["PROTOCOL.md §3.4", "PROTOCOL.md §6.5"]
    assert data["checks"][0]["frames"][0]["message"]["price"] == 3
    suite = ET.fromstring(to_junit(report)).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["bid.window"].find("failure")
    assert failure is not None and failure.get("message") == "late <&>"
    assert failure.text is not None and '"price": 3' in failure.text and "PROTOCOL.md §3.4" in failure.text
    assert cases["task.decline_kind"].find("skipped") is not None
    console = Console(file=io.StringIO(), width=200, record=True)
    print_report(report, console)
    text = console.export_text()
    assert "FAILED" in text and "late <&>" in text and "1 passed, 1 failed, 1 not applicable" in text
