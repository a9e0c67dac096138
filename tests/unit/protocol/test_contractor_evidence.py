"""The contractor prices what it holds and the device it runs on (spec 6.7): the real prompt, battery, metered
link, queue; its advertised sheet follows the device. Pure machine, crafted events."""

from __future__ import annotations

import math
import random

from accord.protocol.actions import Action, Execute, Send
from accord.protocol.contractor import ContractorMachine, ContractorProfile
from accord.protocol.events import DeviceChanged, Received, Start
from accord.protocol.messages import (
    Advertise,
    Award,
    AwardReject,
    Bid,
    ChatMessage,
    Decline,
    Mechanism,
    Role,
    Task,
    Tier,
)
from accord.protocol.pricing import DevicePolicy, DeviceState, ResourceModel, estimate_prompt_tokens, sheet_price
from tests.support.market_world import BASE_NS, MS, agent_id, constraints

NOW = BASE_NS
REQ = agent_id("requester")
ME = agent_id("device")
PHONE = ResourceModel(
    model="phone-llm",
    tokens_per_s=50.0,
    context_window=4_096,
    price_in_per_1k_micros=1_000,
    price_out_per_1k_micros=2_000,
    quality=0.6,
    slots=1,
    policy=DevicePolicy(battery_decline_below=0.15, battery_premium=1.0, metered_micros_per_mb=5_000),
)
_ids = iter(range(10**6))


def machine(
    *, slots: int = 2, model: ResourceModel = PHONE, device: DeviceState | None = None
) -> ContractorMachine:
    profile = ContractorProfile(name="phone", tier=Tier.DEVICE, region="eu", models=(model,), slots=slots)
    m = ContractorMachine(ME, profile, rng=random.Random(1), device=device)
    m.handle(Start(), now=NOW)
    return m


def task(content: str = "hi", *, est_input_tokens: int = 0, max_price: int = 10**9, **kw: object) -> Task:
    n = next(_ids)
    return Task(
        id=f"{n:032x}",
        sender=REQ,
        ts=NOW,
        task_id=f"{n + 10**9:032x}",
        messages=[ChatMessage(role=Role.USER, content=content)],
        prompt_digest="ab" * 32,
        est_input_tokens=est_input_tokens,
        max_output_tokens=100,
        constraints=constraints(NOW, deadline_ms=600_000, max_price=max_price),
        **kw,  # type: ignore[arg-type]
    )


def sent(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, kind)]


def bid(m: ContractorMachine, t: Task, prompt_tokens: int | None = None) -> Bid:
    (b,) = sent(m.handle(Received(t, prompt_tokens=prompt_tokens), now=NOW), Bid)
    return b


def decline(m: ContractorMachine, t: Task) -> Decline:
    (d,) = sent(m.handle(Received(t), now=NOW), Decline)
    return d


def test_prices_the_prompt_it_holds_not_the_requesters_claim() -> None:
    long = "word " * 2_000  # 10,000 characters
    lied = task(long, est_input_tokens=1)
    real = estimate_prompt_tokens(lied.messages)
    assert real > 2_000
    got = bid(machine(), lied)
    assert got.price_micros == sheet_price(real, 100, 1_000, 2_000)
    assert got.price_micros > 10 * sheet_price(1, 100, 1_000, 2_000)


def test_the_shells_tokenizer_count_is_what_it_prices() -> None:
    got = bid(machine(), task("hi"), prompt_tokens=3_000)
    assert got.price_micros == sheet_price(3_000, 100, 1_000, 2_000)


def test_a_prompt_over_the_context_window_is_declined() -> None:
    assert decline(machine(), task("x" * 20_000)).reason == "context_too_long"  # ~5,000 tokens > 4,096


def test_half_a_battery_raises_the_price_by_the_documented_premium() -> None:
    mains = bid(machine(), task()).price_micros
    half = bid(machine(device=DeviceState(battery=0.5)), task()).price_micros
    assert half == math.ceil(mains * (1 + 1.0 * (1 - 0.5)))
    assert half > mains


def test_below_the_battery_floor_it_declines_with_battery_low() -> None:
    refusal = decline(machine(device=DeviceState(battery=0.1)), task())
    assert (refusal.reason, refusal.detail) == ("busy", "battery_low")


def test_a_metered_link_adds_the_per_megabyte_surcharge() -> None:
    unmetered = bid(machine(), task()).price_micros
    metered = bid(machine(device=DeviceState(metered=True)), task())
    tokens = estimate_prompt_tokens(task().messages)
    moved = (tokens + 100) * 4 + 2 * 512  # bytes of prompt and answer, and two frames
    assert metered.price_micros == unmetered + math.ceil(moved * 5_000 / 1e6)


def test_a_full_queue_declines_with_busy() -> None:
    # no free slot: the second task while the first bid holds the only slot
    m = machine(slots=1)
    bid(m, task())
    full = decline(m, task())
    assert (full.reason, full.detail) == ("busy", "no_free_slot")
    # a backend queue of zero places: one job in flight fills it, whatever the agent's slots
    no_queue = ResourceModel.from_offer(PHONE.offer())
    no_queue = ResourceModel(**{**_fields(no_queue), "policy": DevicePolicy(max_queue_per_slot=0)})
    m = machine(slots=3, model=no_queue)
    bid(m, task())
    queued = decline(m, task())
    assert (queued.reason, queued.detail) == ("busy", "queue_full")


def test_the_advertised_sheet_changes_at_once_when_the_battery_drops() -> None:
    m = machine()
    out = m.handle(DeviceChanged(DeviceState(battery=0.5)), now=NOW + 10 * MS)
    (advert,) = sent(out, Advertise)
    (offer,) = advert.models
    assert advert.battery == 0.5
    assert offer.price_out_per_1k_micros == math.ceil(2_000 * 1.5)
    # the same state again: nothing moved, no new advert
    assert sent(m.handle(DeviceChanged(DeviceState(battery=0.5)), now=NOW + 20 * MS), Advertise) == []
    # a measured decode rate rides the next heartbeat, it does not re-advertise on its own
    rates = DeviceState(battery=0.5, tokens_per_s=(("phone-llm", 20.0),))
    assert sent(m.handle(DeviceChanged(rates), now=NOW + 30 * MS), Advertise) == []
    assert m.models[0].tokens_per_s == 20.0


def _direct_award(t: Task, price: int) -> Award:
    n = next(_ids)
    return Award(
        id=f"{n:032x}",
        sender=REQ,
        ts=NOW,
        task_id=t.task_id,
        attempt=1,
        winner=ME,
        bid_id="cd" * 16,
        bid_digest="ef" * 32,
        price_micros=price,
        ack_by_ns=NOW + 100 * MS,
        lease_until_ns=NOW + 60_000 * MS,
    )


def test_a_direct_award_pays_the_sheet_for_the_prompt_it_holds() -> None:
    lied = task("word " * 500, est_input_tokens=1, mechanism=Mechanism.DIRECT, bid_window_ms=0)
    floor = sheet_price(estimate_prompt_tokens(lied.messages), 100, 1_000, 2_000)
    claimed = sheet_price(1, 100, 1_000, 2_000)  # what the requester's claim would pay
    m = machine()
    assert sent(m.handle(Received(lied), now=NOW), Bid) == []  # offered, no bid
    (reject,) = sent(m.handle(Received(_direct_award(lied, claimed)), now=NOW), AwardReject)
    assert reject.reason == "over_budget"
    m = machine()
    m.handle(Received(lied), now=NOW)
    assert any(isinstance(a, Execute) for a in m.handle(Received(_direct_award(lied, floor)), now=NOW))


def _fields(model: ResourceModel) -> dict[str, object]:
    return {f: getattr(model, f) for f in model.__struct_fields__}
