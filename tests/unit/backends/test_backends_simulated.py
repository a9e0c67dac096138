"""The simulated backend: seeded determinism, named as a simulation, distributions, no real sleep unless asked."""

from __future__ import annotations

import statistics

import anyio
import pytest

import accord.backends.simulated as simulated_module
from accord.backends import (
    SIM_LARGE,
    SIM_SMALL,
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    Delta,
    SimProfile,
    SimulatedBackend,
)

PROMPTS = [f"question number {i}?" for i in range(20)]


async def run(backend: SimulatedBackend, prompts: list[str], model: str | None = None) -> list[Completion]:
    return [await backend.complete(CompletionRequest.from_prompt(p, model=model)) for p in prompts]


@pytest.mark.asyncio
async def test_same_seed_same_outcomes_other_seed_other_outcomes() -> None:
    a = await run(SimulatedBackend([SIM_SMALL, SIM_LARGE], seed=42), PROMPTS)
    b = await run(SimulatedBackend([SIM_SMALL, SIM_LARGE], seed=42), PROMPTS)
    c = await run(SimulatedBackend([SIM_SMALL, SIM_LARGE], seed=43), PROMPTS)
    assert a == b
    assert a != c


@pytest.mark.asyncio
async def test_outcomes_do_not_depend_on_the_order_of_requests() -> None:
    forward = await run(SimulatedBackend(seed=5), PROMPTS)
    backward = await run(SimulatedBackend(seed=5), PROMPTS[::-1])
    assert forward == backward[::-1]


@pytest.mark.asyncio
async def test_a_repeated_prompt_gets_a_fresh_draw() -> None:
    backend = SimulatedBackend(seed=1)
    first, second = await run(backend, ["same", "same"])
    assert first != second


@pytest.mark.asyncio
async def test_everything_says_simulation() -> None:
    backend = SimulatedBackend([SIM_SMALL, SIM_LARGE], seed=0)
    result = (await run(backend, ["hi"], model="sim-large"))[0]
    assert result.model == "sim-large"
    assert result.backend == "simulated"
    assert result.text.startswith("[sim-large simulated answer]")
    assert result.metadata["simulated"] is True
    with pytest.raises(ValueError, match="sim-"):
        SimProfile(model="gpt-4")


@pytest.mark.asyncio
async def test_distributions_follow_the_profile() -> None:
    profile = SimProfile(
        model="sim-test",
        quality_mean=0.7,
        quality_sd=0.1,
        ttft_ms=100,
        tokens_per_s=50,
        output_tokens=40,
        price_in_per_1k_micros=1000,
        price_out_per_1k_micros=2000,
    )
    results = await run(SimulatedBackend(profile, seed=9), [f"p{i}" for i in range(400)])
    assert statistics.mean(r.quality or 0.0 for r in results) == pytest.approx(0.7, abs=0.02)
    correct = sum(1 for r in results if r.metadata["correct"]) / len(results)
    assert correct == pytest.approx(0.7, abs=0.06)
    assert statistics.median(r.usage.output_tokens for r in results) == pytest.approx(40, rel=0.15)
    # ttft: 100 ms median plus prefill of the 7-token prompt at ten times the decode rate (14 ms)
    assert results[0].usage.input_tokens == 7
    assert statistics.median(r.timings.ttft_ms for r in results) == pytest.approx(114, rel=0.1)
    for r in results:
        sheet = -(-(r.usage.input_tokens * 1000 + r.usage.output_tokens * 2000) // 1000)
        assert r.cost_micros == sheet  # cost_sd = 0: exactly the sheet
        assert r.timings.total_ms >= r.timings.ttft_ms
        assert len(r.text.split()) == max(3, r.usage.output_tokens)
        assert r.usage_estimated


@pytest.mark.asyncio
async def test_max_tokens_caps_the_answer() -> None:
    backend = SimulatedBackend(SimProfile(model="sim-long", output_tokens=500, output_tokens_sigma=0.01), seed=0)
    result = await backend.complete(CompletionRequest.from_prompt("x", max_tokens=10))
    assert result.usage.output_tokens == 10
    assert result.finish_reason == "length"


@pytest.mark.asyncio
async def test_deltas_rebuild_the_text() -> None:
    deltas: list[Delta] = []

    async def on_delta(delta: Delta) -> None:
        deltas.append(delta)

    result = await SimulatedBackend(SIM_LARGE, seed=3).complete(
        CompletionRequest.from_prompt("essay", max_tokens=300), on_delta=on_delta
    )
    assert "".join(d.text for d in deltas) == result.text
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    assert deltas[-1].output_tokens == result.usage.output_tokens
    counts = [d.output_tokens for d in deltas]
    assert counts == sorted(counts)


@pytest.mark.asyncio
async def test_failures_context_and_unknown_models_are_typed() -> None:
    failing = SimulatedBackend(SimProfile(model="sim-bad", error_rate=1.0), seed=0)
    with pytest.raises(BackendError) as caught:
        await failing.complete(CompletionRequest.from_prompt("x"))
    assert caught.value.reason is BackendErrorReason.INTERNAL
    tiny = SimulatedBackend(SimProfile(model="sim-tiny", context_window=64), seed=0)
    with pytest.raises(BackendError) as caught:
        await tiny.complete(CompletionRequest.from_prompt("x" * 400, max_tokens=8))
    assert caught.value.reason is BackendErrorReason.CONTEXT_TOO_LONG
    with pytest.raises(BackendError) as caught:
        await tiny.complete(CompletionRequest.from_prompt("x", model="sim-other"))
    assert caught.value.reason is BackendErrorReason.NOT_FOUND


@pytest.mark.asyncio
async def test_instant_mode_never_sleeps_and_checks_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(simulated_module.anyio, "sleep", fake_sleep)
    now = 10**18
    backend = SimulatedBackend(SIM_LARGE, seed=0, clock=lambda: now)  # ttft around 400 ms
    result = await backend.complete(CompletionRequest.from_prompt("x", deadline_ns=now + 60_000_000_000))
    assert result.timings.total_ms > 0
    with pytest.raises(BackendError) as caught:
        await backend.complete(CompletionRequest.from_prompt("x", deadline_ns=now + 1_000_000))
    assert caught.value.reason is BackendErrorReason.TIMEOUT
    assert sleeps == []


@pytest.mark.asyncio
async def test_realtime_mode_sleeps_and_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    real_sleep = anyio.sleep

    async def recording_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(simulated_module.anyio, "sleep", recording_sleep)
    profile = SimProfile(model="sim-rt", ttft_ms=5, tokens_per_s=1000, output_tokens=30, output_tokens_sigma=0.01)
    deltas: list[Delta] = []

    async def on_delta(delta: Delta) -> None:
        deltas.append(delta)

    instant = await SimulatedBackend(profile, seed=4).complete(CompletionRequest.from_prompt("x"))
    real = await SimulatedBackend(profile, seed=4, realtime=True).complete(
        CompletionRequest.from_prompt("x"), on_delta=on_delta
    )
    assert real.text == instant.text  # same draw, only the waiting differs
    assert sleeps[0] == pytest.approx(instant.timings.ttft_ms / 1000)
    assert sum(sleeps) == pytest.approx((instant.timings.total_ms) / 1000, rel=0.05, abs=0.002)
    assert len(sleeps) == 1 + len(deltas)


@pytest.mark.asyncio
async def test_profiles_advertise_their_resources() -> None:
    resources = SIM_LARGE.resources(battery=None, rtt_ms=30)
    offer = resources.offer()
    assert (offer.name, offer.context_window, offer.tokens_per_s, offer.quality) == (
        SIM_LARGE.model,
        SIM_LARGE.context_window,
        SIM_LARGE.tokens_per_s,
        SIM_LARGE.quality_mean,
    )
    assert (offer.price_in_per_1k_micros, offer.price_out_per_1k_micros, offer.ttft_ms) == (
        SIM_LARGE.price_in_per_1k_micros,
        SIM_LARGE.price_out_per_1k_micros,
        round(SIM_LARGE.ttft_ms),
    )
    # a change applies to what the agent quotes: 30 ms of round trip on every latency estimate
    plain = SIM_LARGE.resources()
    assert resources.estimate_latency_ms(100, 50) == plain.estimate_latency_ms(100, 50) + 30
    assert resources.price_micros(1_000, 1_000) == plain.price_micros(1_000, 1_000) > 0
