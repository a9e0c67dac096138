"""The conformance kit against real agents over a real nats-server.

One run drives, at the same time, our own Agent (SimulatedBackend), the correct control fixture and every
negative fixture, each with its own kit identity and NATS connections; the tests then judge the reports. Our
Agent must pass every check; each fixture must fail exactly the checks it was built to fail.
"""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Final

import anyio
import msgspec
import pytest
from rich.console import Console

from accord.bus.server import NatsServer
from accord.conformance import CHECK_IDS, ConformanceReport, Status, print_report, to_json, to_junit
from accord.conformance.fixtures import FIXTURES, Fault
from accord.security.testing import Pki
from tests.conformance.harness import (
    MAX_PAYLOAD,
    fixture_profile,
    kit_config,
    run_kits,
    start_fixture,
    start_sim_agent,
)

pytestmark = pytest.mark.integration

OURS: Final = "our-agent"
FREE: Final = "free-for-all"

KNOWN_AGENT_BUGS: Final[dict[str, str]] = {}
"""Checks our own Agent fails because of bugs outside the kit (reported; the checks are not weakened)."""


def _run_all(url: str) -> tuple[dict[str, ConformanceReport], float]:
    async def main() -> dict[str, ConformanceReport]:
        pki = Pki()
        async with AsyncExitStack() as stack:
            agents = {OURS: await start_sim_agent(stack, url, pki)}
            for fault in Fault:
                agents[fault.value] = await start_fixture(stack, url, pki, fault)
            # a correct agent that serves every kind for free: two decline checks cannot apply to it
            free = fixture_profile(FREE)
            gratis = [
                msgspec.structs.replace(m, price_in_per_1k_micros=0, price_out_per_1k_micros=0)
                for m in free.models
            ]
            free = msgspec.structs.replace(free, skills=(), models=tuple(gratis))
            agents[FREE] = await start_fixture(stack, url, pki, Fault.NONE, profile=free)
            configs = {name: kit_config(pki, identity) for name, identity in agents.items()}
            return await run_kits(url, configs)

    started = time.perf_counter()
    reports = anyio.run(main)
    return reports, time.perf_counter() - started


@pytest.fixture(scope="module")
def reports() -> Iterator[dict[str, ConformanceReport]]:
    server = NatsServer(name="accord-conformance", extra={"max_payload": MAX_PAYLOAD}).start()
    try:
        reports, seconds = _run_all(server.url)
    finally:
        server.cleanup()
    console = Console(file=io.StringIO(), width=160, record=True)
    for name, report in reports.items():
        console.print(f"\n=== {name} ===")
        print_report(report, console)
    print(console.export_text())
    print(f"{len(reports)} kit runs at once in {seconds:.1f} s")
    yield reports


def _failed(report: ConformanceReport) -> set[str]:
    return {r.id for r in report.failed}


def _explain(report: ConformanceReport) -> str:
    return "\n".join(f"{r.id}: {r.status.value}: {r.detail}" for r in report.results if r.status is Status.FAILED)


def test_every_check_ran(reports: dict[str, ConformanceReport]) -> None:
    for name, report in reports.items():
        assert [r.id for r in report.results] == list(CHECK_IDS), name


def test_our_agent_fails_only_its_known_bugs(reports: dict[str, ConformanceReport]) -> None:
    report = reports[OURS]
    assert _failed(report) == set(KNOWN_AGENT_BUGS), _explain(report)
    assert report.status("task.decline_kind") is Status.PASSED  # our profile makes every check applicable
    assert report.status("task.decline_price") is Status.PASSED


def test_our_agent_passes_every_check(reports: dict[str, ConformanceReport]) -> None:
    report = reports[OURS]
    assert report.ok, _explain(report)


def test_checks_an_agent_does_not_advertise_for_do_not_apply(reports: dict[str, ConformanceReport]) -> None:
    report = reports[FREE]
    assert report.ok, _explain(report)
    not_applicable = {r.id: r.detail for r in report.results if r.status is Status.NOT_APPLICABLE}
    assert set(not_applicable) == {"task.decline_kind", "task.decline_price"}
    assert "serves every kind" in not_applicable["task.decline_kind"]
    assert json.loads(to_json(report))["counts"]["not_applicable"] == 2


@pytest.mark.parametrize("fault", list(Fault), ids=[f.value for f in Fault])
def test_fixture_fails_exactly_what_it_breaks(reports: dict[str, ConformanceReport], fault: Fault) -> None:
    report = reports[fault.value]
    expected = FIXTURES[fault].breaks
    assert _failed(report) == expected, _explain(report)
    for r in report.failed:
        assert r.detail, r.id  # every failure says what the agent did
    not_applicable = {r.id for r in report.results if r.status is Status.NOT_APPLICABLE}
    assert not not_applicable, not_applicable


def test_failures_carry_the_frames_they_rest_on(reports: dict[str, ConformanceReport]) -> None:
    late = next(r for r in reports[Fault.BIDS_LATE.value].results if r.id == "bid.window")
    assert late.status is Status.FAILED
    frame = late.frames[0]
    message = frame["message"]
    assert isinstance(message, dict) and message["type"] == "bid"
    assert "after the bid window closed" in late.detail
    assert late.sections == ("3.4", "6.5")
    ignored = next(r for r in reports[Fault.IGNORES_CANCEL.value].results if r.id == "cancel.stops")
    assert {f["message"]["type"] for f in ignored.frames} == {"result"}  # type: ignore[index]


def test_reports_serialise_for_ci(reports: dict[str, ConformanceReport]) -> None:
    report = reports[Fault.BIDS_WHEN_INELIGIBLE.value]
    data = json.loads(to_json(report))
    assert data["ok"] is False
    assert data["counts"]["failed"] == len(FIXTURES[Fault.BIDS_WHEN_INELIGIBLE].breaks)
    by_id = {c["id"]: c for c in data["checks"]}
    assert by_id["task.decline_residency"]["status"] == "failed"
    assert by_id["task.decline_residency"]["frames"][0]["message"]["type"] == "bid"
    assert by_id["bid.window"]["status"] == "passed"
    root = ET.fromstring(to_junit(report))
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == str(len(CHECK_IDS))
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed == FIXTURES[Fault.BIDS_WHEN_INELIGIBLE].breaks
