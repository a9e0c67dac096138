"""The Agent and Requester shells over MemoryBus: the market's paths end to end, in one process, no sockets."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import anyio
import msgspec
import pytest
from anyio.abc import TaskGroup

from accord.backends.base import (
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    DeltaCallback,
)
from accord.bus.base import BusMessage, EndpointCounts, ServiceEndpoint, ServiceHost, ServiceStatsFn
from accord.bus.memory import MemoryBroker, MemoryBus
from accord.protocol import subjects
from accord.protocol.actions import Action
from accord.protocol.codec import decode
from accord.protocol.digests import prompt_digest
from accord.protocol.messages import ChatMessage, Constraints, ReasonCode, Role, Task, Withdraw
from accord.protocol.requester import RequesterConfig
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester, TaskFailed, TaskOutcome
from accord.security import peek, seal
from accord.security.testing import Pki
from tests.support.runtime_kit import (
    AgentSpec,
    BlockingBackend,
    History,
    make_agent,
    sim_backend,
    spec,
    wait_for,
    wait_registry,
)

pytestmark = pytest.mark.asyncio


class _World:
    """A broker, a PKI, agents and one requester recording its history."""

    def __init__(self, seed: int = 1) -> None:
        self.broker = MemoryBroker(seed=seed)
        self.pki = Pki(random.Random(seed))
        self.history = History(self.pki.trust)
        self.agents: list[Agent] = []

    def agent(self, spec_: AgentSpec, **kw: object) -> Agent:
        agent = make_agent(self.pki, self.broker.bus(), spec_, **kw)
        self.agents.append(agent)
        return agent

    def requester(self, *, bus: MemoryBus | None = None, **kw: object) -> Requester:
        identity = self.pki.agent("req")
        return Requester(
            identity,
            bus=bus if bus is not None else self.broker.bus(),
            trust=kw.pop("trust", self.pki.trust),  # type: ignore[arg-type]
            observer=self.history.observer(identity.id),
            rng=random.Random(7),
            **kw,  # type: ignore[arg-type]
        )


@asynccontextmanager
async def _market(req: Requester, agents: Sequence[Agent]) -> AsyncIterator[TaskGroup]:
    """The requester and ``agents`` running, every agent's advert registered; all of them stop when the block
    ends. The task group is given for work beside them."""
    async with anyio.create_task_group() as tg:
        await tg.start(req.run)
        for a in agents:
            await tg.start(a.run)
        await wait_registry(req, agents)
        yield tg
        tg.cancel_scope.cancel()


async def test_happy_path_answers_are_verified_and_counted() -> None:
    w = _World()
    agents = [w.agent(AgentSpec(f"a{i}", price=100 * (i + 1))) for i in range(3)]
    req = w.requester()
    async with _market(req, agents):
        outcomes = [await w.history.submit(req, spec(f"What is {i}+1?")) for i in range(5)]
    assert all(isinstance(o, TaskOutcome) for o in outcomes)
    for o in outcomes:
        assert isinstance(o, TaskOutcome)
        assert o.agent_id == agents[0].id  # the cheapest wins every time (quality equal)
        assert o.attestation.signer == agents[0].id and o.attempt == 1
        assert o.answer.startswith("[sim-small simulated answer]")
    assert w.history.violations() == []
    s = req.stats
    assert (s.submitted, s.completed, dict(s.failed), s.reawards, s.verification_failures) == (5, 5, {}, 0, 0)
    assert s.spent_micros == sum(o.price_micros for o in outcomes if isinstance(o, TaskOutcome)) > 0
    assert s.in_flight == 0 and req.running == 0
    a0 = agents[0].stats
    # each Result came within the agent's ack delay and acknowledged its award: no AwardAck was needed
    assert (a0.awards, a0.acks, a0.results, a0.failures) == (5, 0, 5, 0)
    assert a0.tasks >= 5 and a0.bids >= 5 and a0.refused == 0


async def test_work_that_outlasts_the_ack_delay_is_acknowledged_by_an_award_ack() -> None:
    """Spec 5.6: the agent holds its AwardAck for its ack delay (20 ms); a backend still busy then gets it sent,
    once, and the Result that follows completes the task."""
    w = _World()
    backend = BlockingBackend()
    agent = w.agent(AgentSpec("slow", backend=backend))
    req = w.requester()
    async with _market(req, [agent]) as tg:
        outcome: list[TaskOutcome | TaskFailed] = []

        async def ask() -> None:
            outcome.append(await w.history.submit(req, spec(deadline_ms=10_000)))

        tg.start_soon(ask)
        await backend.started.wait()
        await wait_for(lambda: agent.stats.acks == 1, what="the held AwardAck sent")
        backend.release.set()
        await wait_for(lambda: bool(outcome), what="the outcome")
    (o,) = outcome
    assert isinstance(o, TaskOutcome) and o.agent_id == agent.id
    assert (agent.stats.awards, agent.stats.acks, agent.stats.results) == (1, 1, 1)
    assert req.stats.reawards == 0 and w.history.violations() == []


class _ForgingAgent(Agent):
    """Attests an output other than the one it returns: its results must never be accepted."""

    def _attest(self, task, award, model, backend, completion):  # type: ignore[no-untyped-def]
        good = super()._attest(task, award, model, backend, completion)
        del good
        forged = msgspec.structs.replace(completion, text=completion.text + " (edited)")
        return super()._attest(task, award, model, backend, forged)


async def test_forged_attestation_is_dropped_and_the_task_reawarded() -> None:
    w = _World(seed=2)
    forger_id = w.pki.agent("forger", region="local", residency=("eu",))
    from tests.support.runtime_kit import make_profile

    forger = _ForgingAgent(
        forger_id,
        make_profile("forger", price_out_per_1k_micros=10),
        {"sim-small": sim_backend()},
        bus=w.broker.bus(),
        trust=w.pki.trust,
        rng=random.Random(3),
    )
    honest = w.agent(AgentSpec("honest", price=500))
    req = w.requester()
    async with _market(req, [forger, honest]):
        outcome = await w.history.submit(req, spec())
    assert isinstance(outcome, TaskOutcome), outcome
    assert outcome.agent_id == honest.id and outcome.attempt == 2
    assert forger.stats.results == 1  # it did answer, with a forged attestation
    rec = w.history.by_task[outcome.task_id]
    assert [a.winner for a in rec.awards] == [forger.id, honest.id]
    assert w.history.violations() == []
    assert req.stats.verification_failures == 1 and req.stats.reawards == 1 and req.stats.completed == 1


async def test_agent_unknown_to_the_requester_never_wins() -> None:
    w = _World(seed=3)
    rogue_pki = Pki(random.Random(99))
    rogue_identity = rogue_pki.agent("rogue")
    from tests.support.runtime_kit import make_profile

    # the rogue trusts the requester (so it bids), but the requester does not know the rogue's key
    rogue = Agent(
        rogue_identity,
        make_profile("rogue", price_out_per_1k_micros=1),
        {"sim-small": sim_backend()},
        bus=w.broker.bus(),
        trust=w.pki.trust,
        rng=random.Random(4),
    )
    honest = w.agent(AgentSpec("honest", price=900))
    req = w.requester()
    async with anyio.create_task_group() as tg:
        await tg.start(req.run)
        await tg.start(rogue.run)
        await wait_for(lambda: req.stats.refused_frames >= 1, what="the rogue's advert refused")
        assert req.registry.get(rogue.id, now=time.time_ns()) is None  # its advert was refused
        assert req.stats.refused_frames >= 1 and req.stats.verification_failures >= 1
        alone = await w.history.submit(req, spec(deadline_ms=1_500))  # only the rogue answers
        await tg.start(honest.run)
        await wait_registry(req, [honest])
        served = await w.history.submit(req, spec())
        tg.cancel_scope.cancel()
    assert isinstance(alone, TaskFailed)
    # an unknown key's bid is refused before it is decoded: the machine never saw a bid (trust before decode)
    assert alone.reason is ReasonCode.NO_BIDS
    assert isinstance(served, TaskOutcome) and served.agent_id == honest.id
    assert rogue.stats.bids >= 1 and rogue.stats.awards == 0
    assert all(a.winner != rogue.id for r in w.history.by_task.values() for a in r.awards)
    assert w.history.violations() == []


async def test_requester_unknown_to_the_agents_gets_no_bids() -> None:
    w = _World(seed=4)
    agent = w.agent(AgentSpec("a"))
    stranger = Pki(random.Random(5)).agent("stranger")
    # the stranger knows the agent (so it can shortlist it), the agent does not know the stranger
    req = Requester(stranger, bus=w.broker.bus(), trust=w.pki.trust, rng=random.Random(1))
    async with _market(req, [agent]):
        with pytest.raises(TaskFailed) as info:
            await req.submit(spec(deadline_ms=1_000))
    assert info.value.reason is ReasonCode.NO_BIDS
    assert agent.stats.refused >= 1 and agent.stats.bids == 0
    assert "unknown_key" in agent.stats.last_error
    assert req.stats.failed == {"no_bids": 1}


async def test_cancel_reaches_the_agent_and_aborts_its_backend() -> None:
    w = _World(seed=5)
    backend = BlockingBackend()
    agent = w.agent(AgentSpec("slow", backend=backend))
    req = w.requester()
    async with _market(req, [agent]) as tg:
        with anyio.CancelScope() as scope:
            tg.start_soon(_cancel_when, backend.started, scope)
            await req.submit(spec(deadline_ms=10_000))
        assert scope.cancelled_caught
        await wait_for(lambda: backend.cancelled == 1, what="backend aborted")
    assert agent.stats.cancels == 1 and agent.stats.aborted == 1 and agent.stats.results == 0
    assert req.stats.failed == {"cancelled": 1} and req.stats.completed == 0
    assert agent.machine.used_slots == 0


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class _FailingBackend:
    def __init__(self, reason: BackendErrorReason) -> None:
        self.reason = reason
        self.calls = 0

    @property
    def name(self) -> str:
        return "failing"

    @property
    def model(self) -> str:
        return "sim-small"

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        self.calls += 1
        raise BackendError(self.reason, "injected", backend="failing")

    async def aclose(self) -> None:
        return None


async def test_backend_errors_and_timeouts_become_failures_and_reawards() -> None:
    w = _World(seed=6)
    broken = w.agent(AgentSpec("broken", price=100, backend=_FailingBackend(BackendErrorReason.INTERNAL)))
    # advertises a fast model but its backend takes 10 s: it times out at its lease
    slow = w.agent(AgentSpec("slow", price=200, backend=sim_backend(realtime=True, ttft_ms=10_000)))
    good = w.agent(AgentSpec("good", price=300))
    req = w.requester()
    async with _market(req, w.agents):
        outcome = await w.history.submit(req, spec(deadline_ms=8_000))
    assert isinstance(outcome, TaskOutcome), outcome
    assert outcome.agent_id == good.id and outcome.attempt == 3
    assert [a.winner for a in w.history.by_task[outcome.task_id].awards] == [broken.id, slow.id, good.id]
    assert broken.stats.failures == 1 and "backend_error" in broken.stats.last_error
    # the requester ends the slow attempt at its lease (its clock decides, spec 9.3): the agent is told to stop
    assert (slow.stats.cancels, slow.stats.aborted, slow.stats.results) == (1, 1, 0)
    assert req.stats.reawards == 2 and req.stats.completed == 1
    assert w.history.violations() == []


async def test_deadline_no_agent_can_meet_fails_clearly_and_loses_nothing() -> None:
    w = _World(seed=7)
    # 32 output tokens at 10 tokens/s: every agent needs over 3 s
    agents = [w.agent(AgentSpec(f"slow{i}", price=100, tokens_per_s=10.0)) for i in range(3)]
    req = w.requester()
    results: list[TaskOutcome | TaskFailed] = []

    async def run(deadline_ms: int) -> None:
        results.append(await w.history.submit(req, spec(deadline_ms=deadline_ms)))

    async with _market(req, agents), anyio.create_task_group() as work:
        work.start_soon(run, 1_000)  # impossible
        work.start_soon(run, 15_000)  # possible, at the same time
    failed = [r for r in results if isinstance(r, TaskFailed)]
    done = [r for r in results if isinstance(r, TaskOutcome)]
    assert len(failed) == 1 and len(done) == 1
    assert failed[0].reason in (ReasonCode.NO_BIDS, ReasonCode.NO_ELIGIBLE_BIDS)
    assert "deadline" in failed[0].detail, failed[0].detail
    assert "deadline" in str(failed[0])
    rec = w.history.by_task[failed[0].task_id]
    assert rec.awards == [] and rec.accepted == []  # nothing was awarded, paid or accepted for it
    assert req.stats.spent_micros == done[0].price_micros
    assert w.history.violations() == []


async def test_submit_applies_backpressure_at_max_in_flight() -> None:
    w = _World(seed=8)
    backend = BlockingBackend()  # shared: no task can end before it is released
    agents = [w.agent(AgentSpec(f"a{i}", slots=8, backend=backend)) for i in range(2)]
    running: list[int] = []
    req_holder: list[Requester] = []

    def observe(task_id: str, action: Action, now: int) -> None:
        running.append(req_holder[0].running)

    identity = w.pki.agent("req")
    req = Requester(identity, bus=w.broker.bus(), trust=w.pki.trust, max_in_flight=2, observer=observe)
    req_holder.append(req)
    in_flight: list[int] = []
    outcomes: list[TaskOutcome] = []

    async def one(i: int) -> None:
        outcomes.append(await req.submit(spec(f"q{i}", deadline_ms=20_000)))

    async with _market(req, agents), anyio.create_task_group() as work:
        for i in range(6):
            work.start_soon(one, i)
        with anyio.fail_after(10):
            await backend.wait_calls(2)  # the two running tasks are executing; none can end yet
        in_flight.append(req.in_flight)
        assert req.running == 2 and backend.calls == 2
        backend.release.set()
    assert len(outcomes) == 6 and backend.calls == 6
    assert max(running) == 2  # never more than two machines at once...
    assert in_flight == [6]  # ...while all six callers wait their turn
    assert req.stats.completed == 6 and req.stats.in_flight == 0


async def test_agent_stop_fails_running_work_and_withdraws() -> None:
    w = _World(seed=9)
    backend = BlockingBackend()
    leaving = w.agent(AgentSpec("leaving", price=100, backend=backend))
    staying = w.agent(AgentSpec("staying", price=900))
    req = w.requester()
    seen: list[BusMessage] = []
    watcher = w.broker.bus()
    adverts = await watcher.subscribe(subjects.advertise_filter())

    async def watch() -> None:
        async for msg in adverts:
            seen.append(msg)

    outcome: list[TaskOutcome] = []

    async def work() -> None:
        result = await w.history.submit(req, spec(deadline_ms=10_000))
        assert isinstance(result, TaskOutcome)
        outcome.append(result)

    async with _market(req, w.agents) as tg:
        tg.start_soon(watch)
        tg.start_soon(work)
        await backend.started.wait()
        await leaving.stop()
        with anyio.fail_after(5):
            await leaving.done.wait()
        await wait_for(lambda: bool(outcome), what="re-awarded result")
    assert req.registry.get(leaving.id, now=time.time_ns()) is None
    withdraws = [m for m in seen if isinstance(decode(peek(m.data, trust=None).payload), Withdraw)]
    assert len(withdraws) == 1 and peek(withdraws[0].data, trust=None).message.sender == leaving.id
    assert backend.cancelled == 1 and leaving.stats.failures == 1 and "shutdown" in leaving.stats.last_error
    assert outcome[0].agent_id == staying.id and outcome[0].attempt == 2
    assert w.history.violations() == []


async def test_frames_on_someone_elses_subject_are_refused() -> None:
    w = _World(seed=10)
    agent = w.agent(AgentSpec("a"))
    other = w.pki.agent("other")
    bus = w.broker.bus()
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        # a validly signed Attestation-free Task-less frame: a Withdraw by `other`, published as if by a third key
        frame = seal(Withdraw(id="00" * 16, sender=other.id, ts=time.time_ns()), other)
        impostor = w.pki.agent("impostor")
        await bus.publish(subjects.direct(agent.id, impostor.id), frame)
        await wait_for(lambda: agent.stats.refused_inbox == 1, what="refusal")
        tg.cancel_scope.cancel()
    assert "sender_mismatch" in agent.stats.last_error


class _HostingBus(MemoryBus):
    """A MemoryBus that records service registrations (the NATS service protocol itself is tested on NATS)."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.services: list[tuple[str, Mapping[str, str], Sequence[ServiceEndpoint], ServiceStatsFn | None]] = []

    async def add_service(
        self,
        name: str,
        version: str,
        *,
        description: str = "",
        metadata: Mapping[str, str] | None = None,
        endpoints: Sequence[ServiceEndpoint] = (),
        stats: ServiceStatsFn | None = None,
        on_ping: Callable[[], None] | None = None,
    ) -> _NoHandle:
        self.services.append((name, dict(metadata or {}), endpoints, stats))
        return _NoHandle()


class _NoHandle:
    stopped = 0

    @property
    def id(self) -> str:
        return "svc"

    async def stop(self) -> None:
        _NoHandle.stopped += 1


async def test_service_counts_follow_the_market() -> None:
    w = _World(seed=11)
    agent_bus = _HostingBus(w.broker)
    assert isinstance(agent_bus, ServiceHost)
    agent = make_agent(w.pki, agent_bus, AgentSpec("a", backend=_FailingBackend(BackendErrorReason.INTERNAL)))
    good = w.agent(AgentSpec("b", price=900))
    req_bus = _HostingBus(w.broker)
    req = w.requester(bus=req_bus)
    async with _market(req, [agent, good]):
        outcome = await req.submit(spec())
    assert outcome.agent_id == good.id
    (name, meta, endpoints, stats) = agent_bus.services[0]
    assert name == "accord-agent" and meta["agent_id"] == agent.id and meta["tier"] == "cloud"
    assert [e.name for e in endpoints] == ["cfp", "award"]
    assert stats is not None
    counts = stats()
    assert counts["cfp"].requests == agent.stats.tasks >= 1
    assert counts["award"] == EndpointCounts(
        requests=1, errors=1, last_error=agent.stats.last_error, data=counts["award"].data
    )
    assert counts["award"].data is not None and counts["award"].data["failures"] == 1
    (rname, rmeta, _, rstats) = req_bus.services[0]
    assert rname == "accord-requester" and rmeta["agent_id"] == req.id
    assert rstats is not None and rstats()["submit"].requests == 1 and rstats()["submit"].errors == 0
    assert _NoHandle.stopped >= 2  # both registrations were removed when the shells stopped


async def test_requester_config_limits_attempts() -> None:
    w = _World(seed=12)
    for i in range(3):
        w.agent(AgentSpec(f"bad{i}", price=100 + i, backend=_FailingBackend(BackendErrorReason.INTERNAL)))
    req = w.requester(config=RequesterConfig(max_attempts=2))
    async with _market(req, w.agents):
        result = await w.history.submit(req, spec())
    assert isinstance(result, TaskFailed) and result.reason is ReasonCode.ATTEMPTS_EXHAUSTED
    assert req.stats.failed == {"attempts_exhausted": 1} and req.stats.reawards == 1
    assert w.history.violations() == []


async def test_a_task_whose_prompt_does_not_match_its_digest_gets_no_bid() -> None:
    w = _World(seed=13)
    agent = w.agent(AgentSpec("a"))
    requester = w.pki.agent("req")
    bus = w.broker.bus()
    replies = await bus.subscribe(subjects.direct_filter(requester.id))
    now = time.time_ns()
    messages = [ChatMessage(role=Role.USER, content="What is 2+2?")]

    def task(digest: str, n: int) -> Task:
        return Task(
            id=f"{n:032x}",
            sender=requester.id,
            ts=now,
            task_id=f"{n + 100:032x}",
            messages=messages,
            prompt_digest=digest,
            max_output_tokens=16,
            constraints=Constraints(deadline_ns=now + 5_000_000_000, max_price_micros=100_000),
        )

    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await bus.publish(subjects.direct(agent.id, requester.id), seal(task("0" * 64, 1), requester))
        await wait_for(lambda: agent.stats.refused_inbox == 1, what="refusal")
        await bus.publish(
            subjects.direct(agent.id, requester.id), seal(task(prompt_digest(messages), 2), requester)
        )
        with anyio.fail_after(5):
            bid = peek((await replies.next()).data, trust=None).message
        tg.cancel_scope.cancel()
    assert "prompt_mismatch" in agent.stats.last_error
    assert agent.stats.bids == 1 and bid.task_id == f"{102:032x}"
