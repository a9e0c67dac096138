"""NATS subject permissions for one agent, derived from the subject scheme in :mod:`accord.protocol.subjects`.

The scheme puts the publisher's own agent id in the last token of every subject a peer publishes on, so one
template per agent lets the server enforce "an agent speaks only as itself":

    publish    accord.v1.adv.*.*.<self>          its Advertise / Withdraw
               accord.v1.cfp.*.*.*.<self>        the tasks it announces as a requester
               accord.v1.dm.*.<self>             bids, awards, acks, results... to any peer, as sender <self>
               accord.v1.log.*.<self>            its outcome and audit records
               (responses)                       one reply to a request it received (allow_responses)
    subscribe  accord.v1.adv.*.*.*               the registry view
               accord.v1.cfp.<T|any>.<R|any>.<S>.*  calls for proposals for its tier / classes / skills
               accord.v1.dm.<self>.*             its own inbox only
               _INBOX.<self>.>                   replies to its own requests (use inbox_prefix(agent))
               $SRV.<V>, $SRV.<V>.>              NATS service protocol requests, V in PING, INFO, STATS,
                                                 answered through allow_responses (no publish on $SRV)

Everything else is denied by omission (NATS allow lists are exhaustive). A connection using these permissions
must set ``inbox_prefix=inbox_prefix(agent)``, so that nobody can subscribe to another agent's replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from accord.protocol import subjects
from accord.protocol.messages import Tier
from accord.security.certs import Certificate

__all__ = ["agent_permissions", "certified_permissions", "inbox_prefix", "kv_award_key"]

_SERVICE_VERBS: Final = ("PING", "INFO", "STATS")
"""The verbs of the NATS service protocol (nats.micro) an agent answers on ``$SRV.<verb>[.<kind>[.<id>]]``."""


def inbox_prefix(agent_id: str) -> str:
    """The reply-inbox prefix an agent's connection uses (``_INBOX.<agent>``)."""
    subjects.direct_filter(agent_id)  # validates the id
    return f"_INBOX.{agent_id}"


def kv_award_key(requester: str, task_id: str) -> str:
    """Key of a task's award record in the awards KV bucket: ``<requester>.<task_id>``.

    The requester id comes first so that the permission template can confine each requester to its own keys.
    """
    subjects.direct_filter(requester)
    return f"{requester}.{subjects.validate_token(task_id, 'task id')}"


def certified_permissions(cert: Certificate) -> dict[str, Any]:
    """The permissions a certified key gets on a mesh's own server (``accord up``): it publishes only as itself
    (and the discovery PINGs) and sees only the calls for proposals of its certified tier and residency classes
    (spec 11.6)."""
    return agent_permissions(cert.agent_id, tier=cert.tier, residencies=cert.residency, discover=True)


def agent_permissions(
    agent_id: str,
    *,
    tier: Tier | None = None,
    residencies: Sequence[str] = (),
    skills: Sequence[str] | None = None,
    read_logs: bool = False,
    kv_buckets: Sequence[str] = (),
    discover: bool = False,
) -> dict[str, Any]:
    """The nats-server ``permissions`` block for one agent (a dict, ready for JSON config or a user JWT).

    With ``tier`` the calls for proposals the agent may even see are narrowed to its tier and
    ``residencies`` (and ``skills``; None: all); without, it sees all of them. Every agent may receive the NATS
    service protocol's requests (``$SRV.PING|INFO|STATS``, for any service kind and instance) and answer each
    once through ``allow_responses``; it may not publish on ``$SRV`` itself. ``read_logs`` lets it subscribe to
    every agent's log subjects (auditors, router trainers); ``kv_buckets`` lets it read a KV bucket and write only
    the keys under its own id (award records, see :func:`kv_award_key`); ``discover`` lets it publish the
    discovery PINGs ``$SRV.PING.accord-agent`` and ``$SRV.PING.accord-requester`` (and nothing else on ``$SRV``).
    """
    a = subjects.parse_direct(subjects.direct(agent_id, agent_id))[0]  # validates the id
    p = subjects.PREFIX
    publish = [f"{p}.adv.*.*.{a}", f"{p}.cfp.*.*.*.{a}", f"{p}.dm.*.{a}", f"{p}.log.*.{a}"]
    subscribe = [subjects.direct_filter(a), subjects.advertise_filter()]
    if tier is None:
        if residencies or skills is not None:
            raise ValueError("narrowing calls for proposals by residency or skill needs the agent's tier")
        subscribe.append(f"{p}.cfp.>")
    else:
        tiers = [subjects.validate_token(tier.value, "tier"), subjects.ANY]
        classes = [*(subjects.validate_token(r, "residency class") for r in residencies), subjects.ANY]
        skill_tokens = ["*"] if skills is None else [subjects.validate_token(k, "skill") for k in skills]
        subscribe += sorted({f"{p}.cfp.{t}.{r}.{k}.*" for t in tiers for r in classes for k in skill_tokens})
    subscribe.append(f"{inbox_prefix(a)}.>")
    for verb in _SERVICE_VERBS:  # nats.micro subscribes $SRV.<verb>, $SRV.<verb>.<kind>, $SRV.<verb>.<kind>.<id>
        subscribe += [f"$SRV.{verb}", f"$SRV.{verb}.>"]
    if discover:  # who is there: a PING every Accord agent and requester answers (spec 11.6, discovery)
        publish += [
            subjects.service_ping(subjects.AGENT_SERVICE),
            subjects.service_ping(subjects.REQUESTER_SERVICE),
        ]
    if read_logs:
        subscribe.append(subjects.log_filter())
    for bucket in kv_buckets:
        b = subjects.validate_token(bucket, "bucket")
        publish += [
            f"$KV.{b}.{a}.>",
            f"$JS.API.STREAM.INFO.KV_{b}",
            f"$JS.API.STREAM.MSG.GET.KV_{b}",
            f"$JS.API.DIRECT.GET.KV_{b}.>",
        ]
    return {
        "publish": {"allow": publish},
        "subscribe": {"allow": subscribe},
        "allow_responses": {"max": 1},
    }
