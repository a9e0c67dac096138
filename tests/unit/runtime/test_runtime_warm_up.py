"""An agent that warms up times one short completion of each model before it advertises: its first advert (and so
its first bid and lease) carries the decode rate measured on its own backend, not the configured claim. A warm-up
that fails leaves the claim standing and the agent starts all the same. The mesh file turns it on per agent
(default: on for local llama.cpp models only)."""

from __future__ import annotations

import random

import anyio
import pytest

from accord.backends.base import BackendError, BackendErrorReason, Completion, CompletionRequest, DeltaCallback
from accord.bus.memory import MemoryBroker
from accord.mesh.config import MeshConfigError, parse_mesh
from accord.protocol import subjects
from accord.protocol.messages import Advertise, Tier
from accord.runtime.agent import WARM_UP_PROMPT
from accord.security import peek
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, make_agent, sim_backend

pytestmark = pytest.mark.asyncio

CLAIMED = 1000.0
"""What the agent's profile says its model decodes at."""


class _Broken:
    """A backend whose every completion fails (the warm-up among them)."""

    name = "broken"
    model = "sim-small"
    calls = 0

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        self.calls += 1
        raise BackendError(BackendErrorReason.UNREACHABLE, "down for the warm-up", backend=self.name)

    async def aclose(self) -> None:
        return None


async def _first_advert(warm_up: bool, backend: object) -> tuple[Advertise, list[str]]:
    """Start one agent on a memory bus and return its first Advertise, with the prompts its backend was sent."""
    broker = MemoryBroker()
    pki = Pki(random.Random(3))
    prompts: list[str] = []
    complete = backend.complete  # type: ignore[attr-defined]

    async def recording(request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        prompts.append(request.messages[-1].content)
        return await complete(request, on_delta=on_delta)  # type: ignore[no-any-return]

    backend.complete = recording  # type: ignore[attr-defined]
    agent = make_agent(pki, broker.bus(), AgentSpec("w", backend=backend, tokens_per_s=CLAIMED), warm_up=warm_up)  # type: ignore[arg-type]
    adverts = await broker.bus().subscribe(subjects.advertise_filter())
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        with anyio.fail_after(10):
            msg = await adverts.__anext__()
        await agent.stop()
        tg.cancel_scope.cancel()
    advert = peek(msg.data, trust=None).message
    assert isinstance(advert, Advertise)
    return advert, prompts


async def test_the_first_advert_promises_the_rate_measured_at_start() -> None:
    slow = sim_backend(tokens_per_s=50.0, tokens_per_s_sigma=0.0)  # decodes at 50/s, whatever the profile says
    advert, prompts = await _first_advert(True, slow)
    (offer,) = advert.models
    assert 45.0 <= offer.tokens_per_s <= 55.0, offer.tokens_per_s
    assert prompts == [WARM_UP_PROMPT]  # one timed completion before the advert


async def test_without_a_warm_up_the_first_advert_is_the_claim() -> None:
    advert, prompts = await _first_advert(False, sim_backend(tokens_per_s=50.0, tokens_per_s_sigma=0.0))
    assert advert.models[0].tokens_per_s == CLAIMED and prompts == []


async def test_a_failed_warm_up_keeps_the_claim_and_the_agent_starts() -> None:
    broken = _Broken()
    advert, prompts = await _first_advert(True, broken)
    assert advert.models[0].tokens_per_s == CLAIMED
    assert broken.calls == 1 and prompts == [WARM_UP_PROMPT]


_AGENT = '[[agents]]\nname = "a"\ntier = "device"\n'


@pytest.mark.parametrize(
    ("backend", "setting", "expected"),
    [
        ('{ kind = "llamacpp" }', "", True),  # a local model: free to ask
        ('{ kind = "simulated" }', "", False),
        ('{ kind = "openai", base_url = "http://127.0.0.1:8080/v1", model = "m" }', "", False),  # may bill
        ('{ kind = "openai", base_url = "http://127.0.0.1:8080/v1", model = "m" }', "warm_up = true\n", True),
        ('{ kind = "llamacpp" }', "warm_up = false\n", False),
    ],
    ids=["llamacpp", "simulated", "openai", "openai_on", "llamacpp_off"],
)
async def test_the_mesh_file_says_who_warms_up(backend: str, setting: str, expected: bool) -> None:
    (agent,) = parse_mesh(f"{_AGENT}{setting}backend = {backend}\n").agents
    assert agent.tier is Tier.DEVICE and agent.warms_up() is expected


async def test_a_strategy_gateway_cannot_warm_up() -> None:
    text = (
        f'{_AGENT}warm_up = true\nbackend = {{ kind = "strategy", strategy = "single", budget_micros = 1000 }}\n'
    )
    with pytest.raises(MeshConfigError, match=r"agent 'a': a strategy gateway has no model .* at `\$.agents\[0\]"):
        parse_mesh(text)
