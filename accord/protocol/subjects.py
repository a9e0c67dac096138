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
    "direct",
    "direct_filter",
    "log",
    "log_filter",
    "parse_direct",
    "validate_token",
]

PREFIX: Final = f"accord.v{PROTOCOL_VERSION}"
ANY: Final = "any"
_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_AGENT: Final = re.compile(r"^U[A-Z2-7]{55}$")

Subject = str


def validate_token(value: str, what: str = "token") -> str:
    """Return ``value`` if it is a safe single subject token; raise LocalProtocolError otherwise.

    Refuses wildcards (``*``, ``>``), dots, whitespace and anything else outside ``[A-Za-z0-9_-]``, so user input
    can never widen a subject or a permission.
    """
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise LocalProtocolError(f"invalid {what} for a subject token: {value!r}")
    return value


def _agent(value: str, what: str = "agent id") -> str:
    if not isinstance(value, str) or not _AGENT.match(value):
        raise LocalProtocolError(f"invalid {what}: {value!r}")
    return value


def _tier(tier: Tier | str | None) -> str:
    if tier is None:
        return ANY
    return validate_token(str(tier.value if isinstance(tier, Tier) else tier), "tier")


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
    res = ANY if residency is None else validate_token(residency, "residency class")
    return f"{PREFIX}.cfp.{_tier(tier)}.{res}.{validate_token(skill, 'skill')}.{_agent(requester)}"


def announce_filter(tier: Tier | None, residency: str | None, skill: str | None) -> Subject:
    """What an agent subscribes to; None means "any value" (a wildcard), not the literal ``any`` token.

    An agent of tier T serving residency class R and skill S subscribes to four subjects:
    (T|any) x (R|any) for S, so it sees tasks that ask for its tier or any tier, its class or no class.
    """
    t = "*" if tier is None else _tier(tier)
    r = "*" if residency is None else validate_token(residency, "residency class")
    s = "*" if skill is None else validate_token(skill, "skill")
    return f"{PREFIX}.cfp.{t}.{r}.{s}.*"


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
