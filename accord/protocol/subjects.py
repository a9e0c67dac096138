"""The NATS subject scheme of Accord v1. Every subject Accord uses is built here.

The last token of every subject a peer publishes on is the publisher's own agent id, so that a NATS server
holding per-agent permissions (``publish: accord.v1.*.*.<self>`` and the like) enforces who may speak as whom;
announcement subjects carry tier, residency class and skill tokens so that subscribe permissions decide who may
even see a task.

    accord.v1.adv.<tier>.<region>.<agent>                   Advertise, Withdraw (heartbeats)
    accord.v1.cfp.<tier>.<residency>.<skill>.<requester>    Task, broadcast to a class of agents
    accord.v1.dm.<recipient>.<sender>                       everything addressed to one peer
    accord.v1.log.<kind>.<agent>                            outcome and audit records

``any`` stands for "no narrowing" in the tier and residency positions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from accord.errors import LocalProtocolError
from accord.protocol.messages import PROTOCOL_VERSION, Tier

__all__ = [
    "ANY",
    "PREFIX",
    "Subject",
    "advertise",
    "advertise_filter",
    "announce",
    "announce_filter",
    "announce_filters",
    "direct",
    "direct_filter",
    "log",
    "log_filter",
    "parse_direct",
    "service_inbox",
    "service_ping",
    "validate_token",
]

PREFIX: Final = f"accord.v{PROTOCOL_VERSION}"
ANY: Final = "any"
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_AGENT: Final = re.compile(r"U[A-Z2-7]{55}")  # both used with fullmatch: "$" would accept a trailing newline

Subject = str


def validate_token(value: str, what: str = "token") -> str:
    """Return ``value`` if it is a safe single subject token; raise LocalProtocolError otherwise.

    Refuses wildcards (``*``, ``>``), dots, whitespace and anything else outside ``[A-Za-z0-9_-]``, so user input
    can never widen a subject or a permission.
    """
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise LocalProtocolError(f"invalid {what} for a subject token: {value!r}")
    return value


def _agent(value: str, what: str = "agent id") -> str:
    if not isinstance(value, str) or not _AGENT.fullmatch(value):
        raise LocalProtocolError(f"invalid {what}: {value!r}")
    return value


def _tier(tier: Tier | str | None) -> str:
    if tier is None:
        return ANY
    return validate_token(str(tier.value if isinstance(tier, Tier) else tier), "tier")


def _residency(value: str) -> str:
    """A residency class token; ``any`` is reserved (it means "no requirement" in the announce position)."""
    validate_token(value, "residency class")
    if value == ANY:
        raise LocalProtocolError(f"{ANY!r} is reserved and cannot name a residency class; pass None for no class")
    return value


def advertise(tier: Tier, region: str, agent: str) -> Subject:
    """Where an agent publishes its Advertise heartbeats and its Withdraw."""
    return f"{PREFIX}.adv.{_tier(tier)}.{validate_token(region, 'region')}.{_agent(agent)}"


def advertise_filter(tier: Tier | None = None, region: str | None = None) -> Subject:
    """Subscription subject for the registry view, optionally narrowed by tier and region."""
    t = "*" if tier is None else _tier(tier)
    r = "*" if region is None else validate_token(region, "region")
    return f"{PREFIX}.adv.{t}.{r}.*"


def announce(tier: Tier | None, residency: str | None, skill: str, requester: str) -> Subject:
    """Where a requester broadcasts a Task to every agent of one tier / residency class / skill."""
    res = ANY if residency is None else _residency(residency)
    return f"{PREFIX}.cfp.{_tier(tier)}.{res}.{validate_token(skill, 'skill')}.{_agent(requester)}"


def announce_filter(tier: Tier | str | None, residency: str | None, skill: str | None) -> Subject:
    """What an agent subscribes to; None means "any value" (a wildcard), not the literal ``any`` token.

    An agent of tier T serving residency class R and skill S subscribes to four subjects:
    (T|any) x (R|any) for S, so it sees tasks that ask for its tier or any tier, its class or no class
    (:func:`announce_filters` lists them).
    """
    t = "*" if tier is None else _tier(tier)
    r = "*" if residency is None else validate_token(residency, "residency class")
    s = "*" if skill is None else validate_token(skill, "skill")
    return f"{PREFIX}.cfp.{t}.{r}.{s}.*"


def announce_filters(tier: Tier, residencies: Sequence[str], skills: Sequence[str] | None) -> list[Subject]:
    """Every announce subject an agent of ``tier`` serving ``residencies`` and ``skills`` subscribes to.

    (tier | any) x (each residency class | any) x (each skill; ``None``: every skill), sorted, no duplicates.
    """
    tiers = [_tier(tier), ANY]
    classes = [*(_residency(r) for r in residencies), ANY]
    skill_tokens: list[str | None] = [None] if skills is None else list(skills)
    return sorted({announce_filter(t, r, s) for t in tiers for r in classes for s in skill_tokens})


def direct(recipient: str, sender: str) -> Subject:
    """Point-to-point: targeted calls for proposals, bids, awards, acks, progress, results, cancels."""
    return f"{PREFIX}.dm.{_agent(recipient, 'recipient')}.{_agent(sender, 'sender')}"


def direct_filter(recipient: str) -> Subject:
    """What a peer subscribes to for its own inbox."""
    return f"{PREFIX}.dm.{_agent(recipient, 'recipient')}.*"


def parse_direct(subject: str) -> tuple[str, str]:
    """(recipient, sender) of a direct subject; LocalProtocolError if it is not one."""
    parts = subject.split(".")
    if len(parts) != 5 or ".".join(parts[:3]) != f"{PREFIX}.dm":
        raise LocalProtocolError(f"not a direct subject: {subject!r}")
    return _agent(parts[3], "recipient"), _agent(parts[4], "sender")


def log(kind: str, agent: str) -> Subject:
    """Where outcome or audit records of one agent go (e.g. ``kind='outcome'``)."""
    return f"{PREFIX}.log.{validate_token(kind, 'log kind')}.{_agent(agent)}"


def log_filter(kind: str | None = None) -> Subject:
    k = "*" if kind is None else validate_token(kind, "log kind")
    return f"{PREFIX}.log.{k}.*"


AGENT_SERVICE: Final = "accord-agent"
"""The NATS service kind every agent registers (``$SRV.PING|INFO|STATS.accord-agent``)."""
REQUESTER_SERVICE: Final = "accord-requester"
"""The NATS service kind a requester registers."""


def service_ping(service: str) -> Subject:
    """Where a NATS service PING reaches every instance of ``service`` (e.g. ``accord-agent``): every agent
    answers it at once (discovery without waiting for a heartbeat)."""
    return f"$SRV.PING.{validate_token(service, 'service name')}"


def service_inbox(requester: str, token: str) -> Subject:
    """A reply subject of ``requester`` for one request with several answers (a service PING); under
    ``_INBOX.<requester>`` as per-agent permissions allow."""
    return f"_INBOX.{_agent(requester, 'requester')}.{validate_token(token, 'inbox token')}"
