"""The shells' clock and timer service: what turns a machine's SetTimer into a TimerFired later.

The machines never read a clock; this module is the one place the runtime does (``now_ns``). A TimerService
holds one deadline per key, sleeps until the earliest, and calls the owner's callback with the key. Re-arming
a key replaces its deadline; cancelling forgets it. Stale heap entries are skipped lazily, and compacted away
when they outnumber the live ones.

Bounded (spec 11.9): at most ``capacity`` keys are armed at once; arming a new key beyond that is refused,
counted and logged (the machines' own bounds keep their timers far below it: a contractor arms at most one timer
per open job and its heartbeat, a requester at most four per task). Stale heap entries are compacted away
whenever they outnumber the live ones (plus a constant), on arming as on cancelling, so re-arming one key again
and again (a heartbeat brought forward by every service PING) does not grow the heap.

Cheap on the hot path: arming a timer later than the one the service sleeps for (the common case: bid
expiries, leases, deadlines all lie ahead) only pushes onto a heap; the sleeping task is woken only when a new
deadline is earlier than the one it waits for.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

from accord.logs import get_logger, sparse

__all__ = ["Clock", "TimerService", "now_ns"]

K = TypeVar("K", bound=Hashable)

log = get_logger(__name__)

_SLACK = 256
"""Stale heap entries tolerated beyond the live ones before a compaction."""

_NEVER = math.inf


Clock = Callable[[], int]
"""A source of ``now`` in ns since the Unix epoch (tests inject skewed ones)."""


def now_ns() -> int:
    """Wall-clock time in ns since the Unix epoch: the ``now`` every shell passes to its machines."""
    return time.time_ns()


class TimerService(Generic[K]):
    """One deadline per key; ``fire(key)`` is called (in the service's task) when a deadline is due."""

    def __init__(self, fire: Callable[[K], None], *, clock: Clock = now_ns, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("a timer service holds at least one timer")
        self._fire = fire
        self._clock = clock
        self.capacity = capacity
        """Keys armed at once at most; arming one more is refused (:attr:`refused`)."""
        self.refused = 0
        self._deadlines: dict[K, int] = {}
        self._heap: list[tuple[int, int, K]] = []
        self._counter = 0
        self._wake = anyio.Event()
        self._target: float = _NEVER
        """The deadline the service task sleeps until (it must be woken for anything earlier)."""
        self.max_lateness_ns = 0
        """The latest any timer was handled so far: ``L`` in the termination bound of spec 5.7 (measured after
        the callback returned, so it covers the ``now`` the callback gave its machine)."""

    def set(self, key: K, at_ns: int) -> bool:
        """Arm (or re-arm) ``key`` for ``at_ns``; False if refused: a new key with ``capacity`` keys armed."""
        deadlines = self._deadlines
        if key not in deadlines and len(deadlines) >= self.capacity:
            self.refused += 1
            if sparse(self.refused):
                log.error("timers.full", capacity=self.capacity, refused=self.refused)
            return False
        deadlines[key] = at_ns
        self._counter += 1
        heapq.heappush(self._heap, (at_ns, self._counter, key))
        if len(self._heap) > 2 * len(deadlines) + _SLACK:
            self._compact()
        if at_ns < self._target:
            self._target = at_ns
            self._wake.set()
        return True

    def cancel(self, key: K) -> None:
        if self._deadlines.pop(key, None) is not None and len(self._heap) > 2 * len(self._deadlines) + _SLACK:
            self._compact()

    def _compact(self) -> None:
        """Drop the stale entries (cancelled or re-armed keys): most timers are cancelled long before they are
        due (a task's deadline, lease and ack timers end with the task), and left in the heap they would pile up
        until their time, a task's whole deadline, as garbage the cyclic GC keeps walking. Linear, and done only
        when stale entries outnumber live ones: amortised O(1) per cancel."""
        deadlines = self._deadlines
        heap = self._heap  # in place: _fire_due may be iterating it (a fired timer's callback cancels others)
        heap[:] = [entry for entry in heap if deadlines.get(entry[2]) == entry[0]]
        heapq.heapify(heap)

    def pending(self) -> int:
        return len(self._deadlines)

    @property
    def heap_size(self) -> int:
        """Heap entries, stale ones included (at most twice the armed keys plus a constant)."""
        return len(self._heap)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._target = -_NEVER  # while firing, arming a timer needs no wake-up: the next line sees it
            next_ns = self._fire_due()
            self._wake = anyio.Event()
            if next_ns is None:
                self._target = _NEVER
                await self._wake.wait()
            else:
                self._target = next_ns
                with anyio.move_on_after((next_ns - self._clock()) / 1e9):
                    await self._wake.wait()

    def _fire_due(self) -> int | None:
        """Fire every due timer; return the next deadline (None: none armed)."""
        heap = self._heap
        while heap:
            at_ns, _, key = heap[0]
            if self._deadlines.get(key) != at_ns:
                heapq.heappop(heap)  # re-armed or cancelled since
                continue
            if at_ns > self._clock():
                return at_ns
            heapq.heappop(heap)
            del self._deadlines[key]
            self._fire(key)
            late = self._clock() - at_ns
            if late > self.max_lateness_ns:
                self.max_lateness_ns = late
        return None
