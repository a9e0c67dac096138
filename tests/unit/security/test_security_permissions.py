"""The per-agent NATS permission template (spec 11.6): an agent publishes only as itself, reads only its inbox."""

from __future__ import annotations

import pytest

from accord.bus import subject_matches
from accord.errors import LocalProtocolError
from accord.protocol import subjects
from accord.protocol.messages import Tier
from accord.security import agent_permissions, inbox_prefix, kv_award_key

A = "U" + "A" * 55
B = "U" + "B" * 55


def _allowed(perms: dict[str, object], op: str, subject: str) -> bool:
    allow = perms[op]["allow"]  # type: ignore[index]
    return any(subject_matches(p, subject) for p in allow)


def test_agent_may_publish_exactly_as_itself() -> None:
    pa, pb = agent_permissions(A), agent_permissions(B)
    own = [
        subjects.advertise(Tier.CLOUD, "eu", A),
        subjects.announce(Tier.EDGE, "eu-gdpr", "chat", A),
        subjects.announce(None, None, "chat", A),
        subjects.direct(B, A),
        subjects.log("outcome", A),
    ]
    for s in own:
        assert _allowed(pa, "publish", s), s
        assert not _allowed(pb, "publish", s), s
    assert not _allowed(pa, "publish", subjects.direct(A, B)), "cannot speak as B in A's own inbox"
    assert not _allowed(pa, "publish", "$JS.API.STREAM.DELETE.X")
    assert pa["allow_responses"] == {"max": 1}


def test_agent_subscribes_to_its_inbox_and_replies_only() -> None:
    pa = agent_permissions(A)
    assert _allowed(pa, "subscribe", subjects.direct_filter(A))
    assert not _allowed(pa, "subscribe", subjects.direct(B, A)), "B's inbox is B's"
    assert _allowed(pa, "subscribe", f"{inbox_prefix(A)}.xyz.1")
    assert not _allowed(pa, "subscribe", f"{inbox_prefix(B)}.xyz.1")
    assert not any(p.startswith("_INBOX.>") or p == ">" for p in pa["subscribe"]["allow"])
    assert _allowed(pa, "subscribe", subjects.advertise(Tier.DEVICE, "us", B))
    assert not _allowed(pa, "subscribe", subjects.log("outcome", B))
    assert _allowed(agent_permissions(A, read_logs=True), "subscribe", subjects.log("outcome", B))


def test_calls_for_proposals_can_be_narrowed_by_tier_and_residency() -> None:
    pa = agent_permissions(A, tier=Tier.EDGE, residencies=["eu-gdpr"])
    sees = lambda s: _allowed(pa, "subscribe", s)  # noqa: E731
    assert sees(subjects.announce(Tier.EDGE, "eu-gdpr", "chat", B))
    assert sees(subjects.announce(None, None, "chat", B))
    assert sees(subjects.announce(Tier.EDGE, None, "code", B))
    assert not sees(subjects.announce(Tier.CLOUD, "eu-gdpr", "chat", B))
    assert not sees(subjects.announce(Tier.EDGE, "us-hipaa", "chat", B))
    assert _allowed(agent_permissions(A), "subscribe", subjects.announce(Tier.CLOUD, "us", "x", B))
    narrow = agent_permissions(A, tier=Tier.EDGE, residencies=[], skills=["chat"])
    assert _allowed(narrow, "subscribe", subjects.announce(Tier.EDGE, None, "chat", B))
    assert not _allowed(narrow, "subscribe", subjects.announce(Tier.EDGE, None, "code", B))


def test_kv_permissions_confine_writes_to_own_keys() -> None:
    pa = agent_permissions(A, kv_buckets=["awards"])
    assert _allowed(pa, "publish", f"$KV.awards.{kv_award_key(A, 'a' * 32)}")
    assert not _allowed(pa, "publish", f"$KV.awards.{kv_award_key(B, 'a' * 32)}")
    assert _allowed(pa, "publish", "$JS.API.STREAM.INFO.KV_awards")


def test_template_refuses_bad_ids() -> None:
    for bad in ("*", ">", "U" + "a" * 55, "x.y"):
        with pytest.raises(LocalProtocolError):
            agent_permissions(bad)
    with pytest.raises(LocalProtocolError):
        agent_permissions(A, tier=Tier.EDGE, residencies=["eu.*"])
    with pytest.raises(ValueError):
        agent_permissions(A, residencies=["eu"])
