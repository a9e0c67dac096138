"""The conformance kit: drive a running agent (any language) through the protocol and judge every rule.

The kit is a requester with its own identity (the operator certifies its key in the agent's trust file). It
speaks to the agent over the bus, checks what comes back against spec/PROTOCOL.md and reports per check:
passed, failed (with the frames it got and the section that requires otherwise), or not applicable.
spec/CONFORMANCE.md lists the checks. ``accord.conformance.fixtures`` holds deliberately broken agents that the
kit must flag, each for its own reason.
"""

from accord.conformance.registry import (
    CHECK_IDS,
    CheckFailed,
    CheckResult,
    CheckSpec,
    NotApplicable,
    Status,
    all_checks,
)
from accord.conformance.report import print_report, to_json, to_junit
from accord.conformance.runner import ConformanceReport, run_conformance, run_suite, select_checks
from accord.conformance.session import Frame, KitConfig, KitSession

__all__ = [
    "CHECK_IDS",
    "CheckFailed",
    "CheckResult",
    "CheckSpec",
    "Frame",
    "KitConfig",
    "NotApplicable",
    "ConformanceReport",
    "KitSession",
    "Status",
    "all_checks",
    "print_report",
    "run_conformance",
    "run_suite",
    "select_checks",
    "to_json",
    "to_junit",
]
