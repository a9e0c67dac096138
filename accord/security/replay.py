"""The replay guard (spec section 9): refuse replays, stale, future and expired frames in bounded memory.

Pure: ``now_ns`` is passed in; nothing reads a clock. Only frames whose signature and sender were verified reach
the guard (an unverified frame must never be recorded: a forger could otherwise burn a victim's ids).

A frame from ``sender`` with id ``id`` and timestamp ``ts`` is admitted at ``now`` iff, in this order:
``expires_ns`` is None or ``now <= expires_ns`` (else ``expired``); ``ts <= now + max_skew`` (else ``future``);
``ts >= now - max_age`` (else ``stale``); ``(sender, id)`` is not remembered (else ``replay``); and
``ts > horizon(sender)`` (else ``stale``). Admitting records ``(sender, id, ts)``.

Memory is bounded by ``max_senders * max_ids_per_sender`` remembered ids. The guard forgets an id only by
raising a horizon to at least that id's ``ts``, so forgetting never lets a replay through; it can only make
an honest but old frame be refused as ``stale``:

* by time: ids with ``ts < now - max_age`` are dropped (they would be refused as stale anyway);
* by count: past ``max_ids_per_sender``, the sender's oldest ids are dropped and its horizon rises to them;
* by senders: past ``max_senders``, senders whose newest frame is older than ``now - max_age`` go first, then
  the least recently admitted sender; the guard's floor rises to the evicted sender's newest ``ts``, and a
  sender the guard does not track starts with ``horizon = floor``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from accord.security.errors import Reason, ReplayError

__all__ = ["GuardSnapshot", "ReplayGuard"]

_MS: Final = 1_000_000

GuardSnapshot = tuple[
    int, tuple[tuple[str, int, int, tuple[tuple[str, int], ...], tuple[tuple[int, str], ...]], ...]
]
"""(floor, ((sender, horizon, newest, seen items, heap), ...) in LRU order): equal iff the state is equal."""


@dataclass(slots=True)
class _Sender:
    horizon: int
    newest: int
    seen: dict[str, int] = field(default_factory=dict)
    heap: list[tuple[int, str]] = field(default_factory=list)


class ReplayGuard:
    """Per-sender windows of seen message ids with a timestamp skew bound.

    Defaults: frames up to 60 s old and 5 s in the future, 1024 ids per sender, 1024 senders (about 1M ids at
    most; see ``python -m tests.bench.security`` for the measured bytes per id).
    """

    def __init__(
        self,
        *,
        max_age_ms: int = 60_000,
        max_skew_ms: int = 5_000,
        max_ids_per_sender: int = 1024,
        max_senders: int = 1024,
        start_ns: int | None = None,
    ) -> None:
        """``start_ns``: a receiver that restarts (and so forgot every id) passes its start time; frames with
        ``ts`` at or below it are then refused as stale, since they can no longer be told apart from replays."""
        if min(max_age_ms, max_skew_ms) < 0 or min(max_ids_per_sender, max_senders) < 1:
            raise ValueError("replay guard bounds must be positive")
        self.max_age_ns = max_age_ms * _MS
        self.max_skew_ns = max_skew_ms * _MS
        self.max_ids_per_sender = max_ids_per_sender
        self.max_senders = max_senders
        self._senders: OrderedDict[str, _Sender] = OrderedDict()
        # senders' clocks may lag ours by max_skew: a floor at our start would refuse their fresh frames
        self._floor = -1 if start_ns is None else start_ns - self.max_skew_ns

    # --- the two halves: check (pure) and record ------------------------------------------------------------
    def check(self, sender: str, message_id: str, ts_ns: int, expires_ns: int | None, now_ns: int) -> None:
        """Raise ReplayError if the frame must be refused. Never changes the guard."""
        if expires_ns is not None and now_ns > expires_ns + self.max_skew_ns:  # the sender's clock (spec 9.3)
            raise ReplayError(Reason.EXPIRED, f"expired {(now_ns - expires_ns) // _MS} ms ago")
        if ts_ns > now_ns + self.max_skew_ns:
            raise ReplayError(Reason.FUTURE, f"ts is {(ts_ns - now_ns) // _MS} ms ahead")
        if ts_ns < now_ns - self.max_age_ns:
            raise ReplayError(Reason.STALE, f"ts is {(now_ns - ts_ns) // _MS} ms old")
        state = self._senders.get(sender)
        if state is not None and message_id in state.seen:
            raise ReplayError(Reason.REPLAY, f"message {message_id} from {sender} already seen")
        horizon = self._floor if state is None else state.horizon
        if ts_ns <= horizon:
            raise ReplayError(Reason.STALE, "older than the replay guard's eviction horizon")

    def record(self, sender: str, message_id: str, ts_ns: int, now_ns: int) -> None:
        """Remember an admitted frame (call only after :meth:`check` passed for it)."""
        state = self._senders.get(sender)
        if state is None:
            self._make_room(now_ns)
            state = self._senders[sender] = _Sender(horizon=self._floor, newest=self._floor)
        else:
            self._senders.move_to_end(sender)
        oldest_kept = now_ns - self.max_age_ns
        heap = state.heap
        while heap and heap[0][0] < oldest_kept:
            self._forget(state)
        state.seen[message_id] = ts_ns
        heapq.heappush(heap, (ts_ns, message_id))
        state.newest = max(state.newest, ts_ns)
        while len(state.seen) > self.max_ids_per_sender:
            self._forget(state)

    def admit(self, sender: str, message_id: str, ts_ns: int, expires_ns: int | None, now_ns: int) -> None:
        """:meth:`check`, then :meth:`record`: the one call a receiver makes per verified frame."""
        self.check(sender, message_id, ts_ns, expires_ns, now_ns)
        self.record(sender, message_id, ts_ns, now_ns)

    # --- bounds ---------------------------------------------------------------------------------------------
    @staticmethod
    def _forget(state: _Sender) -> None:
        ts, message_id = heapq.heappop(state.heap)
        del state.seen[message_id]
        state.horizon = max(state.horizon, ts)

    def _make_room(self, now_ns: int) -> None:
        oldest_kept = now_ns - self.max_age_ns
        # Senders whose newest frame is outside the window, least recently admitted first (amortised O(1)):
        # the floor rises only to a ts that is refused as stale anyway.
        while self._senders and next(iter(self._senders.values())).newest < oldest_kept:
            self._evict_lru()
        while len(self._senders) >= self.max_senders:
            self._evict_lru()

    def _evict_lru(self) -> None:
        _, state = self._senders.popitem(last=False)
        self._floor = max(self._floor, state.newest, state.horizon)

    # --- introspection --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of remembered ids."""
        return sum(len(s.seen) for s in self._senders.values())

    @property
    def sender_count(self) -> int:
        return len(self._senders)

    @property
    def floor_ns(self) -> int:
        """Frames with ``ts`` at or below this from untracked senders are refused as stale (-1: none yet)."""
        return self._floor

    def horizon_ns(self, sender: str) -> int:
        """Frames from ``sender`` with ``ts`` at or below this are refused as stale."""
        state = self._senders.get(sender)
        return self._floor if state is None else state.horizon

    def snapshot(self) -> GuardSnapshot:
        """An immutable copy of the whole state, for tests that assert a rejected frame changed nothing."""
        return (
            self._floor,
            tuple(
                (sender, s.horizon, s.newest, tuple(s.seen.items()), tuple(s.heap))
                for sender, s in self._senders.items()
            ),
        )
