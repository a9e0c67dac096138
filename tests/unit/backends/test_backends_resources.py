"""The resource and cost model: token estimates, latency, price, device rules, advertised records."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.protocol.messages import ChatMessage, Connectivity, ModelOffer, ReasonCode, Role
from accord.protocol.pricing import (
    DevicePolicy,
    Quote,
    Refusal,
    ResourceModel,
    estimate_prompt_tokens,
    estimate_tokens,
)

CLOUD = ResourceModel(
    model="cloud-model",
    tokens_per_s=50.0,
    prefill_tokens_per_s=1000.0,
    ttft_ms=200,
    context_window=8192,
    slots=2,
    price_in_per_1k_micros=2_500,
    price_out_per_1k_micros=10_000,
    quality=0.85,
    rtt_ms=40,
)

tokens = st.integers(min_value=0, max_value=50_000)


def test_token_estimate_is_chars_over_four_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    messages = [ChatMessage(role=Role.SYSTEM, content="x" * 8), ChatMessage(role=Role.USER, content="y" * 9)]
    assert estimate_prompt_tokens(messages) == (2 + 4) + (3 + 4) + 2
    assert estimate_prompt_tokens([]) == 0


def test_latency_adds_service_network_and_queue() -> None:
    # service: 200 ms ttft + 100 prompt tokens at 1000/s (100 ms) + 50 output tokens at 50/s (1000 ms)
    assert CLOUD.service_ms(100, 50) == 1300
    assert CLOUD.network_ms(100, 50) == 40
    assert CLOUD.estimate_latency_ms(100, 50, load=0) == 1340
    assert CLOUD.estimate_latency_ms(100, 50, load=1) == 1340  # a free slot remains
    assert CLOUD.estimate_latency_ms(100, 50, load=2) == 1340 + 1300  # one wave ahead
    assert CLOUD.estimate_latency_ms(100, 50, load=4) == 1340 + 2 * 1300


def test_bandwidth_adds_transfer_time() -> None:
    slow = msgspec.structs.replace(CLOUD, bandwidth_kbps=100)
    # (100 + 50) tokens * 4 bytes + 2 * 512 bytes of frames = 1624 bytes = 12992 bits at 100 bit/ms
    assert slow.network_ms(100, 50) == 40 + 130


def test_price_is_the_sheet_rounded_up() -> None:
    assert CLOUD.price_micros(1000, 1000) == 12_500
    assert CLOUD.price_micros(1, 0) == 3  # 2.5 micros rounds up
    assert CLOUD.price_micros(0, 0) == 0


def test_battery_raises_the_price_and_low_battery_declines() -> None:
    device = ResourceModel(
        model="dev", tokens_per_s=20.0, context_window=2048, price_out_per_1k_micros=1000, battery=0.5
    )
    assert device.price_multiplier == pytest.approx(1.5)
    assert device.price_micros(0, 1000) == 1500
    assert device.replace(battery=None).price_micros(0, 1000) == 1000
    low = device.replace(battery=0.1)
    assert low.refusal(10, 10) == Refusal(reason=ReasonCode.BUSY, detail="battery_low")
    assert isinstance(low.quote(10, 10), Refusal)


def test_metered_link_charges_for_bytes_or_declines() -> None:
    device = ResourceModel(model="dev", tokens_per_s=20.0, context_window=4096, metered=True)
    # 1000 tokens * 4 bytes + 1024 bytes of frames = 5024 bytes at 5000 micros/MB -> 25.12 -> 26
    assert device.price_micros(500, 500) == 26
    assert device.replace(metered=False).price_micros(500, 500) == 0
    strict = msgspec.structs.replace(device, policy=DevicePolicy(decline_when_metered=True))
    assert strict.refusal(10, 10) == Refusal(reason=ReasonCode.BUSY, detail="metered_link")


def test_refusals_for_context_and_queue() -> None:
    assert CLOUD.refusal(8000, 500) == Refusal(reason=ReasonCode.CONTEXT_TOO_LONG, detail="context_window")
    assert CLOUD.refusal(100, 100, load=9) is None
    assert CLOUD.refusal(100, 100, load=10) == Refusal(reason=ReasonCode.BUSY, detail="queue_full")


def test_quote_prices_the_maximum_output() -> None:
    quote = CLOUD.quote(400, 256, load=0)
    assert quote == Quote(
        model="cloud-model",
        price_micros=CLOUD.price_micros(400, 256),
        est_latency_ms=CLOUD.estimate_latency_ms(400, 256),
        quality=0.85,
    )


def test_offer_and_connectivity_are_valid_protocol_records() -> None:
    device = ResourceModel(
        model="SmolLM2-135M-Instruct",
        tokens_per_s=45.0,
        context_window=2048,
        ttft_ms=20,
        price_in_per_1k_micros=10,
        price_out_per_1k_micros=20,
        metered=True,
        intermittent=True,
        rtt_ms=80,
        bandwidth_kbps=2_000,
        battery=0.0,
    )
    offer = device.offer()
    # validate against the wire types' bounds by a round trip through msgpack
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(offer), type=ModelOffer) == offer
    # battery empty: 2x the sheet; metered: + ceil(4000 bytes * 5000 / 1e6) = 20 per 1k tokens
    assert offer.price_in_per_1k_micros == 20 + 20
    assert offer.price_out_per_1k_micros == 40 + 20
    assert offer.ttft_ms == 20
    assert device.connectivity() == Connectivity(metered=True, intermittent=True, rtt_ms=80, bandwidth_kbps=2_000)


def test_from_mapping_validates_bounds() -> None:
    model = ResourceModel.from_mapping({"model": "m", "tokens_per_s": 10, "context_window": 100})
    assert model.slots == 1
    with pytest.raises(msgspec.ValidationError):
        ResourceModel.from_mapping({"model": "m", "tokens_per_s": 10, "context_window": 100, "battery": 1.5})
    with pytest.raises(msgspec.ValidationError):
        ResourceModel.from_mapping({"model": "has space", "tokens_per_s": 10, "context_window": 100})
    with pytest.raises(ValueError, match="tokens_per_s"):
        ResourceModel(model="m", tokens_per_s=0.0, context_window=100)


@given(p=tokens, o=tokens, dp=tokens, do=tokens)
def test_price_is_monotone_in_tokens(p: int, o: int, dp: int, do: int) -> None:
    assert CLOUD.price_micros(p + dp, o + do) >= CLOUD.price_micros(p, o)


@given(p=tokens, o=tokens, load=st.integers(min_value=0, max_value=1000), extra=st.integers(0, 1000))
def test_latency_is_monotone_in_load(p: int, o: int, load: int, extra: int) -> None:
    assert CLOUD.estimate_latency_ms(p, o, load + extra) >= CLOUD.estimate_latency_ms(p, o, load) > 0


@given(
    battery=st.floats(min_value=0.0, max_value=1.0),
    lower=st.floats(min_value=0.0, max_value=1.0),
    o=st.integers(min_value=0, max_value=10_000),
)
def test_less_battery_never_costs_less(battery: float, lower: float, o: int) -> None:
    device = ResourceModel(model="dev", tokens_per_s=10.0, context_window=10**6, price_out_per_1k_micros=777)
    high = device.replace(battery=max(battery, lower))
    low = device.replace(battery=min(battery, lower))
    mains = device.price_micros(0, o)
    assert low.price_micros(0, o) >= high.price_micros(0, o) >= mains
