"""The outgoing half of a shell: machines hand it messages synchronously; they are sealed and published in order.

Machines run synchronously (a timer callback, a receive loop), publishing is async. The outbox is the bounded
queue between the two: ``send``/``multicast`` never block; if the queue is full (the bus is down for long), the
message is dropped, counted and logged (the 1st, 2nd, 4th... drop: a flood does not flood the log too) — the
protocol's timers (ack, lease, deadline) recover from a lost
message, an unbounded queue would not recover from memory exhaustion.

Who publishes: a receive loop that has just fed a frame to its machine calls :meth:`Outbox.flush` and publishes
what the machine queued in its own task, before it reads the next frame (a bid goes out in the same event-loop
step as the call for proposals that asked for it: no hop to another task, no wake-up). On a bus that takes
publishes synchronously (:class:`~accord.bus.base.DirectBus`: NatsBus queues them for one write per loop tick)
the frames are sealed and handed over right there, even from synchronous code (:meth:`Outbox.release`, what a
frame handler running in the connection's read loop calls); a publish the bus cannot take at once (disconnected,
buffers full) and everything after it goes the asynchronous way, in order. Everything else (timer
callbacks, finished executions) wakes the outbox's own task, which drains everything queued in one go (a plain
deque, no per-message hand-off), so a burst costs one wake-up and, on NATS, one socket write. At most one
drainer runs at a time, and every drainer pops and publishes in queue order, so frames leave in the order they
were queued whichever task publishes them. A drainer yields to the event loop every 64 messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from accord.bus.base import Bus, BusError, DirectBus
from accord.logs import get_logger, sparse
from accord.protocol.messages import Message
from accord.security import Identity, seal

__all__ = ["Outbox"]

log = get_logger(__name__)

_BATCH = 64


class Outbox:
    def __init__(self, bus: Bus, identity: Identity, *, capacity: int = 10_000) -> None:
        """``capacity``: messages queued at most (spec 11.9); a message that finds the queue full is dropped."""
        if capacity < 1:
            raise ValueError("an outbox holds at least one message")
        self._bus = bus
        self._nowait = bus.publish_nowait if isinstance(bus, DirectBus) else None
        self._identity = identity
        self._capacity = capacity
        self._queue: deque[tuple[tuple[str, ...], Message]] = deque()
        self._wake = anyio.Event()
        self._sleeping = False
        """The outbox task waits on ``_wake`` (only then is there anyone to wake)."""
        self._held = 0
        """Inside :meth:`hold`: the caller publishes what is queued when it leaves, no wake-up needed."""
        self._idle: anyio.Event | None = None
        self._busy = False
        """A drainer (the outbox task or a caller of :meth:`flush`) is publishing; it takes what is queued
        meanwhile too."""
        self._running = False
        self._closed = False
        self.published = 0
        self.dropped = 0
        self.errors = 0

    def send(self, subject: str, message: Message) -> None:
        self.multicast((subject,), message)

    def multicast(self, subject_list: Sequence[str], message: Message) -> None:
        """Queue ``message`` for every subject (signed once). Never blocks; drops (and counts) when full."""
        if self._closed:
            self.dropped += 1
            log.debug("outbox.closed", type=type(message).__name__)
            return
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            if sparse(self.dropped):
                log.warning("outbox.full", type=type(message).__name__, dropped=self.dropped)
            return
        self._queue.append((tuple(subject_list), message))
        if self._sleeping and not self._held and not self._busy:
            self._sleeping = False
            self._wake.set()

    def hold(self) -> None:
        """Until the matching :meth:`flush`, queued messages wait for the caller (no wake-up of the outbox task).

        For a receive loop: ``hold()``, feed the machine (synchronously), ``await flush()``."""
        self._held += 1

    async def flush(self) -> None:
        """End a :meth:`hold` and publish what is queued in the calling task (unless a drainer is already at
        it: it takes these too, in order)."""
        self._held -= 1
        if not self._queue or self._busy:
            return
        if not self._running or self._closed:  # the outbox task is not there (yet): it drains when it starts
            return
        if self._nowait is not None and self._drain_now():
            return
        await self._drain()

    def release(self) -> None:
        """End a :meth:`hold` from synchronous code: hand what is queued to a bus that takes publishes at once;
        anything it cannot take now is left to the outbox task, which is woken."""
        self._held -= 1
        if not self._queue or self._busy or not self._running or self._closed:
            return
        if self._nowait is not None and self._drain_now():
            return
        if self._sleeping and not self._held:
            self._sleeping = False
            self._wake.set()

    def _drain_now(self) -> bool:
        """Seal and hand over everything queued without waiting; False (the rest still queued, in order) as soon
        as the bus cannot take a publish at once."""
        nowait = self._nowait
        assert nowait is not None
        queue = self._queue
        identity = self._identity
        while queue:
            subject_list, message = queue[0]
            frame = seal(message, identity)
            for i, subject in enumerate(subject_list):
                if not nowait(subject, frame):
                    queue[0] = (subject_list[i:], message)  # sealed again later: the same bytes (Ed25519)
                    return False
                self.published += 1
            queue.popleft()
        return True

    @property
    def queued(self) -> int:
        """Messages queued now (at most :attr:`capacity`)."""
        return len(self._queue)

    @property
    def capacity(self) -> int:
        return self._capacity

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Seal and publish queued messages in order until cancelled; then the outbox takes no more."""
        self._running = True
        task_status.started()
        queue = self._queue
        try:
            while True:
                if queue and not self._busy:
                    await self._drain()
                    continue
                self._wake = anyio.Event()
                self._sleeping = True
                await self._wake.wait()
        finally:
            self._closed = True
            self._sleeping = False

    async def _drain(self) -> None:
        queue = self._queue
        self._busy = True
        try:
            n = 0
            while queue:
                subject_list, message = queue.popleft()
                await self._publish(subject_list, seal(message, self._identity))
                n += 1
                if n % _BATCH == 0:
                    await anyio.lowlevel.checkpoint()
        finally:
            self._busy = False
        if self._idle is not None:
            self._idle.set()

    async def _publish(self, subject_list: tuple[str, ...], frame: bytes) -> None:
        for subject in subject_list:
            try:
                await self._bus.publish(subject, frame)
                self.published += 1
            except BusError as exc:
                self.errors += 1
                if sparse(self.errors):
                    log.warning("publish.failed", subject=subject, error=str(exc), failures=self.errors)

    async def drain(self, *, timeout_s: float = 2.0) -> None:
        """Wait until everything queued so far is published (bounded by ``timeout_s``), then flush the bus."""
        with anyio.move_on_after(timeout_s):
            while (self._queue or self._busy) and not self._closed:
                self._idle = anyio.Event()
                if self._sleeping and not self._busy:  # queued under a hold whose flush never came
                    self._sleeping = False
                    self._wake.set()
                await self._idle.wait()
            try:
                await self._bus.flush(timeout_ms=int(timeout_s * 1000))
            except BusError as exc:
                log.warning("flush.failed", error=str(exc))
