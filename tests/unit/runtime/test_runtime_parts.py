"""The runtime's small parts: timers, outbox, shortlist cache, mesh paths and trust, advert checks, queueing."""

from __future__ import annotations

import random
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from accord.bus.base import BusError, BusMessage
from accord.bus.memory import MemoryBroker, MemoryBus
from accord.mesh.config import MeshConfigError, load_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.protocol import subjects
from accord.protocol.actions import new_message_id
from accord.protocol.market import Credentials, Offer, ReputationPredictor
from accord.protocol.messages import (
    Advertise,
    ChatMessage,
    Constraints,
    ModelOffer,
    ReasonCode,
    Role,
    Task,
    Tier,
    Withdraw,
)
from accord.protocol.shortlists import CachingRegistry, PerQueryPredictor
from accord.runtime.outbox import Outbox
from accord.runtime.requester import Requester, TaskFailed
from accord.runtime.timers import TimerService, now_ns
from accord.security import Identity, peek, save_identity, seal
from accord.security.testing import Pki
from tests.support.runtime_kit import AgentSpec, BlockingBackend, make_agent, spec, wait_for, wait_registry


# --- timers ----------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_timers_fire_in_order_rearm_and_cancel() -> None:
    fired: list[str] = []
    timers: TimerService[str] = TimerService(fired.append)
    async with anyio.create_task_group() as tg:
        await tg.start(timers.run)
        now = now_ns()
        timers.set("late", now + 80_000_000)
        timers.set("early", now + 20_000_000)  # earlier than the one it sleeps for: must wake it
        timers.set("gone", now + 10_000_000)
        timers.cancel("gone")
        timers.set("moved", now + 5_000_000)
        timers.set("moved", now + 50_000_000)  # re-armed later: fires once, at the new time
        timers.set("past", now - 1_000_000)  # a past deadline means now
        await wait_for(lambda: len(fired) == 4, timeout_s=5)
        tg.cancel_scope.cancel()
    assert fired == ["past", "early", "moved", "late"]
    assert timers.pending() == 0
    assert 0 <= timers.max_lateness_ns < 5_000_000_000


# --- outbox ----------------------------------------------------------------------------------------------------
class _FlakyBus(MemoryBus):
    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.fail = False

    async def publish(self, subject: str, data: bytes, **kw: object) -> None:  # type: ignore[override]
        if self.fail:
            raise BusError("injected")
        await super().publish(subject, data)


@pytest.mark.asyncio
async def test_outbox_signs_once_publishes_in_order_drains_and_drops_when_full() -> None:
    broker = MemoryBroker()
    me = Identity.generate()
    bus = _FlakyBus(broker)
    watcher = broker.bus()
    sub = await watcher.subscribe("t.>")
    outbox = Outbox(bus, me, capacity=3)
    messages = [Withdraw(id=f"{i:032x}", sender=me.id, ts=i + 1) for i in range(5)]
    async with anyio.create_task_group() as tg:
        outbox.multicast(["t.a", "t.b"], messages[0])
        outbox.send("t.a", messages[1])
        outbox.send("t.a", messages[2])
        outbox.send("t.a", messages[3])  # the fourth while three wait: dropped, counted
        assert outbox.dropped == 1
        await tg.start(outbox.run)
        await outbox.drain()
        got: list[BusMessage] = []
        with anyio.move_on_after(0.2):
            async for msg in sub:
                got.append(msg)
        bus.fail = True
        outbox.send("t.a", messages[4])
        await outbox.drain()
        tg.cancel_scope.cancel()
    assert [(m.subject, peek(m.data, trust=None).message.ts) for m in got] == [
        ("t.a", 1),
        ("t.b", 1),
        ("t.a", 2),
        ("t.a", 3),
    ]
    assert got[0].data == got[1].data  # one signature for the multicast
    assert outbox.published == 4 and outbox.errors == 1
    outbox.send("t.a", messages[0])  # after run ended: refused, counted, never raises
    assert outbox.dropped == 2


# --- the shortlist cache ---------------------------------------------------------------------------------------
def _advert(identity: Identity, price: int, *, ts: int, load: int = 0) -> Advertise:
    return Advertise(
        id=new_message_id(random.Random(ts + price)),
        sender=identity.id,
        ts=ts,
        name="a",
        tier=Tier.CLOUD,
        region="local",
        models=[
            ModelOffer(name="sim-small", context_window=8192, tokens_per_s=1000.0, price_out_per_1k_micros=price)
        ],
        slots=4,
        load=load,
    )


def _task(now: int, max_price: int = 1_000_000) -> Task:
    return Task(
        id="1" * 32,
        sender=Identity.generate().id,
        ts=now,
        task_id="2" * 32,
        prompt_digest="0" * 64,
        max_output_tokens=16,
        constraints=Constraints(deadline_ns=now + 5_000_000_000, max_price_micros=max_price),
    )


def test_caching_registry_reuses_a_ranking_per_task_class_and_honours_exclusions() -> None:
    now = time.time_ns()
    agents = [Identity.generate() for _ in range(12)]
    reg = CachingRegistry(ttl_ms=100)
    for i, a in enumerate(agents):
        reg.observe(_advert(a, 100 * (i + 1), ts=now), now=now)
    pred = ReputationPredictor()

    def trusted(agent_id: str) -> Credentials:
        return Credentials(tier=Tier.CLOUD, region="local")

    first = reg.shortlist(_task(now), now=now, k=3, credentials=trusted, predictor=pred)
    assert first == [a.id for a in agents[:3]] and (reg.hits, reg.misses) == (0, 1)
    assert reg.shortlist(_task(now), now=now + 1, k=3, credentials=trusted, predictor=pred) == first
    assert reg.hits == 1
    # exclusions come out of the cached ranking, as long as it is deep enough
    assert reg.shortlist(
        _task(now), now=now + 2, k=3, credentials=trusted, predictor=pred, exclude=[agents[0].id]
    ) == [a.id for a in agents[1:4]]
    assert reg.hits == 2
    # another budget is another class: ranked afresh (and the expensive ones are not eligible)
    cheap = reg.shortlist(_task(now, max_price=3), now=now, k=3, credentials=trusted, predictor=pred)
    assert cheap == [a.id for a in agents[:1]] and reg.misses == 2
    # after the TTL a change shows up: the cheapest agent leaves
    reg.withdraw(Withdraw(id="3" * 32, sender=agents[0].id, ts=now + 1), now=now + 1)
    later = now + 200_000_000
    assert reg.shortlist(_task(later), now=later, k=3, credentials=trusted, predictor=pred) == [
        a.id for a in agents[1:4]
    ]


class _PromptPicker:
    """Predicts a high quality for the agent whose index the prompt names, low for every other."""

    def __init__(self, agents: list[Identity]) -> None:
        self.index = {a.id: i for i, a in enumerate(agents)}

    def predict(self, offer: Offer, task: Task) -> float:
        return 1.0 if task.messages[0].content == f"agent {self.index[offer.agent_id]}" else 0.0

    def query_key(self, task: Task) -> str:
        return task.messages[0].content


def test_a_per_query_predictor_gets_a_ranking_per_prompt_from_the_shortlist_cache() -> None:
    now = time.time_ns()
    agents = [Identity.generate() for _ in range(4)]
    reg = CachingRegistry(ttl_ms=1_000)
    for a in agents:
        reg.observe(_advert(a, 100, ts=now), now=now)
    picker = _PromptPicker(agents)
    assert isinstance(picker, PerQueryPredictor)

    def trusted(agent_id: str) -> Credentials:
        return Credentials(tier=Tier.CLOUD, region="local")

    def asking(i: int) -> Task:
        return msgspec.structs.replace(_task(now), messages=[ChatMessage(role=Role.USER, content=f"agent {i}")])

    picks = [reg.shortlist(asking(i), now=now, k=1, credentials=trusted, predictor=picker) for i in (2, 0, 3)]
    assert picks == [[agents[2].id], [agents[0].id], [agents[3].id]]  # one class of task, three prompts
    assert reg.shortlist(asking(0), now=now + 1, k=1, credentials=trusted, predictor=picker) == [agents[0].id]
    assert (reg.hits, reg.misses) == (1, 3)


# --- mesh files: paths, trust, unknown keys --------------------------------------------------------------------
def test_mesh_paths_are_relative_to_the_file_and_trust_is_shared(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(
        '[[agents]]\nname = "a"\ntier = "edge"\ncount = 2\nbackend = { kind = "simulated" }\n', encoding="utf-8"
    )
    config = load_mesh(tmp_path / "mesh.toml")
    assert config.state_dir == str(tmp_path / ".accord")
    state = MeshState(Path(config.state_dir))
    trust, ids = load_trust(config, state)
    assert sorted(ids) == ["a-1", "a-2", REQUESTER_NAME]
    assert trust.check(ids["a-1"].id, now_ns()).tier is Tier.EDGE
    before = state.trust_file.read_bytes()
    _, ids2 = load_trust(config, state)  # a second process of the same mesh: same keys, same file
    assert {n: i.id for n, i in ids2.items()} == {n: i.id for n, i in ids.items()}
    assert state.trust_file.read_bytes() == before
    # the mesh file changes an agent's tier: certificates are issued afresh
    (tmp_path / "mesh.toml").write_text(
        '[[agents]]\nname = "a"\ntier = "cloud"\ncount = 2\nbackend = { kind = "simulated" }\n', encoding="utf-8"
    )
    changed, _ = load_trust(load_mesh(tmp_path / "mesh.toml"), state)
    assert changed.check(ids["a-1"].id, now_ns()).tier is Tier.CLOUD
    assert state.trust_file.read_bytes() != before


def test_a_key_the_trust_file_does_not_certify_is_refused_by_name(tmp_path: Path) -> None:
    pki = Pki(random.Random(1))
    known = pki.agent("known")
    save_identity(known, tmp_path / "known.seed")
    stranger = Identity.generate()
    save_identity(stranger, tmp_path / "stranger.seed")
    pki.trust.save(tmp_path / "trust.json")
    body = (
        '[trust]\nfile = "trust.json"\n'
        '[[agents]]\nname = "{n}"\ntier = "edge"\nkey = "{n}.seed"\nbackend = {{ kind = "simulated" }}\n'
    )
    (tmp_path / "ok.toml").write_text(body.format(n="known"), encoding="utf-8")
    (tmp_path / "bad.toml").write_text(body.format(n="stranger"), encoding="utf-8")
    config = load_mesh(tmp_path / "ok.toml")
    _, ids = load_trust(config, MeshState(tmp_path / "s"), require=["known"])
    assert ids["known"].id == known.id
    bad = load_mesh(tmp_path / "bad.toml")
    with pytest.raises(MeshConfigError) as info:
        load_trust(bad, MeshState(tmp_path / "s2"), require=["stranger"])
    assert stranger.id in str(info.value) and "unknown_key" in str(info.value)
    with pytest.raises(MeshConfigError, match="no agent named 'zed'"):
        load_trust(config, MeshState(tmp_path / "s"), require=["zed"])


# --- adverts: peeked when unchanged, verified when new or changed ----------------------------------------------
@pytest.mark.asyncio
async def test_changed_cards_are_verified_and_forged_ones_refused() -> None:
    broker = MemoryBroker()
    pki = Pki(random.Random(2))
    agent = pki.agent("a")
    forger = Identity.generate()  # signs in the agent's name with the wrong key
    req = Requester(pki.agent("req"), bus=broker.bus(), trust=pki.trust, rng=random.Random(1))
    bus = broker.bus()
    subject = subjects.advertise(Tier.CLOUD, "local", agent.id)
    now = time.time_ns()

    def forged(advert: Advertise) -> bytes:
        good = seal(advert, agent)
        return good[:-64] + forger.sign(b"x")  # same envelope, another signature

    async with anyio.create_task_group() as tg:
        await tg.start(req.run)
        await bus.publish(subject, seal(_advert(agent, 100, ts=now), agent))
        await wait_for(lambda: len(req.registry) == 1)
        # a changed card with a bad signature: refused, the registry keeps the old price
        await bus.publish(subject, forged(_advert(agent, 1, ts=now + 1)))
        await wait_for(lambda: req.stats.refused_frames == 1)
        entry = req.registry.get(agent.id, now=time.time_ns())
        assert entry is not None and entry.advert.models[0].price_out_per_1k_micros == 100
        assert req.stats.verification_failures == 1
        # the same card again (a heartbeat, new load): accepted without a signature check
        await bus.publish(subject, seal(_advert(agent, 100, ts=now + 2, load=3), agent))
        await wait_for(
            lambda: (e := req.registry.get(agent.id, now=time.time_ns())) is not None and e.advert.load == 3
        )
        tg.cancel_scope.cancel()


# --- backpressure never outlives a deadline ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_task_queued_past_its_deadline_fails_at_its_deadline() -> None:
    broker = MemoryBroker()
    pki = Pki(random.Random(3))
    backend = BlockingBackend()
    agent = make_agent(pki, broker.bus(), AgentSpec("slow", backend=backend))
    req = Requester(pki.agent("req"), bus=broker.bus(), trust=pki.trust, max_in_flight=1, rng=random.Random(2))
    async with anyio.create_task_group() as tg:
        await tg.start(req.run)
        await tg.start(agent.run)
        await wait_registry(req, [agent])
        tg.start_soon(req.submit, spec(deadline_ms=10_000))  # takes the only slot and blocks
        await backend.started.wait()
        queued = spec(deadline_ms=300)
        with pytest.raises(TaskFailed) as info:
            await req.submit(queued)
        ended = time.time_ns()
        backend.release.set()
        await wait_for(lambda: req.stats.completed == 1)
        tg.cancel_scope.cancel()
    assert info.value.reason is ReasonCode.DEADLINE_EXCEEDED
    assert ended >= queued.constraints.deadline_ns
    assert req.stats.failed == {"deadline_exceeded": 1} and req.stats.submitted == 2


def test_card_ignores_what_a_heartbeat_changes() -> None:
    from accord.runtime.requester import _card

    ident = Identity.generate()
    a = _advert(ident, 100, ts=1, load=0)
    b = msgspec.structs.replace(_advert(ident, 100, ts=2, load=5), seq=9)
    assert _card(a) == _card(b)
    assert _card(a) != _card(_advert(ident, 101, ts=1))


@pytest.mark.asyncio
async def test_a_prompt_too_large_for_a_frame_fails_at_once_as_payload_too_large() -> None:
    """A10: a 5 MB prompt (or one message over 256 KiB) fails locally as payload_too_large, not later as no_bids
    after a call for proposals that could never be sent; the requester sends nothing."""
    from accord.bus.base import PayloadTooLargeError
    from accord.security.testing import Pki
    from tests.support.runtime_kit import AgentSpec, make_agent, spec

    pki, broker = Pki(random.Random(8)), MemoryBroker()
    agent = make_agent(pki, broker.bus(), AgentSpec("worker"))
    requester = Requester(pki.agent("me"), bus=broker.bus(), trust=pki.trust)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await tg.start(requester.run)
        with pytest.raises(PayloadTooLargeError, match="a message holds at most"):
            await requester.submit(spec("x" * 5_000_000))
        six = spec("y")
        six = msgspec.structs.replace(
            six, messages=[msgspec.structs.replace(six.messages[0], content="y" * 200_000)] * 6
        )
        with pytest.raises(PayloadTooLargeError, match="a frame holds at most"):
            await requester.submit(six)
        assert requester.stats.submitted == 0 and agent.stats.tasks == 0
        outcome = await requester.submit(spec())  # and goes on working
        assert outcome.answer
        await agent.stop()
        tg.cancel_scope.cancel()
