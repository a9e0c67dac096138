"""Reports for humans (a rich table, then each failure with its frames) and for CI (JUnit XML, JSON)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Final

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from accord.conformance.registry import CheckResult, Status
from accord.conformance.runner import ConformanceReport

__all__ = ["REPORT_VERSION", "print_report", "to_json", "to_junit"]

REPORT_VERSION: Final = 1
_MARK: Final = {
    Status.PASSED: "[green]passed[/green]",
    Status.FAILED: "[bold red]FAILED[/bold red]",
    Status.NOT_APPLICABLE: "[dim]n/a[/dim]",
}
_FRAME_CHARS: Final = 1500


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _result_json(r: CheckResult) -> dict[str, object]:
    return {
        "id": r.id,
        "title": r.title,
        "status": r.status.value,
        "spec": [f"PROTOCOL.md §{s}" for s in r.sections],
        "requirement": r.requirement,
        "detail": r.detail,
        "duration_ms": r.duration_ms,
        "frames": r.frames,
    }


def to_json(report: ConformanceReport) -> bytes:
    """The report as JSON: metadata, counts per status, and every check with the frames behind a failure."""
    data = {
        "report_version": REPORT_VERSION,
        "tool": "accord conformance",
        "agent": report.agent_id,
        "kit": report.kit_id,
        "nats": report.url,
        "started": _iso(report.started_ns),
        "duration_ms": report.duration_ms,
        "ok": report.ok,
        "counts": report.counts(),
        "checks": [_result_json(r) for r in report.results],
    }
    return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def _frames_text(r: CheckResult) -> str:
    if not r.frames:
        return "(the agent sent no frame for this)"
    return "\n".join(json.dumps(f, ensure_ascii=False)[:_FRAME_CHARS] for f in r.frames)


def to_junit(report: ConformanceReport) -> bytes:
    """JUnit XML: one testsuite, one testcase per check; failures carry the requirement and the frames;
    checks that do not apply are skipped."""
    counts = report.counts()
    seconds = f"{report.duration_ms / 1000:.3f}"
    suites = ET.Element(
        "testsuites",
        name="accord-conformance",
        tests=str(len(report.results)),
        failures=str(counts[Status.FAILED.value]),
        errors="0",
        skipped=str(counts[Status.NOT_APPLICABLE.value]),
        time=seconds,
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="accord-conformance",
        tests=str(len(report.results)),
        failures=str(counts[Status.FAILED.value]),
        errors="0",
        skipped=str(counts[Status.NOT_APPLICABLE.value]),
        time=seconds,
        timestamp=_iso(report.started_ns),
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (("agent", report.agent_id), ("kit", report.kit_id), ("nats", report.url)):
        ET.SubElement(props, "property", name=name, value=value)
    for r in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"accord.conformance.{r.id.split('.', 1)[0]}",
            name=r.id,
            time=f"{r.duration_ms / 1000:.3f}",
        )
        if r.status is Status.FAILED:
            failure = ET.SubElement(case, "failure", message=r.detail, type="conformance")
            failure.text = f"{r.cite}: {r.requirement}\n\nframes received:\n{_frames_text(r)}\n"
        elif r.status is Status.NOT_APPLICABLE:
            ET.SubElement(case, "skipped", message=f"not applicable: {r.detail}")
        else:
            out = ET.SubElement(case, "system-out")
            out.text = r.detail
    ET.indent(suites)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def print_report(report: ConformanceReport, console: Console | None = None) -> None:
    """The table of checks, then every failure: what the spec requires and the frames the agent sent."""
    console = console or Console()
    table = Table(title=f"Accord conformance: agent {report.agent_id}", title_justify="left")
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("spec", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in report.results:
        table.add_row(r.id, _MARK[r.status], ", ".join(f"§{s}" for s in r.sections), escape(r.detail))
    console.print(table)
    for r in report.failed:
        console.print(f"\n[bold red]✗ {r.id}[/bold red] {escape(r.title)}  ({r.cite})", highlight=False)
        console.print(f"  [bold]got:[/bold] {escape(r.detail)}", highlight=False)
        console.print(f"  [bold]required:[/bold] {escape(r.requirement)}", highlight=False)
        for line in _frames_text(r).splitlines():
            console.print(f"  [dim]{escape(line)}[/dim]", highlight=False, soft_wrap=True)
    counts = report.counts()
    style = "green" if report.ok else "bold red"
    console.print(
        f"\n[{style}]{counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['not_applicable']} not applicable[/{style}] in {report.duration_ms / 1000:.1f} s",
        highlight=False,
    )
