"""The subject scheme (spec section 4): token validation, filters vs builders, permissions, parse_direct."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from accord.errors import LocalProtocolError
from accord.protocol import subjects
from accord.protocol.messages import Tier
from tests.support import hypothesis_strategies as acst

A = "U" + "A" * 55
B = "U" + "B" * 55
BAD_TOKENS = ["", "*", ">", "a.b", ".", "a b", " a", "a\n", "a\t", "\n", "a" * 65, "é", "a*", "a>", "$SYS", "a/b"]
BAD_AGENTS = [
    "",
    "U" + "A" * 54,
    "U" + "A" * 56,
    "U" + "a" * 55,
    "N" + "A" * 55,
    "U" + "1" * 55,
    A + "\n",
    "*",
    ">",
]


def nats_match(pattern: str, subject: str) -> bool:
    """NATS semantics: ``*`` matches exactly one token, ``>`` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def publish_allow(me: str) -> list[str]:
    """The publish permissions of spec section 4.4 (and 11.6): only subjects whose last token is ``me``."""
    return [
        f"accord.v1.adv.*.*.{me}",
        f"accord.v1.cfp.*.*.*.{me}",
        f"accord.v1.dm.*.{me}",
        f"accord.v1.log.*.{me}",
    ]


def test_the_matcher_itself() -> None:
    assert nats_match("a.*.c", "a.b.c") and not nats_match("a.*.c", "a.b.b.c") and not nats_match("a.*", "a")
    assert nats_match("a.>", "a.b.c") and not nats_match("a.>", "a") and nats_match("a.b", "a.b")


TOKEN_BUILDERS: dict[str, Callable[[str], object]] = {
    "validate_token": lambda t: subjects.validate_token(t),
    "advertise.region": lambda t: subjects.advertise(Tier.EDGE, t, A),
    "advertise.tier": lambda t: subjects.advertise(t, "eu", A),  # type: ignore[arg-type]
    "advertise_filter.region": lambda t: subjects.advertise_filter(Tier.EDGE, t),
    "announce.residency": lambda t: subjects.announce(Tier.EDGE, t, "chat", A),
    "announce.skill": lambda t: subjects.announce(Tier.EDGE, "eu", t, A),
    "announce.tier": lambda t: subjects.announce(t, "eu", "chat", A),  # type: ignore[arg-type]
    "announce_filter.residency": lambda t: subjects.announce_filter(Tier.EDGE, t, "chat"),
    "announce_filter.skill": lambda t: subjects.announce_filter(Tier.EDGE, "eu", t),
    "announce_filter.tier": lambda t: subjects.announce_filter(t, "eu", "chat"),
    "announce_filters.residency": lambda t: subjects.announce_filters(Tier.EDGE, [t], ["chat"]),
    "announce_filters.skill": lambda t: subjects.announce_filters(Tier.EDGE, ["eu"], [t]),
    "log.kind": lambda t: subjects.log(t, A),
    "log_filter.kind": lambda t: subjects.log_filter(t),
}
AGENT_BUILDERS: dict[str, Callable[[str], object]] = {
    "advertise": lambda a: subjects.advertise(Tier.EDGE, "eu", a),
    "announce": lambda a: subjects.announce(None, None, "chat", a),
    "direct.recipient": lambda a: subjects.direct(a, B),
    "direct.sender": lambda a: subjects.direct(A, a),
    "direct_filter": lambda a: subjects.direct_filter(a),
    "log": lambda a: subjects.log("outcome", a),
    "parse_direct.recipient": lambda a: subjects.parse_direct(f"accord.v1.dm.{a}.{B}"),
    "parse_direct.sender": lambda a: subjects.parse_direct(f"accord.v1.dm.{A}.{a}"),
}


@pytest.mark.parametrize("builder", TOKEN_BUILDERS, ids=str)
@pytest.mark.parametrize("bad", BAD_TOKENS, ids=repr)
def test_builders_refuse_bad_tokens(builder: str, bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        TOKEN_BUILDERS[builder](bad)


@pytest.mark.parametrize("builder", AGENT_BUILDERS, ids=str)
@pytest.mark.parametrize("bad", BAD_AGENTS, ids=repr)
def test_builders_refuse_bad_agent_ids(builder: str, bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        AGENT_BUILDERS[builder](bad)


@pytest.mark.parametrize("builder", TOKEN_BUILDERS, ids=str)
def test_builders_accept_good_tokens(builder: str) -> None:
    for good in ("edge" if "tier" in builder else "eu-west_1", "a" * 64 if "tier" not in builder else "cloud"):
        TOKEN_BUILDERS[builder](good)


def test_non_strings_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        subjects.validate_token(7)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        subjects.direct(A, None)  # type: ignore[arg-type]


def test_any_is_reserved_as_a_residency_class_when_announcing() -> None:
    with pytest.raises(LocalProtocolError, match="reserved"):
        subjects.announce(Tier.EDGE, "any", "chat", A)
    with pytest.raises(LocalProtocolError, match="reserved"):
        subjects.announce_filters(Tier.EDGE, ["any"], ["chat"])
    assert subjects.announce(Tier.EDGE, None, "chat", A) == f"accord.v1.cfp.edge.any.chat.{A}"
    assert subjects.announce_filter(Tier.EDGE, "any", "chat") == "accord.v1.cfp.edge.any.chat.*"  # literal


def test_exact_subjects() -> None:
    assert subjects.PREFIX == "accord.v1"
    assert subjects.advertise(Tier.DEVICE, "eu-west", A) == f"accord.v1.adv.device.eu-west.{A}"
    assert subjects.advertise_filter() == "accord.v1.adv.*.*.*"
    assert subjects.announce(None, "eu", "chat", A) == f"accord.v1.cfp.any.eu.chat.{A}"
    assert subjects.announce_filter(None, None, None) == "accord.v1.cfp.*.*.*.*"
    assert subjects.direct(A, B) == f"accord.v1.dm.{A}.{B}"
    assert subjects.direct_filter(A) == f"accord.v1.dm.{A}.*"
    assert subjects.log("outcome", A) == f"accord.v1.log.outcome.{A}"
    assert subjects.log_filter() == "accord.v1.log.*.*"


tiers = st.sampled_from(Tier)
small_tokens = st.sampled_from(["eu", "us", "apac", "chat", "code", "x-1", "any_thing"])


@settings(max_examples=100)
@given(tier=tiers, region=acst.tokens(), agent=acst.agent_ids(), other=tiers)
def test_advertise_filters_match_advertise_subjects(tier: Tier, region: str, agent: str, other: Tier) -> None:
    subject = subjects.advertise(tier, region, agent)
    assert nats_match(subjects.advertise_filter(), subject)
    assert nats_match(subjects.advertise_filter(tier), subject)
    assert nats_match(subjects.advertise_filter(tier, region), subject)
    assert nats_match(subjects.advertise_filter(other, region), subject) == (other == tier)
    assert subject.split(".")[-1] == agent


@settings(max_examples=300)
@given(
    agent_tier=tiers,
    agent_classes=st.lists(small_tokens.filter(lambda t: t != "any"), max_size=3, unique=True),
    agent_skills=st.none() | st.lists(small_tokens, min_size=1, max_size=3, unique=True),
    task_tier=st.none() | tiers,
    task_class=st.none() | small_tokens.filter(lambda t: t != "any"),
    task_skill=small_tokens,
    requester=acst.agent_ids(),
)
def test_an_agent_sees_exactly_the_announcements_meant_for_it(
    agent_tier: Tier,
    agent_classes: list[str],
    agent_skills: list[str] | None,
    task_tier: Tier | None,
    task_class: str | None,
    task_skill: str,
    requester: str,
) -> None:
    subject = subjects.announce(task_tier, task_class, task_skill, requester)
    filters = subjects.announce_filters(agent_tier, agent_classes, agent_skills)
    meant = (
        task_tier in (None, agent_tier)
        and (task_class is None or task_class in agent_classes)
        and (agent_skills is None or task_skill in agent_skills)
    )
    assert any(nats_match(f, subject) for f in filters) == meant
    assert nats_match(subjects.announce_filter(None, None, None), subject)
    assert len(filters) == len(set(filters))
    # The subscribe permission of spec 4.4 / 11.6 (P.cfp.<T>.<R>.*.*) covers every filter the agent needs.
    allowed = [f"accord.v1.cfp.{t}.{r}.*.*" for t in (agent_tier.value, "any") for r in (*agent_classes, "any")]
    assert all(any(nats_match(a, f) for a in allowed) for f in filters)


@settings(max_examples=100)
@given(recipient=acst.agent_ids(), sender=acst.agent_ids(), stranger=acst.agent_ids())
def test_direct_subjects(recipient: str, sender: str, stranger: str) -> None:
    assume(stranger != recipient)
    subject = subjects.direct(recipient, sender)
    assert subjects.parse_direct(subject) == (recipient, sender)
    assert nats_match(subjects.direct_filter(recipient), subject)
    assert not nats_match(subjects.direct_filter(stranger), subject)


@settings(max_examples=100)
@given(kind=acst.tokens(), agent=acst.agent_ids())
def test_log_subjects(kind: str, agent: str) -> None:
    subject = subjects.log(kind, agent)
    assert nats_match(subjects.log_filter(kind), subject) and nats_match(subjects.log_filter(), subject)


@settings(max_examples=100)
@given(me=acst.agent_ids(), other=acst.agent_ids(), tier=st.none() | tiers, token=acst.tokens())
def test_publish_permissions_admit_only_subjects_the_agent_publishes_as_itself(
    me: str, other: str, tier: Tier | None, token: str
) -> None:
    assume(me != other)
    allow = publish_allow(me)
    mine = [
        subjects.advertise(tier or Tier.CLOUD, token, me),
        subjects.announce(tier, None, token, me),
        subjects.direct(other, me),
        subjects.log(token, me),
    ]
    forged = [
        subjects.advertise(tier or Tier.CLOUD, token, other),
        subjects.announce(tier, None, token, other),
        subjects.direct(me, other),
        subjects.log(token, other),
    ]
    for subject in mine:
        assert any(nats_match(p, subject) for p in allow), subject
    for subject in forged:
        assert not any(nats_match(p, subject) for p in allow), subject


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "accord.v1.dm",
        f"accord.v1.dm.{A}",
        f"accord.v1.dm.{A}.{B}.x",
        f"accord.v2.dm.{A}.{B}",
        f"accord.v1.adv.{A}.{B}",
        f"other.v1.dm.{A}.{B}",
        f"accord.v1.dm.{A}.*",
    ],
)
def test_parse_direct_refuses_other_subjects(subject: str) -> None:
    with pytest.raises(LocalProtocolError):
        subjects.parse_direct(subject)
