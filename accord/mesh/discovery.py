"""Finding agents on a running mesh: ask who is there (a NATS service PING), then wait until the registry knows
one that could take a task.

Every agent answers ``$SRV.PING.accord-agent`` at once and re-advertises within a moment (the contractor's
``Solicited`` event), so a fresh requester learns the mesh in milliseconds instead of a heartbeat interval.
Agents that do not speak the service protocol are still found by their heartbeat adverts.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

import anyio
import msgspec

from accord.bus.base import BusError
from accord.errors import AccordError
from accord.logs import get_logger
from accord.protocol import subjects
from accord.protocol.contractor import ContractorProfile
from accord.protocol.requester import TaskSpec
from accord.runtime.agent import SERVICE_NAME as AGENT_SERVICE
from accord.runtime.requester import Requester
from accord.runtime.timers import now_ns

__all__ = ["DISCOVERY_WAIT_MS", "NoAgentError", "await_candidates", "discover", "ping_agents"]

log = get_logger(__name__)

_ADVERT_TTL_MS: int = next(f.default for f in msgspec.structs.fields(ContractorProfile) if f.name == "ttl_ms")
DISCOVERY_WAIT_MS = _ADVERT_TTL_MS // 3 + 1_000
"""How long a fresh requester waits for a suitable agent by default: one heartbeat interval (agents advertise
every third of their TTL) plus a margin, for agents that start later or do not answer a service PING."""

_PING_QUIET_MS = 150
"""A PING round ends once no new agent has answered for this long."""


class NoAgentError(AccordError):
    """No advertised agent could take the task within the wait; the message says what the registry saw."""


class _Ping(msgspec.Struct):
    metadata: dict[str, str] = {}


_PING = msgspec.json.Decoder(_Ping)


async def ping_agents(requester: Requester, *, timeout_ms: int = 1_000) -> set[str]:
    """The ids of the agents that answer a service PING (``$SRV.PING.accord-agent``) within ``timeout_ms``; the
    round ends earlier once no new answer came for a moment. Empty on a bus without the service protocol."""
    bus = requester.bus
    inbox = subjects.service_inbox(requester.id, uuid.uuid4().hex)
    found: set[str] = set()
    try:
        async with await bus.subscribe(inbox, max_pending=65_536) as replies:
            await bus.publish(subjects.service_ping(AGENT_SERVICE), b"", reply=inbox)
            with anyio.move_on_after(timeout_ms / 1000):
                while True:
                    try:
                        msg = await replies.next(timeout_ms=_PING_QUIET_MS)
                    except BusError:  # quiet for a while (timeout), or the bus closed
                        break
                    try:
                        agent_id = _PING.decode(msg.data).metadata.get("agent_id")
                    except msgspec.DecodeError:
                        continue
                    if agent_id:
                        found.add(agent_id)
    except BusError as exc:  # no permission for the PING or its inbox: adverts still come by heartbeat
        log.debug("discovery.ping_failed", error=str(exc))
    return found


async def discover(requester: Requester, *, timeout_ms: int = 2_000, poll_ms: int = 10) -> set[str]:
    """Ping the agents and wait (at most ``timeout_ms`` in all) until the registry holds the advert of every
    agent that answered; the ids that answered. ``requester.run`` must be running, with ``watch_adverts``."""
    started = now_ns()
    answered = await ping_agents(requester, timeout_ms=timeout_ms)
    left_s = max(0.0, timeout_ms / 1000 - (now_ns() - started) / 1e9)
    with anyio.move_on_after(left_s):
        while not answered <= {e.advert.sender for e in requester.registry.live(now=now_ns())}:  # noqa: ASYNC110
            await anyio.sleep(poll_ms / 1000)
    return answered


async def await_candidates(
    requester: Requester,
    spec: TaskSpec,
    *,
    timeout_ms: int = DISCOVERY_WAIT_MS,
    poll_ms: int = 20,
    among: Collection[str] | None = None,
) -> list[str]:
    """Wait until ``requester``'s registry knows at least one agent that could take ``spec``; their ids.

    Returns at once when the registry already knows such an agent. A fresh requester knows nobody: it pings the
    agents (:func:`discover`), which answer and re-advertise at once; then, if none could take the task yet, it
    waits for adverts of agents that start later, up to ``timeout_ms`` in all. "Could take" means: live, a free
    slot, the task's kind and context, trusted for its residency and privacy class, and within budget, deadline
    and quality by its price sheet (the rules of spec 6.1). The task's deadline is judged as it will be when the
    task is announced: ``spec``'s deadline counts from this call and moves with the wait, so waiting never eats
    into it. Raises :class:`NoAgentError` saying what the registry saw when the time is up (``requester.run``
    must be running, with ``watch_adverts``). ``among``: only these agents count (e.g. those serving one model).
    """
    started = now_ns()
    deadline_ns = spec.constraints.deadline_ns - started  # the deadline, relative to the announce

    def found() -> tuple[list[str], str]:
        now = now_ns()
        constraints = msgspec.structs.replace(spec.constraints, deadline_ns=now + deadline_ns)
        task = msgspec.structs.replace(spec, constraints=constraints).to_task(
            sender=requester.id, task_id="0" * 32, ts=now
        )
        candidates = requester.candidates(task, now=now)
        eligible = [a for a in candidates.eligible if among is None or a in among]
        why = candidates.why_none if not candidates.eligible else "none of them serves the model asked for"
        return eligible, why

    if found()[0]:
        return found()[0]
    await discover(requester, timeout_ms=min(timeout_ms, 2_000))  # only when the registry cannot answer yet
    with anyio.move_on_after(max(0.0, timeout_ms / 1000 - (now_ns() - started) / 1e9)):
        while not found()[0]:  # noqa: ASYNC110 - the registry has no event
            await anyio.sleep(poll_ms / 1000)
    eligible, why_none = found()
    if eligible:
        return eligible
    raise NoAgentError(f"no agent could take the task after waiting {timeout_ms / 1000:.1f} s: {why_none}")
