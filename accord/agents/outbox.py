"""The outgoing half of a shell: machines hand it messages synchronously; one task seals and publishes them.

Machines run synchronously (a timer callback, a receive loop), publishing is async. The outbox is the bounded
queue between the two: ``send``/``multicast`` never block; if the queue is full (the bus is down for long), the
message is dropped, counted and logged — the protocol's timers (ack, lease, deadline) recover from a lost
message, an unbounded queue would not recover from memory exhaustion.

The publishing task drains everything queued in one go (a plain deque, no per-message hand-off), so a burst of
messages costs one wake-up and, on NATS, one socket write; it yields to the event loop every 64 messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskStatus

from accord.bus.base import Bus, BusError
from accord.protocol.messages import Message
from accord.security import Identity, seal

__all__ = ["Outbox"]

log = structlog.get_logger(__name__)

_BATCH = 64


class Outbox:
    def __init__(self, bus: Bus, identity: Identity, *, capacity: int = 10_000) -> None:
        self._bus = bus
        self._identity = identity
        self._capacity = capacity
        self._queue: deque[tuple[tuple[str, ...], Message]] = deque()
        self._wake = anyio.Event()
        self._idle: anyio.Event | None = None
        self._busy = False
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
            log.warning("outbox.full", type=type(message).__name__, dropped=self.dropped)
            return
        self._queue.append((tuple(subject_list), message))
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Seal and publish queued messages in order until cancelled; then the outbox takes no more."""
        task_status.started()
        queue = self._queue
        try:
            while True:
                if not queue:
                    if self._idle is not None:
                        self._idle.set()
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                self._busy = True
                n = 0
                while queue:
                    subject_list, message = queue.popleft()
                    await self._publish(subject_list, seal(message, self._identity))
                    n += 1
                    if n % _BATCH == 0:
                        await anyio.lowlevel.checkpoint()
                self._busy = False
        finally:
            self._closed = True
            self._busy = False

    async def _publish(self, subject_list: tuple[str, ...], frame: bytes) -> None:
        for subject in subject_list:
            try:
                await self._bus.publish(subject, frame)
                self.published += 1
            except BusError as exc:
                self.errors += 1
                if self.errors & (self.errors - 1) == 0:  # the 1st, 2nd, 4th, 8th... failure
                    log.warning("publish.failed", subject=subject, error=str(exc), failures=self.errors)

    async def drain(self, *, timeout_s: float = 2.0) -> None:
        """Wait until everything queued so far is published (bounded by ``timeout_s``), then flush the bus."""
        with anyio.move_on_after(timeout_s):
            while (self._queue or self._busy) and not self._closed:
                self._idle = anyio.Event()
                await self._idle.wait()
            try:
                await self._bus.flush(timeout_ms=int(timeout_s * 1000))
            except BusError as exc:
                log.warning("flush.failed", error=str(exc))
