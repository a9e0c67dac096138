"""FaultyBus: wrap any Bus and inject seeded faults: drop, duplicate, delay, reorder, partition, heal.

Each FaultyBus is one named *endpoint* (an agent, a requester). A shared :class:`FaultPlan` holds the seed, the
fault rates and the current partitions. Faults are injected on the receiving side, per link
(sender endpoint, receiver endpoint, subscription subject): the sender stamps its endpoint name in the
``Accord-Fault-Src`` header, the receiving FaultyBus strips it again and asks the plan what to do with the
message when the subscriber takes it (so a partition also cuts what was already buffered). Replies to
requests travel back through the responder's FaultyBus, which remembers which endpoint asked, so a partition
cuts both directions.

Every link draws from its own ``random.Random`` seeded from (seed, sender, receiver, subject), so the same seed
gives the same fault schedule on each link whatever the interleaving of the links; every injected fault is
counted (``plan.counts``) and logged (``plan.log``) so a test can print and compare schedules.

Durable streams and KV go straight to the wrapped bus (their faults are the server's: kill it).
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import anyio

from accord.bus.base import (
    DEFAULT_MAX_PENDING,
    Bus,
    BusMessage,
    BusStats,
    BusTimeoutError,
    DurableAck,
    DurableConsumer,
    KeyValue,
    ServiceEndpoint,
    ServiceHandle,
    ServiceHost,
    ServiceStatsFn,
    StreamState,
    Subscription,
)
from accord.bus.subscription import SubscriptionBase

__all__ = ["SRC_HEADER", "FaultEvent", "FaultPlan", "FaultRates", "FaultyBus"]

SRC_HEADER: Final = "Accord-Fault-Src"
UNKNOWN: Final = "?"
_REPLY_MEMORY: Final = 4096


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Per-message probabilities, drawn independently in this order: drop, duplicate, reorder, delay."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    delay_ms: tuple[int, int] = (1, 20)
    """A delayed message waits a uniform number of ms in this range."""
    reorder_hold_ms: int = 50
    """A message held back for reordering is released after this long if nothing overtakes it."""

    def __post_init__(self) -> None:
        for p in (self.drop, self.duplicate, self.reorder, self.delay):
            if not 0.0 <= p <= 1.0:
                raise ValueError("fault probabilities must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class FaultEvent:
    kind: str  # "drop", "duplicate", "reorder", "delay", "partition"
    src: str
    dst: str
    subject: str
    n: int  # index of the message on its link
    delay_ms: int = 0


class _Link:
    __slots__ = ("n", "rng")

    def __init__(self, seed: str) -> None:
        self.rng = random.Random(seed)
        self.n = 0


class FaultPlan:
    """The shared fault controller: a seed, rates, partitions; counts and logs what it injects."""

    def __init__(self, seed: int, rates: FaultRates | None = None, *, keep_log: bool = True) -> None:
        self.seed = seed
        self.rates = rates or FaultRates()
        self.counts: Counter[str] = Counter()
        self.log: list[FaultEvent] = []
        self._keep_log = keep_log
        self._links: dict[tuple[str, str, str], _Link] = {}
        self._cuts: set[frozenset[str]] = set()
        self._isolated: set[str] = set()

    # --- partitions ----------------------------------------------------------------------------------------------
    def partition(self, a: str, b: str) -> None:
        """Cut the link between endpoints ``a`` and ``b`` in both directions."""
        self._cuts.add(frozenset((a, b)))

    def isolate(self, endpoint: str) -> None:
        """Cut ``endpoint`` off from every other endpoint."""
        self._isolated.add(endpoint)

    def split(self, groups: Iterable[Iterable[str]]) -> None:
        """Partition into groups: endpoints in different groups cannot talk."""
        gs = [list(g) for g in groups]
        for i, g in enumerate(gs):
            for h in gs[i + 1 :]:
                for a in g:
                    for b in h:
                        self.partition(a, b)

    def heal(self) -> None:
        """Remove every partition (rates stay as they are)."""
        self._cuts.clear()
        self._isolated.clear()

    def is_partitioned(self, a: str, b: str) -> bool:
        if a == b:
            return False
        return a in self._isolated or b in self._isolated or frozenset((a, b)) in self._cuts

    # --- decisions -----------------------------------------------------------------------------------------------
    def _record(self, kind: str, src: str, dst: str, subject: str, n: int, delay_ms: int = 0) -> None:
        self.counts[kind] += 1
        if self._keep_log:
            self.log.append(FaultEvent(kind, src, dst, subject, n, delay_ms))

    def decide(self, src: str, dst: str, subject: str) -> tuple[str, int]:
        """What happens to the next message on link (src -> dst, subject): ("deliver"|fault kind, delay_ms)."""
        key = (src, dst, subject)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link(f"{self.seed}|{src}|{dst}|{subject}")
        n = link.n
        link.n += 1
        if self.is_partitioned(src, dst):
            self._record("partition", src, dst, subject, n)
            return "partition", 0
        r = self.rates
        rng = link.rng
        if r.drop and rng.random() < r.drop:
            self._record("drop", src, dst, subject, n)
            return "drop", 0
        if r.duplicate and rng.random() < r.duplicate:
            self._record("duplicate", src, dst, subject, n)
            return "duplicate", 0
        if r.reorder and rng.random() < r.reorder:
            self._record("reorder", src, dst, subject, n)
            return "reorder", 0
        if r.delay and rng.random() < r.delay:
            ms = rng.randint(*r.delay_ms)
            self._record("delay", src, dst, subject, n, ms)
            return "delay", ms
        return "deliver", 0

    def counts_for(self, endpoint: str) -> Counter[str]:
        """Faults injected on links into or out of ``endpoint`` (needs keep_log)."""
        return Counter(e.kind for e in self.log if endpoint in (e.src, e.dst))


def _strip(msg: BusMessage) -> tuple[str, BusMessage]:
    h = msg.headers
    if h is None or SRC_HEADER not in h:
        return UNKNOWN, msg
    rest = {k: v for k, v in h.items() if k != SRC_HEADER}
    return h[SRC_HEADER], BusMessage(msg.subject, msg.data, rest or None, msg.reply)


class _FaultySubscription(SubscriptionBase):
    """The wrapped bus's subscription, with the plan's faults applied as the subscriber takes each message."""

    __slots__ = ("_bus", "_held", "_inner", "_ready")

    def __init__(self, bus: FaultyBus, inner: Subscription) -> None:
        super().__init__(inner.subject, inner.queue, inner.max_pending)
        self._bus = bus
        self._inner = inner
        self._ready: deque[BusMessage] = deque()
        self._held: BusMessage | None = None

    @property
    def pending(self) -> int:
        return self._inner.pending + len(self._ready) + (self._held is not None)

    @property
    def dropped(self) -> int:
        return self._inner.dropped

    def _poll(self) -> BusMessage | None:
        return self._ready.popleft() if self._ready else None

    async def _wait(self) -> BusMessage:
        """Closed shows through from the wrapped subscription: its ``next`` raises BusClosedError."""
        bus = self._bus
        plan = bus.plan
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._held is not None:
                try:
                    raw = await self._inner.next(timeout_ms=plan.rates.reorder_hold_ms)
                except BusTimeoutError:
                    held, self._held = self._held, None
                    return held
            else:
                raw = await self._inner.next()
            src, msg = _strip(raw)
            if msg.reply is not None:
                bus._remember_reply(msg.reply, src)
            kind, delay_ms = plan.decide(src, bus.endpoint, self._inner.subject)
            if kind in ("drop", "partition"):
                continue
            if kind == "reorder" and self._held is None:
                self._held = msg
                continue
            if kind == "delay":
                await anyio.sleep(delay_ms / 1000)
            self._ready.append(msg)
            if kind == "duplicate":
                self._ready.append(msg)
            if self._held is not None:
                self._ready.append(self._held)
                self._held = None

    def _discard(self) -> None:
        self._ready.clear()
        self._held = None

    async def _remove_interest(self) -> None:
        await self._inner.unsubscribe()


class _NoService:
    """The handle of a service the wrapped bus cannot host (e.g. a MemoryBus): nothing answers ``$SRV``."""

    @property
    def id(self) -> str:
        return ""

    async def stop(self) -> None:
        return None


class FaultyBus:
    """A Bus that is endpoint ``endpoint`` under ``plan``; everything else is the wrapped ``inner`` bus."""

    def __init__(self, inner: Bus, endpoint: str, plan: FaultPlan) -> None:
        if not endpoint or endpoint == UNKNOWN:
            raise ValueError("an endpoint needs a name")
        self.inner = inner
        self.endpoint = endpoint
        self.plan = plan
        self._reply_src: OrderedDict[str, str] = OrderedDict()

    @property
    def stats(self) -> BusStats:
        return self.inner.stats

    def _remember_reply(self, reply: str, src: str) -> None:
        self._reply_src[reply] = src
        if len(self._reply_src) > _REPLY_MEMORY:
            self._reply_src.popitem(last=False)

    def _stamp(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        return {SRC_HEADER: self.endpoint} if not headers else {**headers, SRC_HEADER: self.endpoint}

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        reply: str | None = None,
    ) -> None:
        asker = self._reply_src.pop(subject, None)
        if asker is not None:  # a reply: the return path of a request runs through this endpoint's link
            kind, delay_ms = self.plan.decide(self.endpoint, asker, "_reply")
            if kind in ("drop", "partition"):
                return
            if kind == "delay":
                await anyio.sleep(delay_ms / 1000)
            await self.inner.publish(subject, data, headers=headers, reply=reply)
            return
        await self.inner.publish(subject, data, headers=self._stamp(headers), reply=reply)

    async def subscribe(
        self, subject: str, *, queue: str | None = None, max_pending: int = DEFAULT_MAX_PENDING
    ) -> _FaultySubscription:
        return _FaultySubscription(self, await self.inner.subscribe(subject, queue=queue, max_pending=max_pending))

    async def request(
        self, subject: str, data: bytes, *, timeout_ms: int, headers: Mapping[str, str] | None = None
    ) -> BusMessage:
        return await self.inner.request(subject, data, timeout_ms=timeout_ms, headers=self._stamp(headers))

    async def flush(self, *, timeout_ms: int = 2000) -> None:
        await self.inner.flush(timeout_ms=timeout_ms)

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)

    # --- durable streams and KV: straight through ------------------------------------------------------------
    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        duplicate_window_ms: int = 120_000,
        max_age_ms: int = 0,
        replicas: int = 1,
    ) -> None:
        await self.inner.ensure_stream(
            name, subjects, duplicate_window_ms=duplicate_window_ms, max_age_ms=max_age_ms, replicas=replicas
        )

    async def stream_state(self, name: str) -> StreamState:
        return await self.inner.stream_state(name)

    async def publish_durable(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int = 2000,
    ) -> DurableAck:
        return await self.inner.publish_durable(
            subject, data, msg_id=msg_id, headers=headers, timeout_ms=timeout_ms
        )

    async def durable_consumer(
        self,
        stream: str,
        name: str,
        *,
        filter_subject: str | None = None,
        ack_wait_ms: int = 30_000,
    ) -> DurableConsumer:
        return await self.inner.durable_consumer(
            stream, name, filter_subject=filter_subject, ack_wait_ms=ack_wait_ms
        )

    async def key_value(self, bucket: str, *, history: int = 1, replicas: int = 1) -> KeyValue:
        return await self.inner.key_value(bucket, history=history, replicas=replicas)

    # --- NATS service protocol: straight through (operations, not market traffic: no faults) -------------------
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
    ) -> ServiceHandle:
        if isinstance(self.inner, ServiceHost):
            return await self.inner.add_service(
                name,
                version,
                description=description,
                metadata=metadata,
                endpoints=endpoints,
                stats=stats,
                on_ping=on_ping,
            )
        return _NoService()
