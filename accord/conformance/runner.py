"""Run the conformance checks against one agent and collect a :class:`ConformanceReport`.

``run_suite(config, bus)`` drives an agent over any :class:`~accord.bus.base.Bus`; ``run_conformance`` connects
to NATS first (nkey seed or credentials file) and runs it there. Checks run one after another: an agent with a
single slot is a valid agent, and concurrent probes would make it decline for the wrong reason.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from accord.bus.base import Bus, BusError
from accord.conformance.registry import CheckFailed, CheckResult, CheckSpec, NotApplicable, Status, all_checks
from accord.conformance.session import KitConfig, KitSession, about, now_ns
from accord.errors import AccordError
from accord.logs import get_logger
from accord.protocol import subjects
from accord.protocol.messages import Bid, Decline
from accord.runtime.agent import SERVICE_NAME as AGENT_SERVICE
from accord.security import inbox_prefix

__all__ = ["ConformanceReport", "run_conformance", "run_suite", "select_checks"]

log = get_logger(__name__)


@dataclass(slots=True)
class ConformanceReport:
    """The outcome of one run: one result per check, in run order."""

    agent_id: str
    kit_id: str
    url: str
    started_ns: int
    duration_ms: int = 0
    results: list[CheckResult] = field(default_factory=list)
    precondition: str | None = None
    """Why the checks could not run at all (the agent is not on the mesh, or ignores the kit's key)."""

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status is Status.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        return {s.value: sum(r.status is s for r in self.results) for s in Status}

    def status(self, check_id: str) -> Status:
        for r in self.results:
            if r.id == check_id:
                return r.status
        raise KeyError(check_id)


def select_checks(ids: tuple[str, ...] | None) -> list[CheckSpec]:
    """The checks to run (all, or those named, in run order); ValueError for an unknown id."""
    checks = all_checks()
    if ids is None:
        return checks
    known = {c.id for c in checks}
    unknown = sorted(set(ids) - known)
    if unknown:
        raise ValueError(f"unknown check ids: {', '.join(unknown)}")
    return [c for c in checks if c.id in ids]


async def _run_one(spec: CheckSpec, session: KitSession) -> CheckResult:
    started = time.perf_counter()
    frames: list[dict[str, object]] = []
    try:
        detail = await spec.func(session)
        status = Status.PASSED
    except CheckFailed as exc:
        status, detail = Status.FAILED, exc.detail
        frames = [f.to_json() for f in exc.frames]
    except NotApplicable as exc:
        status, detail = Status.NOT_APPLICABLE, exc.detail
    except AccordError as exc:
        status, detail = Status.FAILED, f"the kit could not complete the check: {exc}"
    except Exception as exc:  # the top of the check loop: one broken check must not hide the others
        log.exception("conformance.check_crashed", check=spec.id)
        status, detail = Status.FAILED, f"the kit crashed in this check: {type(exc).__name__}: {exc}"
    elapsed = round((time.perf_counter() - started) * 1000)
    log.debug("conformance.check", check=spec.id, status=status.value, ms=elapsed)
    return CheckResult(spec.id, spec.title, status, spec.sections, spec.requirement, detail, frames, elapsed)


def _precondition_failed(detail: str) -> CheckResult:
    return CheckResult(
        "precondition",
        "The agent is on the mesh and answers the kit's Tasks",
        Status.FAILED,
        ("3.2", "10"),
        "The agent advertises on the mesh and bids on (or declines) an eligible Task from a requester its trust "
        "file certifies: the kit's key.",
        detail,
    )


async def _preconditions(session: KitSession) -> str | None:
    """Why no check can run (None: they can). One clear reason instead of a table of "no Bid" failures."""
    with contextlib.suppress(BusError):  # agents that answer a service PING re-advertise at once
        await session.bus.request(subjects.service_ping(AGENT_SERVICE), b"", timeout_ms=500)
    try:
        await session.first_advert()
    except CheckFailed as exc:
        return f"the agent {session.agent} is not on the mesh: {exc.detail}"
    task = await session.task()
    await session.send_all([session.seal(task)])
    reply = await session.wait(
        about(task.task_id, Bid, Decline), session.until(task.bid_window_ms + session.config.timeout_ms, task.ts)
    )
    await session.release(task)
    if reply is None:
        return (
            f"the agent {session.agent} advertises but ignores the kit's Tasks: it does not trust the kit's key "
            f"{session.kit.id} (an agent refuses unknown_key senders in silence). Certify the kit in the agent's "
            "trust file (`accord keys issue ... --name conformance-kit`) and make the agent read it (an `accord "
            "up` mesh follows its trust file; other agents may need a restart)"
        )
    return None


async def run_suite(config: KitConfig, bus: Bus, *, url: str = "") -> ConformanceReport:
    """Run the selected checks against ``config.agent_id`` over ``bus`` (already connected). When the agent is
    not on the mesh or ignores the kit, the report holds one failed ``precondition`` result and no checks."""
    checks = select_checks(config.checks)
    session = KitSession(config, bus)
    report = ConformanceReport(config.agent_id, config.identity.id, url, session.started_ns)
    async with anyio.create_task_group() as tg:
        await session.start(tg)
        report.precondition = await _preconditions(session)
        if report.precondition is not None:
            report.results.append(_precondition_failed(report.precondition))
            checks = []
        for spec in checks:
            report.results.append(await _run_one(spec, session))
        tg.cancel_scope.cancel()
    report.duration_ms = (now_ns() - report.started_ns) // 1_000_000
    return report


async def run_conformance(
    config: KitConfig,
    url: str,
    *,
    nkey_seed: str | None = None,
    credentials: str | Path | None = None,
) -> ConformanceReport:
    """Connect to NATS at ``url`` and run the suite; BusError when the connection fails. The kit connects as
    its own certified key (a mesh's server admits certified keys only, spec 11.6) unless given a bus seed or
    a ``.creds`` file."""
    from accord.bus.nats import NatsBus

    if nkey_seed is None and credentials is None:
        nkey_seed = config.identity.seed
    async with NatsBus(
        url,
        name="accord-conformance",
        nkey_seed=nkey_seed,
        credentials=credentials,
        inbox_prefix=inbox_prefix(config.identity.id),
    ) as bus:
        return await run_suite(config, bus, url=url)
