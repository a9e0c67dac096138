"""Bounded state in the pure core under floods (issue 15, spec 11.9): the contractor's jobs, the requester's bids
and the registry each take ``ACCORD_FLOOD_N`` (10^5) hostile inputs, hold no more than their bounds, and their
memory stays flat (tracemalloc peak under a bound derived from the limit). Each flood prints one line
(tests/support/flood.py). The shells' structures (bid frames, outbox, timers) are flooded in
tests/unit/runtime/test_flood_shells.py, the replay guard in tests/unit/security/test_flood_security.py.

The floods come from senders the receiver trusts (their keys hold certificates): a frame from an unknown key never
reaches these structures (it is refused before its payload is decoded, tests/unit/security).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import msgspec
import pytest

from accord.protocol.actions import Action, Reject, RejectReason, Send, new_message_id
from accord.protocol.codec import encode
from accord.protocol.contractor import ContractorMachine, ContractorProfile, JobState
from accord.protocol.digests import payload_digest
from accord.protocol.events import Received, Start, TimerFired, TimerKind
from accord.protocol.messages import (
    Advertise,
    Award,
    Bid,
    Cancel,
    ChatMessage,
    Mechanism,
    ModelOffer,
    Role,
    Task,
    Tier,
    Withdraw,
)
from accord.protocol.pricing import ResourceModel
from accord.protocol.registry import Registry
from accord.protocol.requester import RequesterConfig, RequesterMachine, TaskSpec
from tests.support.flood import FLOOD_N, KIB, MIB, bid, flood
from tests.support.market_world import BASE_NS, CLOUD_EU, MS, agent_id, constraints

NOW = BASE_NS
WEEK_MS = 7 * 24 * 3600 * 1000
ME = agent_id("contractor")
HOSTILE = agent_id("hostile-requester")
HONEST = agent_id("honest")

_SHEET = ModelOffer(
    name="big", context_window=1_000_000, tokens_per_s=100_000.0, price_out_per_1k_micros=1, quality=0.7, ttft_ms=1
)
PROFILE = ContractorProfile(
    name="flooded",
    tier=Tier.CLOUD,
    region="eu",
    residency=("eu",),
    models=(ResourceModel.from_offer(_SHEET, slots=4),),
    slots=4,
)


def _senders(n: int) -> list[str]:
    """``n`` distinct well-formed agent ids, cheaply (the flood varies ids, not keys)."""
    return [f"U{i:055d}" for i in range(n)]


# --- the contractor's jobs (D4) ----------------------------------------------------------------------------------
def _contractor(profile: ContractorProfile = PROFILE) -> ContractorMachine:
    m = ContractorMachine(ME, profile, rng=random.Random(1))
    m.handle(Start(), now=NOW)
    return m


def _task_template(mechanism: Mechanism) -> Task:
    """A Task any agent would like: a week to its deadline (the attacker's choice), a generous budget."""
    spec = TaskSpec(
        constraints=constraints(NOW, deadline_ms=WEEK_MS, max_price=10**9),
        mechanism=mechanism,
        bid_window_ms=0 if mechanism is Mechanism.DIRECT else 1_000,
        max_output_tokens=16,
    )
    return spec.to_task(sender=HOSTILE, task_id="0" * 32, ts=NOW)


def _task_flood(
    m: ContractorMachine, template: Task, senders: list[str], prompt_chars: int, *, broadcast: bool
) -> tuple[Counter[str], Callable[[int], None]]:
    """A feed of Tasks, each with its own prompt of ``prompt_chars`` characters (a fresh allocation, as a decoded
    frame's is), from the senders in turn; counts the limits the machine reports."""
    filler = "p" * prompt_chars
    limited: Counter[str] = Counter()

    def feed(i: int) -> None:
        tid = f"{i:032x}"
        prompt = [ChatMessage(role=Role.USER, content=filler[:-32] + tid)]
        task = msgspec.structs.replace(
            template, id=tid, task_id=tid, sender=senders[i % len(senders)], messages=prompt
        )
        for action in m.handle(Received(task, broadcast=broadcast), now=NOW):
            if isinstance(action, Reject) and action.reason is RejectReason.TOO_MANY:
                limited[action.detail] += 1

    return limited, feed


def test_d4_agent_holds_at_most_its_per_requester_prompt_bytes_under_5000_tasks_of_50kb(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """D4: 5,000 Tasks with 50 KB prompts from one requester used to keep +260 MB until their deadline (a week,
    chosen by the attacker). Now bids hold a slot (4), direct offers hold their prompts up to the requester's
    quota (16 MiB), finished jobs drop their prompt, and nothing else is kept."""
    m = _contractor()
    limited, feed = _task_flood(m, _task_template(Mechanism.DIRECT), [HOSTILE], 50_000, broadcast=False)
    name = "agent prompt bytes, one requester (D4: 5,000 Tasks of 50 KB)"
    result = flood(name, 5_000, feed, lambda: m.prompt_bytes_held, capsys)
    m.check_invariants()
    cap = PROFILE.max_prompt_bytes_per_requester
    assert 0 < result.held <= cap
    assert limited["requester_bytes"] > 0
    assert m.jobs_held <= PROFILE.max_jobs_per_requester
    assert result.peak_bytes < cap + 8 * MIB  # 5,000 x 50 KB = 250 MB went through


def test_d4_agent_holds_at_most_its_total_prompt_bytes_under_tasks_of_16kb_from_as_many_requesters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """D4, the other half: Tasks from as many requesters as Tasks, so that no requester's quota binds. The total
    (``max_prompt_bytes``, 64 MiB) does; the records of the Tasks refused beyond it hold nothing and make room
    for each other."""
    m = _contractor()
    n = max(1, FLOOD_N // 10)  # 16 KB each: 1.6 GB went through at the default N
    limited, feed = _task_flood(m, _task_template(Mechanism.DIRECT), _senders(n), 16 * 1024, broadcast=True)
    name = f"agent prompt bytes, as many requesters ({n:,} Tasks of 16 KB)"
    result = flood(name, n, feed, lambda: m.prompt_bytes_held, capsys)
    m.check_invariants()
    assert 0 < result.held <= PROFILE.max_prompt_bytes
    assert limited["prompt_bytes"] > 0 or n * 16 * 1024 <= PROFILE.max_prompt_bytes
    assert m.jobs_held <= PROFILE.max_jobs
    assert result.peak_bytes < PROFILE.max_prompt_bytes + PROFILE.max_jobs * 4 * KIB


def test_agent_jobs_stay_bounded_under_a_flood_of_tasks_from_one_requester(
    capsys: pytest.CaptureFixture[str],
) -> None:
    m = _contractor()
    limited, feed = _task_flood(m, _task_template(Mechanism.DIRECT), [HOSTILE], 1_024, broadcast=False)
    result = flood("agent jobs, one requester", FLOOD_N, feed, lambda: m.jobs_held, capsys)
    m.check_invariants()
    assert result.held <= PROFILE.max_jobs_per_requester
    assert limited["requester_jobs"] >= FLOOD_N - PROFILE.max_jobs_per_requester
    assert result.peak_bytes < PROFILE.max_jobs_per_requester * 8 * KIB


def test_agent_jobs_stay_bounded_under_a_flood_of_tasks_from_as_many_requesters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every Task from another requester: the per-requester bounds never bind, ``max_jobs`` does. Open offers are
    never forgotten to make room, so the Tasks beyond it are refused and leave no record."""
    m = _contractor()
    limited, feed = _task_flood(m, _task_template(Mechanism.DIRECT), _senders(FLOOD_N), 1_024, broadcast=True)
    result = flood("agent jobs, as many requesters", FLOOD_N, feed, lambda: m.jobs_held, capsys)
    m.check_invariants()
    assert result.held == min(FLOOD_N, PROFILE.max_jobs)
    assert limited["max_jobs"] == max(0, FLOOD_N - PROFILE.max_jobs)
    assert result.peak_bytes < PROFILE.max_jobs * 4 * KIB


def test_records_that_hold_nothing_make_room_and_an_honest_running_job_is_never_forgotten() -> None:
    """At ``max_jobs``, a finished record is forgotten for a new one; a running job never is."""
    profile = msgspec.structs.replace(PROFILE, max_jobs=8, slots=1)
    m = _contractor(profile)
    honest = msgspec.structs.replace(
        _task_template(Mechanism.FIRST_PRICE), sender=HONEST, id="a" * 32, task_id="a" * 32
    )
    (bid_send, _) = m.handle(Received(honest, broadcast=True), now=NOW)
    assert isinstance(bid_send, Send) and isinstance(bid_send.message, Bid)
    bid = bid_send.message
    award = Award(
        id=new_message_id(random.Random(2)),
        sender=HONEST,
        ts=NOW,
        task_id=honest.task_id,
        attempt=1,
        winner=ME,
        bid_id=bid.id,
        bid_digest=payload_digest(encode(bid)),
        price_micros=bid.price_micros,
        ack_by_ns=NOW + 1_000 * MS,
        lease_until_ns=NOW + 60_000 * MS,
    )
    m.handle(Received(award), now=NOW)
    _, feed = _task_flood(m, _task_template(Mechanism.FIRST_PRICE), _senders(50), 64, broadcast=True)
    for i in range(1_000):
        feed(i)
        m.check_invariants()
    assert m.job_state(honest.task_id) is JobState.RUNNING
    assert m.jobs_held == profile.max_jobs
    m.handle(TimerFired(TimerKind.LEASE, honest.task_id), now=NOW + 66_000 * MS)  # done: it holds nothing now
    assert m.job_state(honest.task_id) is JobState.DONE
    for i in range(1_000, 2_000):
        feed(i)
        m.check_invariants()
    assert m.job_state(honest.task_id) is JobState.NONE, "finished: forgotten like any record that holds nothing"


def test_one_busy_requester_is_not_throttled_by_the_records_of_tasks_that_ended() -> None:
    """A requester with more tasks in a deadline than its share of records (a gateway, a bench): each task is
    bid on, lost or won, and ended by the requester's Cancel or by the work being done; the records of ended
    tasks make room, so its 3,000th task is bid on like its first (it was declined ``requester_jobs`` at 1,000)."""
    profile = msgspec.structs.replace(PROFILE, max_jobs_per_requester=100, max_jobs=1_000)
    m = _contractor(profile)
    template = _task_template(Mechanism.FIRST_PRICE)
    for i in range(3_000):
        t = msgspec.structs.replace(template, sender=HONEST, id=f"{i:032x}", task_id=f"{i:032x}")
        out = m.handle(Received(t, broadcast=True), now=NOW)
        assert any(isinstance(a, Send) and isinstance(a.message, Bid) for a in out), (i, out)
        m.handle(Received(Cancel(id=f"{i + 10**6:032x}", sender=HONEST, ts=NOW, task_id=t.task_id)), now=NOW)
        m.check_invariants()
    assert m.jobs_held <= profile.max_jobs_per_requester


# --- the requester's bids (D5, D8) -------------------------------------------------------------------------------
def _requester(config: RequesterConfig | None = None) -> RequesterMachine:
    spec = TaskSpec(constraints=constraints(NOW, deadline_ms=60_000, max_price=10_000), bid_window_ms=30_000)
    m = RequesterMachine(
        agent_id("requester"),
        spec,
        rng=random.Random(1),
        credentials=lambda agent: CLOUD_EU,
        verify_bid=lambda bid_id, digest: True,
        config=config,
    )
    m.handle(Start(), now=NOW)
    return m


def _bid(m: RequesterMachine, sender: str, bid_id: str, price: int = 1_000) -> Bid:
    return bid(m.task_id, sender, now=NOW, bid_id=bid_id, price=price)


@pytest.mark.parametrize("senders", [1, FLOOD_N], ids=["one sender", "as many senders"])
def test_requester_bids_stay_bounded_under_a_flood_of_bids(
    senders: int, capsys: pytest.CaptureFixture[str]
) -> None:
    m = _requester()
    cfg = m.config
    ids = _senders(senders)
    template = _bid(m, ids[0], "0" * 32)

    def feed(i: int) -> None:
        bid = msgspec.structs.replace(template, id=f"{i:032x}", sender=ids[i % senders])
        m.handle(Received(bid, digest=f"{i:064x}", size=400), now=NOW)

    name = f"requester bids, {'one sender' if senders == 1 else 'as many senders'}"
    result = flood(name, FLOOD_N, feed, lambda: m.bids_held, capsys)
    m.check_invariants()
    assert result.held == (cfg.max_bids_per_sender if senders == 1 else cfg.max_bids)
    assert result.peak_bytes < cfg.max_bids * 2 * KIB


def test_d5_a_requester_refuses_4000_bids_of_64kb_in_one_task() -> None:
    """D5 (the machine's half; the frames are the shell's, tests/unit/runtime/test_flood_shells.py): a bid larger
    than ``max_bid_bytes`` is refused before it is recorded."""
    m = _requester()
    ids = _senders(40)
    for i in range(4_000):
        out = m.handle(Received(_bid(m, ids[i % 40], f"{i:032x}"), size=64 * 1024), now=NOW)
        assert [(a.reason, a.detail) for a in out if isinstance(a, Reject)] == [
            (RejectReason.TOO_MANY, "bid_bytes")
        ]
    assert m.bids_held == 0


def test_d8_one_sender_with_1100_bid_ids_cannot_crowd_out_an_honest_agent_that_bids_later() -> None:
    """D8: ``max_bids`` counted bids by id, so one sender's 1,100 bids filled it and an honest agent that bid later
    was refused (``no_eligible_bids``). A sender now holds at most ``max_bids_per_sender`` (or its advertised
    slots, if fewer): the honest bid is recorded and wins (the hostile bids are over budget here)."""
    registry = Registry()
    m = _requester()
    m.registry = registry
    flooder = agent_id("flooder")
    card = msgspec.structs.replace(_card(flooder, 0), slots=2_000)  # it may claim any slots: the cap holds
    registry.observe(card, now=NOW)
    for i in range(1_100):
        m.handle(Received(_bid(m, flooder, f"{i:032x}", price=1_000_000), size=400), now=NOW)
    assert m.bids_held == m.config.max_bids_per_sender
    honest = _bid(m, HONEST, "e" * 32)
    out = m.handle(Received(honest, size=400), now=NOW + MS)
    assert not any(isinstance(a, Reject) for a in out) and m.has_bid(honest.id)
    out: list[Action] = m.handle(TimerFired(TimerKind.BID_WINDOW, m.task_id), now=NOW + 30_000 * MS)
    awards = [a.message for a in out if isinstance(a, Send) and isinstance(a.message, Award)]
    assert [a.winner for a in awards] == [HONEST]


# --- the registry ------------------------------------------------------------------------------------------------
def _card(sender: str, i: int) -> Advertise:
    return Advertise(
        id=f"{i:032x}",
        sender=sender,
        ts=NOW + i,
        seq=i,
        name="agent",
        tier=Tier.CLOUD,
        region="eu",
        residency=["eu"],
        models=[_SHEET],
        slots=4,
        ttl_ms=60_000,
    )


def test_registry_stays_bounded_under_a_flood_of_cards_and_never_evicts_a_live_agent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg = Registry()
    assert reg.observe(_card(HONEST, 0), now=NOW)
    senders = _senders(FLOOD_N)
    template = _card(senders[0], 1)

    def feed(i: int) -> None:
        reg.observe(msgspec.structs.replace(template, id=f"{i:032x}", sender=senders[i]), now=NOW + i)

    result = flood("registry, as many senders", FLOOD_N, feed, lambda: len(reg), capsys)
    assert result.held == reg.max_agents and HONEST in reg
    assert reg.refused == FLOOD_N - (reg.max_agents - 1)
    assert result.peak_bytes < reg.max_agents * 4 * KIB


def test_registry_keeps_one_card_per_sender_and_bounded_tombstones(capsys: pytest.CaptureFixture[str]) -> None:
    reg = Registry()
    template = _card(HOSTILE, 0)

    def feed(i: int) -> None:
        reg.observe(msgspec.structs.replace(template, id=f"{i:032x}", ts=NOW + i, seq=i), now=NOW + i)

    result = flood("registry, one sender", FLOOD_N, feed, lambda: len(reg), capsys)
    assert result.held == 1 and reg.get(HOSTILE, now=NOW + FLOOD_N).advert.seq == FLOOD_N - 1  # type: ignore[union-attr]
    assert result.peak_bytes < 64 * KIB
    senders = _senders(FLOOD_N)
    for i, sender in enumerate(senders):
        reg.withdraw(Withdraw(id=f"{i:032x}", sender=sender, ts=NOW + i), now=NOW + i)
    assert reg.tombstones == reg.max_agents
