"""The registry view: heartbeats with TTL, out-of-order and withdrawn agents, targeted shortlists."""

from __future__ import annotations

import random

import msgspec

from accord.protocol.actions import new_message_id
from accord.protocol.market import ClaimPredictor, Credentials, sheet_quote
from accord.protocol.messages import (
    MAX_SKEW_NS,
    Advertise,
    Connectivity,
    Constraints,
    Mechanism,
    ModelOffer,
    Task,
    Tier,
    Withdraw,
)
from accord.protocol.registry import Registry
from tests.support.market_world import BASE_NS, CLOUD_EU, MS, agent_id

NOW = BASE_NS
AGENTS = [agent_id(f"agent-{i}") for i in range(1_000)]
_ids = random.Random(11)


def adv(
    i: int,
    *,
    ts: int = NOW,
    seq: int = 0,
    ttl_ms: int = 1_000,
    price_out: int = 1_000,
    quality: float = 0.8,
    tier: Tier = Tier.CLOUD,
    residency: tuple[str, ...] = ("eu",),
    skills: tuple[str, ...] = ("chat",),
    load: int = 0,
    context: int = 8_000,
) -> Advertise:
    return Advertise(
        id=new_message_id(_ids),
        sender=AGENTS[i],
        ts=ts,
        name=f"a{i}",
        tier=tier,
        region="eu",
        residency=list(residency),
        skills=list(skills),
        models=[
            ModelOffer(
                name=f"m{i}",
                context_window=context,
                tokens_per_s=1_000.0,
                price_out_per_1k_micros=price_out,
                quality=quality,
            )
        ],
        slots=2,
        load=load,
        connectivity=Connectivity(rtt_ms=7),
        ttl_ms=ttl_ms,
        seq=seq,
    )


def task(*, residency: str | None = "eu", tiers: tuple[Tier, ...] = (), max_price: int = 10_000) -> Task:
    return Task(
        id="0" * 32,
        sender=agent_id("requester"),
        ts=NOW,
        task_id="1" * 32,
        prompt_digest="2" * 64,
        max_output_tokens=100,
        constraints=Constraints(
            deadline_ns=NOW + 5_000 * MS,
            max_price_micros=max_price,
            residency=residency,
            preferred_tiers=list(tiers),
        ),
    )


def trust_all(agent: str) -> Credentials:
    return CLOUD_EU


def test_entries_lapse_after_their_ttl_from_receipt() -> None:
    reg = Registry()
    assert reg.observe(adv(0, ts=NOW - 10_000 * MS), now=NOW)  # agent clock skew does not matter
    assert reg.get(AGENTS[0], now=NOW + 999 * MS) is not None
    assert reg.get(AGENTS[0], now=NOW + 1_000 * MS) is None
    assert reg.count(now=NOW + 1_000 * MS) == 0 and len(reg) == 1
    assert reg.expire(now=NOW + 1_000 * MS) == [AGENTS[0]] and len(reg) == 0
    expiring = adv(1)
    # expires_ns is on the agent's clock: it counts max_skew later (spec 9.3)
    early = msgspec.structs.replace(expiring, expires_ns=NOW + MS - MAX_SKEW_NS)
    reg.observe(early, now=NOW)
    assert reg.get(AGENTS[1], now=NOW + 2 * MS) is None


def test_out_of_order_and_duplicate_heartbeats() -> None:
    reg = Registry()
    new = adv(0, ts=NOW + 2 * MS, seq=2, price_out=2_000)
    old = adv(0, ts=NOW + MS, seq=1, price_out=1_000)
    assert reg.observe(new, now=NOW)
    assert not reg.observe(old, now=NOW)  # reordered: older in seq and ts
    assert not reg.observe(new, now=NOW)  # duplicate
    entry = reg.get(AGENTS[0], now=NOW)
    assert entry is not None and entry.advert is new
    restarted = adv(0, ts=NOW + 5 * MS, seq=0)  # the agent restarted: seq reset, clock went on
    assert reg.observe(restarted, now=NOW + 5 * MS)
    lapsed_then_old = adv(0, ts=NOW, seq=0)
    assert reg.observe(lapsed_then_old, now=NOW + 10_000 * MS)  # the entry had lapsed: anything goes


def test_withdraw_and_tombstone() -> None:
    reg = Registry()
    reg.observe(adv(0, ts=NOW), now=NOW)
    bye = Withdraw(id=new_message_id(_ids), sender=AGENTS[0], ts=NOW + MS)
    assert reg.withdraw(bye, now=NOW + MS)
    assert AGENTS[0] not in reg
    assert not reg.observe(adv(0, ts=NOW, seq=5), now=NOW + 2 * MS)  # a heartbeat from before it left
    assert reg.observe(adv(0, ts=NOW + 3 * MS), now=NOW + 3 * MS)  # it came back
    stale_bye = Withdraw(id=new_message_id(_ids), sender=AGENTS[0], ts=NOW + 2 * MS)
    assert not reg.withdraw(stale_bye, now=NOW + 4 * MS) and AGENTS[0] in reg


def test_offers_quote_price_sheets() -> None:
    reg = Registry()
    a = adv(0, price_out=3_000)
    reg.observe(a, now=NOW, digest="9" * 64)
    (o,) = reg.offers(task(), now=NOW)
    price, latency = sheet_quote(a.models[0], input_tokens=0, output_tokens=100, overhead_ms=7)
    assert (o.agent_id, o.bid_id, o.digest, o.price_micros, o.latency_ms, o.direct) == (
        AGENTS[0],
        a.id,
        "9" * 64,
        price,
        latency,
        True,
    )
    posted = Task(
        **{**{f: getattr(task(), f) for f in Task.__struct_fields__}, "mechanism": Mechanism.POSTED_PRICE}
    )
    assert reg.offers(posted, now=NOW)[0].price_micros == 10_000


def test_shortlist_keeps_the_k_best_eligible() -> None:
    reg = Registry()
    reg.observe(adv(0, price_out=100), now=NOW)
    reg.observe(adv(1, price_out=200), now=NOW)
    reg.observe(adv(2, price_out=50, residency=("us",)), now=NOW)  # wrong residency
    reg.observe(adv(3, price_out=10, tier=Tier.DEVICE), now=NOW)  # tier not preferred
    reg.observe(adv(4, price_out=10, load=2), now=NOW)  # no free slot
    reg.observe(adv(5, price_out=10, skills=("code",)), now=NOW)  # another skill
    reg.observe(adv(6, price_out=10, context=50), now=NOW)  # context too small
    reg.observe(adv(7, price_out=10), now=NOW)  # untrusted
    reg.observe(adv(8, price_out=300), now=NOW)
    shortlist = reg.shortlist(
        task(tiers=(Tier.CLOUD,)),
        now=NOW,
        k=2,
        credentials=lambda a: None if a == AGENTS[7] else CLOUD_EU,
        predictor=ClaimPredictor(),
    )
    assert shortlist == [AGENTS[0], AGENTS[1]]
    assert reg.shortlist(task(), now=NOW, k=0, credentials=trust_all, predictor=ClaimPredictor()) == []
    assert AGENTS[0] not in reg.shortlist(
        task(), now=NOW, k=9, credentials=trust_all, predictor=ClaimPredictor(), exclude={AGENTS[0]}
    )


def test_a_thousand_agent_mesh_gets_a_targeted_call() -> None:
    reg = Registry()
    for i in range(1_000):
        reg.observe(adv(i, price_out=1_000 + (i * 7919) % 5_000), now=NOW)
    shortlist = reg.shortlist(task(), now=NOW, k=8, credentials=trust_all, predictor=ClaimPredictor())
    assert len(shortlist) == 8 == len(set(shortlist))
    prices = {i: 1_000 + (i * 7919) % 5_000 for i in range(1_000)}
    cheapest = sorted(range(1_000), key=lambda i: (prices[i], AGENTS[i]))[:8]
    assert set(shortlist) == {AGENTS[i] for i in cheapest}


def test_capacity_limit() -> None:
    reg = Registry(max_agents=2)
    assert reg.observe(adv(0), now=NOW) and reg.observe(adv(1), now=NOW)
    assert not reg.observe(adv(2), now=NOW)
    assert reg.observe(adv(2), now=NOW + 2_000 * MS)  # the others lapsed and were expired to make room
