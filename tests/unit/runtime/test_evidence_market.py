"""The evidence market through the shells (MemoryBus, one process): certificates decide, agents price their device
and the prompt they hold, leases follow promises, reputation persists in the outcome store, traces export."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from accord.backends.base import Backend
from accord.bus.base import PayloadTooLargeError
from accord.bus.memory import MemoryBroker
from accord.errors import AccordError
from accord.protocol import subjects
from accord.protocol.market import Offer
from accord.protocol.messages import (
    Award,
    Bid,
    ChatMessage,
    Constraints,
    Policy,
    Privacy,
    ReasonCode,
    Role,
    Task,
    Tier,
)
from accord.protocol.pricing import DeviceState, estimate_prompt_tokens, sheet_price
from accord.protocol.requester import RequesterConfig, TaskSpec
from accord.routing.base import LearningPredictor
from accord.routing.records import Outcome
from accord.routing.store import OutcomeStore
from accord.routing.traces import TraceFormat, trace_rows
from accord.runtime.agent import Agent
from accord.runtime.device import FixedProbe
from accord.runtime.requester import Requester, TaskFailed, TaskOutcome
from accord.security import peek, seal
from accord.security.testing import Pki
from tests.support.runtime_kit import BlockingBackend, make_profile, sim_backend, wait_for, wait_registry

pytestmark = pytest.mark.asyncio


class Mesh:
    """A broker, a PKI (every agent certified as its profile says unless told otherwise), agents."""

    def __init__(self, seed: int = 1) -> None:
        self.broker = MemoryBroker(seed=seed)
        self.pki = Pki(random.Random(seed))
        self.agents: list[Agent] = []

    def agent(
        self,
        name: str,
        *,
        tier: Tier = Tier.CLOUD,
        backend: Backend | None = None,
        probe: FixedProbe | None = None,
        **profile: object,
    ) -> Agent:
        identity = self.pki.agent(name, tier=tier, region="local", privacy=tuple(Privacy))
        agent = Agent(
            identity,
            make_profile(name, tier=tier, privacy=tuple(Privacy), **profile),  # type: ignore[arg-type]
            {"sim-small": backend if backend is not None else sim_backend(seed=len(name))},
            bus=self.broker.bus(),
            trust=self.pki.trust,
            rng=random.Random(name),
            probe=probe,
        )
        self.agents.append(agent)
        return agent

    def requester(self, name: str = "req", **kw: object) -> Requester:
        return Requester(
            self.pki.agent(name), bus=self.broker.bus(), trust=self.pki.trust, rng=random.Random(name), **kw
        )  # type: ignore[arg-type]


def ask(content: str = "What is 2+2?", *, deadline_ms: int = 10_000, **constraints: object) -> TaskSpec:
    return TaskSpec(
        messages=[ChatMessage(role=Role.USER, content=content)],
        constraints=Constraints(
            deadline_ns=time.time_ns() + deadline_ms * 1_000_000,
            max_price_micros=1_000_000,
            **constraints,  # type: ignore[arg-type]
        ),
        max_output_tokens=32,
        policy=Policy(lambda_price=1.0, mu_latency=0.01),
    )


async def _running(mesh: Mesh, requester: Requester, tg: anyio.abc.TaskGroup, agents: Sequence[Agent]) -> None:
    await tg.start(requester.run)
    for a in agents:
        await tg.start(a.run)
    await wait_registry(requester, agents)


# --- certificates decide -----------------------------------------------------------------------------------------
async def test_an_agent_whose_profile_contradicts_its_certificate_does_not_start() -> None:
    mesh = Mesh()
    identity = mesh.pki.agent("liar", tier=Tier.CLOUD, region="local")
    with pytest.raises(AccordError, match="contradicts its certificate"):
        Agent(
            identity,
            make_profile("liar", tier=Tier.DEVICE),
            {"sim-small": sim_backend()},
            bus=mesh.broker.bus(),
            trust=mesh.pki.trust,
        )


async def test_a_tier_lie_on_the_wire_never_wins_a_device_only_task() -> None:
    """A cloud-certified key bids as a device, far cheaper than the honest device: the device answers."""
    mesh = Mesh()
    device = mesh.agent("phone", tier=Tier.DEVICE, price_out_per_1k_micros=500)
    liar = mesh.pki.agent("cloud-liar", tier=Tier.CLOUD, region="local", privacy=tuple(Privacy))
    requester = mesh.requester(config=RequesterConfig(shortlist_k=0))  # calls for proposals are broadcast
    liar_bus = mesh.broker.bus()
    cfps = await liar_bus.subscribe(f"{subjects.PREFIX}.cfp.>")
    results: list[TaskOutcome] = []
    async with anyio.create_task_group() as tg:
        await _running(mesh, requester, tg, [device])

        async def lie() -> None:
            async for msg in cfps:
                announced = peek(msg.data, trust=None).message
                bid = Bid(
                    id=f"{random.getrandbits(128):032x}",
                    sender=liar.id,
                    ts=time.time_ns(),
                    task_id=announced.task_id,  # type: ignore[attr-defined]
                    model="sim-small",
                    price_micros=0,
                    est_latency_ms=1,
                    quality=1.0,
                    valid_until_ns=time.time_ns() + 5_000_000_000,
                    tier=Tier.DEVICE,
                    region="local",
                )
                await liar_bus.publish(subjects.direct(announced.sender, liar.id), seal(bid, liar))

        tg.start_soon(lie)
        for _ in range(3):
            spec = ask(preferred_tiers=[Tier.DEVICE], privacy=Privacy.CONFIDENTIAL)
            results.append(await requester.submit(spec))
        tg.cancel_scope.cancel()
    assert [r.agent_id for r in results] == [device.id] * 3
    assert requester.stats.rejected["ineligible"] >= 1


# --- agents quote from evidence ----------------------------------------------------------------------------------
async def test_agents_bid_on_the_real_prompt_and_their_battery() -> None:
    mesh = Mesh()
    probe = FixedProbe(DeviceState(battery=0.5))
    phone = mesh.agent("phone", tier=Tier.DEVICE, price_out_per_1k_micros=1_000, probe=probe)
    requester = mesh.requester()
    prices: list[int] = []
    long = "word " * 400

    def observe(task_id: str, action: object, now: int) -> None:
        message = getattr(action, "message", None)
        if isinstance(message, Award):
            prices.append(message.price_micros)

    requester.observer = observe
    async with anyio.create_task_group() as tg:
        await _running(mesh, requester, tg, [phone])
        lied = TaskSpec(**{**_fields(ask(long)), "est_input_tokens": 1})
        await requester.submit(lied)
        probe.state = DeviceState(battery=1.0)
        await phone.resample()  # the card follows the battery at once
        await wait_for(lambda: requester.registry.get(phone.id, now=time.time_ns()).advert.battery == 1.0)  # type: ignore[union-attr]
        await requester.submit(lied)
        tg.cancel_scope.cancel()
    tokens = estimate_prompt_tokens([ChatMessage(role=Role.SYSTEM, content=phone.system_prompt), *lied.messages])
    base = sheet_price(estimate_prompt_tokens(lied.messages), 32, 0, 1_000)
    assert prices[1] >= base > 0  # the real prompt, not the requester's one token
    assert prices[0] == pytest.approx(prices[1] * 1.5, abs=1)  # half a battery: 1 + 1.0 * (1 - 0.5)
    assert tokens > 400


class CountingBackend(BlockingBackend):
    """A backend with a tokenizer that says the prompt is long (the agent must believe it, not the estimate)."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.counted = 0
        self.release.set()

    async def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        self.counted += 1
        return self.tokens


async def test_the_backends_tokenizer_count_is_what_the_bid_prices() -> None:
    mesh = Mesh()
    counting = CountingBackend(tokens=5_000)
    agent = mesh.agent("counted", backend=counting, price_out_per_1k_micros=0)
    requester = mesh.requester()
    async with anyio.create_task_group() as tg:
        await _running(mesh, requester, tg, [agent])
        outcome = await requester.submit(ask("short"))
        tg.cancel_scope.cancel()
    assert counting.counted >= 1
    sheet = agent.profile.models[0]
    assert outcome.price_micros == sheet_price(5_000, 32, sheet.price_in_per_1k_micros, 0)


async def test_a_prompt_no_agent_could_take_fails_locally_before_anything_is_published() -> None:
    mesh = Mesh()
    agent = mesh.agent("small-context")  # 8k context
    requester = mesh.requester()
    sniffer = await mesh.broker.bus().subscribe(f"{subjects.PREFIX}.cfp.>")
    async with anyio.create_task_group() as tg:
        await _running(mesh, requester, tg, [agent])
        with pytest.raises(TaskFailed) as too_long:
            await requester.submit(ask("word " * 40_000))  # ~50k tokens
        with pytest.raises(PayloadTooLargeError):  # over a frame: refused before anything is built
            await requester.submit(ask("x" * 2_000_000))
        tg.cancel_scope.cancel()
    assert (
        too_long.value.reason is ReasonCode.CONTEXT_TOO_LONG and "largest context window" in too_long.value.detail
    )
    assert sniffer.pending == 0  # no call for proposals went out


# --- leases and reputation ---------------------------------------------------------------------------------------
async def test_a_lowballer_is_replaced_within_twice_its_promise_and_then_loses_also_after_a_restart(
    tmp_path: Path,
) -> None:
    mesh = Mesh()
    never = BlockingBackend()  # acks, then never delivers
    lowballer = mesh.agent("lowballer", backend=never, price_out_per_1k_micros=0, tokens_per_s=100.0, quality=0.9)
    honest = mesh.agent("honest", price_out_per_1k_micros=0, quality=0.7)
    awards: list[Award] = []

    def observe(task_id: str, action: object, now: int) -> None:
        message = getattr(action, "message", None)
        if isinstance(message, Award):
            awards.append(message)

    bids: dict[str, Bid] = {}
    store_path = tmp_path / "outcomes.sqlite3"
    async with anyio.create_task_group() as agents:
        for a in (lowballer, honest):
            await agents.start(a.run)
        with OutcomeStore(store_path) as store:
            requester = mesh.requester(outcomes=store, observer=observe)
            tap = await mesh.broker.bus().subscribe(subjects.direct_filter(requester.id))
            async with anyio.create_task_group() as tg:
                await _running(mesh, requester, tg, [])
                await wait_registry(requester, [lowballer, honest])
                first = await requester.submit(ask("first"))
                second = await requester.submit(ask("second"))
                tg.cancel_scope.cancel()
            while tap.pending:
                m = peek((await tap.next(timeout_ms=10)).data, trust=None).message
                if isinstance(m, Bid):
                    bids[m.id] = m
        first_awards = list(awards)
        awards.clear()
        # a new requester process: the outcome store carries the record
        with OutcomeStore(store_path) as store:
            rows = list(store.rows())
            fresh = mesh.requester("req-2", outcomes=store, observer=observe)
            async with anyio.create_task_group() as tg:
                await _running(mesh, fresh, tg, [])
                await wait_registry(fresh, [lowballer, honest])
                third = await fresh.submit(ask("third"))
                tg.cancel_scope.cancel()
        agents.cancel_scope.cancel()
    assert [a.winner for a in first_awards] == [lowballer.id, honest.id, honest.id]
    assert (first.agent_id, first.attempt, second.agent_id, second.attempt) == (honest.id, 2, honest.id, 1)
    promise = bids[first_awards[0].bid_id].est_latency_ms
    assert first_awards[0].lease_until_ns - first_awards[0].ts <= 2 * promise * 1_000_000  # promise x lease factor
    assert [(r.agent, r.quality, r.quality_source) for r in rows if not r.delivered] == [
        (lowballer.id, 0.0, "failure")
    ]
    assert fresh.reputation.get(lowballer.id).failed == 1
    assert third.agent_id == honest.id and [a.winner for a in awards] == [honest.id]


# --- traces ------------------------------------------------------------------------------------------------------
async def test_traces_export_attested_cloud_answers_and_keeps_confidential_rows_private(tmp_path: Path) -> None:
    mesh = Mesh()
    cloud = mesh.agent("cloud", tier=Tier.CLOUD)
    with OutcomeStore(tmp_path / "o.sqlite3") as store:
        requester = mesh.requester(outcomes=store)
        async with anyio.create_task_group() as tg:
            await _running(mesh, requester, tg, [cloud])
            public = [await requester.submit(ask(f"question {i}")) for i in range(3)]
            secret = await requester.submit(ask("the merger terms", privacy=Privacy.CONFIDENTIAL))
            tg.cancel_scope.cancel()
        rows = list(trace_rows(store.rows(), TraceFormat.OPENAI_CHAT))
        private = list(trace_rows(store.rows(), TraceFormat.OPENAI_CHAT, include_private=True))
    lines = [json.loads(json.dumps(r)) for r in rows]
    assert len(lines) == 3 and len(private) == 4
    digests = {hashlib.sha256(o.result.attestation).hexdigest(): o for o in public}
    for line in lines:
        messages = line["messages"]
        assert [m["role"] for m in messages][-1] == "assistant" and all(
            set(m) == {"role", "content"} for m in messages
        )
        outcome = digests[line["metadata"]["attestation_digest"]]
        assert messages[-1]["content"] == outcome.answer
        assert messages[0] == {"role": "user", "content": messages[0]["content"]}
        assert messages[0]["content"].startswith("question ")
    assert all("merger" not in json.dumps(line) for line in lines)
    assert any("merger" in json.dumps(r) for r in private) and secret.answer


def _fields(spec: TaskSpec) -> dict[str, object]:
    return {f: getattr(spec, f) for f in spec.__struct_fields__}


# --- a predictor that learns online ----------------------------------------------------------------------------
class _LearningClaims:
    """Takes every bid at its claim and records what the requester teaches it."""

    def __init__(self) -> None:
        self.seen: list[Outcome] = []

    def predict(self, offer: Offer, task: Task) -> float:
        return offer.quality

    def observe(self, outcome: Outcome) -> None:
        self.seen.append(outcome)


async def test_a_learning_predictor_is_taught_every_scored_attempt_and_nothing_unscored() -> None:
    mesh = Mesh()
    broken = mesh.agent("broken", backend=sim_backend(seed=1, error_rate=1.0), quality=0.9)
    steady = mesh.agent("steady", quality=0.5)
    learner = _LearningClaims()
    requester = mesh.requester(predictor=learner)
    assert isinstance(learner, LearningPredictor)
    async with anyio.create_task_group() as tg:
        await _running(mesh, requester, tg, [broken, steady])
        first = await requester.submit(ask("first question"))  # the broken one wins on its claim, then fails
        second = await requester.submit(ask("second question"))
        requester.record_quality(first.task_id, first.agent_id, 0.75, "judge")
        tg.cancel_scope.cancel()
    assert first.agent_id == steady.id and first.attempt == 2 and second.agent_id == steady.id
    taught = [(o.agent, o.prompt, o.score) for o in learner.seen]
    assert (broken.id, "first question", 0.0) in taught  # a failure is a zero
    assert (steady.id, "first question", 0.75) in taught  # a result once the judge scored it
    assert all(o.prompt != "second question" or o.agent != steady.id for o in learner.seen)  # never scored
