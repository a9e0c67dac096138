"""A strategy as a task handler: a gateway agent answers awarded tasks by running an ensemble over the mesh."""

from __future__ import annotations

import random

import anyio
import pytest

from accord.backends.base import Completion, CompletionRequest, DeltaCallback
from accord.bus.memory import MemoryBroker
from accord.protocol.messages import Tier, Timings, Usage
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester, TaskFailed
from accord.security.testing import Pki
from accord.strategies import Ensemble, StrategyBackend
from tests.support.runtime_kit import AgentSpec, make_agent, make_profile, spec, wait_registry

pytestmark = pytest.mark.asyncio


class _Fixed:
    """Answers every request with one text and counts the requests."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    name = "fixed"
    model = "sim-small"

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        self.calls += 1
        return Completion(text=self.text, model=self.model, usage=Usage(output_tokens=3), timings=Timings())

    async def aclose(self) -> None:
        return None


async def _run_gateway(budget_micros: int) -> tuple[str | TaskFailed, list[_Fixed], str, int]:
    broker, pki = MemoryBroker(seed=1), Pki(random.Random(1))
    backends = [_Fixed(t) for t in ("The answer is 42", "42.", "41")]
    workers = [
        make_agent(pki, broker.bus(), AgentSpec(f"w{i}", price=100, backend=b, tier=Tier.DEVICE, slots=8))
        for i, b in enumerate(backends)
    ]
    inner = Requester(pki.agent("gw-requester"), bus=broker.bus(), trust=pki.trust, rng=random.Random(3))
    strategy = Ensemble(k=3, tiers=(Tier.DEVICE,))
    backend = StrategyBackend(inner, strategy, budget_micros=budget_micros, form="math")
    profile = make_profile("gw", tier=Tier.EDGE, ttft_ms=2000, price_out_per_1k_micros=5000)
    gateway = Agent(
        pki.agent("gw", tier=Tier.EDGE, region="local"), profile, {"sim-small": backend}, bus=broker.bus(),
        trust=pki.trust,
    )  # fmt: skip
    requester = Requester(pki.agent("req"), bus=broker.bus(), trust=pki.trust, rng=random.Random(7))
    answer: str | TaskFailed
    async with anyio.create_task_group() as tg:
        for part in (requester, inner, *workers, gateway):
            await tg.start(part.run)
        await wait_registry(requester, [gateway])
        await wait_registry(inner, workers)
        try:
            outcome = await requester.submit(spec("What is 6*7?", preferred_tiers=[Tier.EDGE]))
            answer = outcome.answer
            assert outcome.agent_id == gateway.id
            assert outcome.attestation.output_checked
        except TaskFailed as exc:
            answer = exc
        tg.cancel_scope.cancel()
    return answer, backends, gateway.id, inner.stats.spent_micros


async def test_gateway_answers_with_the_majority_of_three_distinct_workers() -> None:
    answer, backends, _, spent = await _run_gateway(budget_micros=5_000)
    assert answer in {"The answer is 42", "42."}  # they vote together; "41" loses
    assert [b.calls for b in backends] == [1, 1, 1]  # three different agents, one task each
    assert 0 < spent <= 5_000


async def test_gateway_with_no_budget_fails_the_task_with_a_backend_error() -> None:
    answer, backends, _, spent = await _run_gateway(budget_micros=0)
    assert isinstance(answer, TaskFailed)
    assert answer.reason.value in {"backend_error", "attempts_exhausted"}
    assert sum(b.calls for b in backends) == 0 and spent == 0
