"""Finding agents on a running mesh: wait until the registry knows one that could take a task."""

from __future__ import annotations

import anyio
import msgspec

from accord.errors import AccordError
from accord.protocol.contractor import ContractorProfile
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import Requester
from accord.runtime.timers import now_ns

__all__ = ["DISCOVERY_WAIT_MS", "NoAgentError", "await_candidates"]

_ADVERT_TTL_MS: int = next(f.default for f in msgspec.structs.fields(ContractorProfile) if f.name == "ttl_ms")
DISCOVERY_WAIT_MS = _ADVERT_TTL_MS // 3 + 1_000
"""How long a fresh requester waits for a suitable agent's advert by default: one heartbeat interval (agents
advertise every third of their TTL) plus a margin for connecting and verifying."""


class NoAgentError(AccordError):
    """No advertised agent could take the task within the wait; the message says what the registry saw."""


async def await_candidates(
    requester: Requester, spec: TaskSpec, *, timeout_ms: int = DISCOVERY_WAIT_MS, poll_ms: int = 20
) -> list[str]:
    """Wait until ``requester``'s registry knows at least one agent that could take ``spec``; their ids.

    A fresh requester knows nobody: agents advertise once when they start, then every third of their advert TTL.
    So a command that asks one question right after connecting waits here (by default one heartbeat interval
    plus a margin) instead of announcing into an empty registry. "Could take" means: live, a free slot, the
    task's kind and context, trusted for its residency and privacy class, and within budget, deadline and
    quality by its price sheet (the rules of spec 6.1). Never waits past the task's deadline. Raises
    :class:`NoAgentError` saying what the registry saw when the time is up (``requester.run`` must be running,
    with ``watch_adverts``).
    """
    task = spec.to_task(sender=requester.id, task_id="0" * 32)  # what it would announce: the registry's view
    left_ms = (spec.constraints.deadline_ns - now_ns()) // 1_000_000
    timeout_ms = max(0, min(timeout_ms, left_ms))  # never past the task's deadline
    with anyio.move_on_after(timeout_ms / 1000):
        while not requester.candidates(task, now=now_ns()).eligible:  # noqa: ASYNC110 - the registry has no event
            await anyio.sleep(poll_ms / 1000)
    found = requester.candidates(task, now=now_ns())
    if found.eligible:
        return found.eligible
    raise NoAgentError(f"no agent could take the task after waiting {timeout_ms / 1000:.1f} s: {found.why_none}")
