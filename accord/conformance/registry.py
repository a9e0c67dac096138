"""The conformance checks: their ids, what each requires (citing spec/PROTOCOL.md), and their outcomes.

A check is an async function over a :class:`~accord.conformance.session.KitSession`. It returns a short note when
the agent passed, raises :class:`CheckFailed` (with the frames it got) when it did not, and
:class:`NotApplicable` when the agent does not advertise the capability the check needs. Ids are stable
(``area.rule``): CI pipelines and the negative fixtures refer to them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from accord.errors import AccordError

if TYPE_CHECKING:
    from accord.conformance.session import Frame, KitSession

__all__ = [
    "CHECK_IDS",
    "CheckFailed",
    "CheckFunc",
    "CheckResult",
    "CheckSpec",
    "NotApplicable",
    "Status",
    "all_checks",
    "check",
    "fail",
]

CHECK_IDS: Final[tuple[str, ...]] = (
    "advertise.valid",
    "task.bid_eligible",
    "bid.window",
    "bid.fields",
    "award.ack",
    "result.sealed",
    "result.attested",
    "task.decline_residency",
    "task.decline_kind",
    "task.decline_deadline",
    "task.decline_price",
    "task.prompt_digest",
    "cancel.stops",
    "refuse.bad_signature",
    "refuse.unknown_key",
    "refuse.expired",
    "refuse.stale",
    "refuse.replay_task",
    "refuse.replay_award",
    "refuse.wrong_winner",
    "refuse.unknown_bid",
    "robust.malformed",
    "advertise.heartbeat",
    "frames.signed",
)
"""Every check, in the order the kit runs them. The ineligible Tasks go out after the award flow, when the probe
bid no longer holds a slot (a busy agent would decline them for the wrong reason); ``robust.malformed`` comes
late (an agent that dies on garbage fails only it); ``advertise.heartbeat`` and ``frames.signed`` judge what was
collected during the whole run."""


class Status(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_APPLICABLE = "not_applicable"


class CheckFailed(AccordError):
    """The agent broke the rule; ``frames`` are what it sent (or nothing, when it stayed silent)."""

    def __init__(self, detail: str, frames: Sequence[Frame] = ()) -> None:
        self.detail = detail
        self.frames = list(frames)
        super().__init__(detail)


class NotApplicable(AccordError):
    """The agent does not advertise what the check needs (e.g. it serves every task kind)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def fail(detail: str, *frames: Frame | None) -> CheckFailed:
    """``raise fail("...", frame, ...)``: a CheckFailed with the frames that are not None."""
    return CheckFailed(detail, [f for f in frames if f is not None])


CheckFunc = Callable[["KitSession"], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class CheckSpec:
    id: str
    title: str
    sections: tuple[str, ...]
    """spec/PROTOCOL.md sections (``"7.5"``) the requirement comes from."""
    requirement: str
    """What the spec requires, in one or two sentences (shown with every failure)."""
    func: CheckFunc

    @property
    def group(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def cite(self) -> str:
        return "PROTOCOL.md " + ", ".join(f"§{s}" for s in self.sections)


@dataclass(slots=True)
class CheckResult:
    id: str
    title: str
    status: Status
    sections: tuple[str, ...]
    requirement: str
    detail: str
    frames: list[dict[str, object]] = field(default_factory=list)
    """The frames the agent sent that the verdict rests on, decoded (JSON-ready)."""
    duration_ms: int = 0

    @property
    def cite(self) -> str:
        return "PROTOCOL.md " + ", ".join(f"§{s}" for s in self.sections)


_REGISTRY: dict[str, CheckSpec] = {}


def check(
    check_id: str, title: str, *, sections: Sequence[str], requirement: str
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check function under ``check_id`` (which must be listed in :data:`CHECK_IDS`)."""
    if check_id not in CHECK_IDS:
        raise ValueError(f"unknown check id {check_id!r}: add it to CHECK_IDS")

    def register(func: CheckFunc) -> CheckFunc:
        if check_id in _REGISTRY:
            raise ValueError(f"check {check_id!r} registered twice")
        _REGISTRY[check_id] = CheckSpec(check_id, title, tuple(sections), " ".join(requirement.split()), func)
        return func

    return register


def all_checks() -> list[CheckSpec]:
    """Every registered check in run order (importing the check modules registers them)."""
    import accord.conformance.market_checks
    import accord.conformance.security_checks  # noqa: F401

    missing = [c for c in CHECK_IDS if c not in _REGISTRY]
    if missing:  # pragma: no cover - a check id without an implementation
        raise RuntimeError(f"checks without an implementation: {missing}")
    return [_REGISTRY[c] for c in CHECK_IDS]
