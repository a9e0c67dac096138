"""Replay guard: the window, the skew bound, expiry, and what happens at each memory bound."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.security import Reason, ReplayError, ReplayGuard

MS = 1_000_000
S = 1_000 * MS
T0 = 1_767_225_600 * S


def _reason(guard: ReplayGuard, sender: str, mid: str, ts: int, now: int, expires: int | None = None) -> Reason:
    before = guard.snapshot()
    with pytest.raises(ReplayError) as info:
        guard.admit(sender, mid, ts, expires, now)
    assert guard.snapshot() == before, "a refused frame changed the guard"
    return info.value.reason


def test_window_skew_and_expiry() -> None:
    g = ReplayGuard(max_age_ms=60_000, max_skew_ms=5_000)
    g.admit("A", "1", T0, None, T0)
    assert _reason(g, "A", "1", T0, T0 + S) is Reason.REPLAY
    g.admit("B", "1", T0, None, T0)  # ids are per sender
    assert _reason(g, "A", "2", T0 - 60 * S - 1, T0) is Reason.STALE
    g.admit("A", "3", T0 - 60 * S, None, T0)  # exactly at the edge: accepted
    assert _reason(g, "A", "4", T0 + 5 * S + 1, T0) is Reason.FUTURE
    g.admit("A", "5", T0 + 5 * S, None, T0)
    # expires_ns is on the sender's clock, which may lag ours by max_skew (spec 9.1, 9.3)
    assert _reason(g, "A", "6", T0, T0, expires=T0 - 5 * S - 1) is Reason.EXPIRED
    g.admit("A", "7", T0, T0 - 5 * S, T0)  # expired exactly max_skew ago: still valid
    assert len(g) == 5 and g.sender_count == 2


def test_expiry_is_checked_before_replay() -> None:
    g = ReplayGuard()
    g.admit("A", "1", T0, T0 + S, T0)
    assert _reason(g, "A", "1", T0, T0 + 7 * S, expires=T0 + S) is Reason.EXPIRED


def test_ids_older_than_the_window_are_forgotten_and_refused_as_stale() -> None:
    g = ReplayGuard(max_age_ms=1_000)
    g.admit("A", "old", T0, None, T0)
    g.admit("A", "new", T0 + 2 * S, None, T0 + 2 * S)  # prunes "old"
    assert len(g) == 1
    assert _reason(g, "A", "old", T0, T0 + 2 * S) is Reason.STALE
    # Even if a caller's clock went backwards, the forgotten id stays refused (the horizon covers it).
    assert _reason(g, "A", "old", T0, T0) is Reason.STALE
    assert g.horizon_ns("A") >= T0


def test_per_sender_count_bound_evicts_oldest_and_raises_the_horizon() -> None:
    g = ReplayGuard(max_age_ms=60_000, max_ids_per_sender=3)
    for i in range(5):
        g.admit("A", f"m{i}", T0 + i * MS, None, T0 + 10 * MS)
    assert len(g) == 3
    assert g.horizon_ns("A") == T0 + 1 * MS  # m0 and m1 evicted
    for i in (0, 1):  # the evicted ids: refused as stale, never accepted again
        assert _reason(g, "A", f"m{i}", T0 + i * MS, T0 + 10 * MS) is Reason.STALE
    for i in (2, 3, 4):
        assert _reason(g, "A", f"m{i}", T0 + i * MS, T0 + 10 * MS) is Reason.REPLAY
    # The cost: an honest new frame at or below the horizon is refused too.
    assert _reason(g, "A", "late", T0 + 1 * MS, T0 + 10 * MS) is Reason.STALE
    g.admit("A", "fresh", T0 + 2 * MS, None, T0 + 10 * MS)


def test_sender_bound_evicts_least_recent_and_raises_the_floor() -> None:
    g = ReplayGuard(max_age_ms=60_000, max_senders=2)
    g.admit("A", "a1", T0, None, T0)
    g.admit("B", "b1", T0 + MS, None, T0 + MS)
    g.admit("A", "a2", T0 + 2 * MS, None, T0 + 2 * MS)  # A is now the most recent
    g.admit("C", "c1", T0 + 3 * MS, None, T0 + 3 * MS)  # evicts B (least recently admitted)
    assert g.sender_count == 2 and g.floor_ns == T0 + MS
    assert _reason(g, "B", "b1", T0 + MS, T0 + 4 * MS) is Reason.STALE  # B's replay is refused
    assert _reason(g, "D", "d1", T0 + MS, T0 + 4 * MS) is Reason.STALE  # the cost, for untracked senders
    g.admit("D", "d2", T0 + 4 * MS, None, T0 + 4 * MS)  # evicts A (now the least recent)
    assert g.floor_ns == g.horizon_ns("D") == T0 + 2 * MS
    assert _reason(g, "A", "a2", T0 + 2 * MS, T0 + 5 * MS) is Reason.STALE


def test_senders_entirely_outside_the_window_go_first() -> None:
    g = ReplayGuard(max_age_ms=1_000, max_senders=3)
    g.admit("A", "a", T0, None, T0)
    g.admit("B", "b", T0 + 2 * S, None, T0 + 2 * S)
    g.admit("C", "c", T0 + 2 * S, None, T0 + 2 * S)  # A is already outside the window: dropped, not at the bound
    assert g.sender_count == 2
    g.admit("D", "d", T0 + 2 * S, None, T0 + 2 * S)
    assert g.sender_count == 3
    assert g.floor_ns == T0  # only as far as A's newest frame, which is stale anyway


def test_a_restarted_guard_refuses_frames_from_before_its_start_less_the_skew() -> None:
    first = ReplayGuard()
    first.admit("A", "1", T0, None, T0)
    restarted = ReplayGuard(start_ns=T0 + 6 * S)  # the process restarted at T0 + 6 s and forgot "1"
    assert _reason(restarted, "A", "1", T0, T0 + 7 * S) is Reason.STALE
    # a sender whose clock lags by up to max_skew is not refused right after the restart (spec 9.3)
    restarted.admit("A", "2", T0 + 1 * S + 1, None, T0 + 7 * S)
    assert ReplayGuard().horizon_ns("A") == -1


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError):
        ReplayGuard(max_senders=0)
    with pytest.raises(ValueError):
        ReplayGuard(max_age_ms=-1)


_events = st.lists(
    st.tuples(
        st.sampled_from("ABCD"),  # sender
        st.integers(0, 11),  # message id
        st.integers(0, 4_000),  # ts offset (ms)
        st.integers(0, 60),  # clock advance (ms)
    ),
    max_size=120,
)


@settings(max_examples=300)
@given(_events, st.integers(1, 4), st.integers(1, 3))
def test_no_frame_is_ever_admitted_twice(
    events: list[tuple[str, int, int, int]], max_ids: int, max_senders: int
) -> None:
    """Safety under every bound: whatever was forgotten, a (sender, id) pair is admitted at most once.

    Also: the guard never holds more than its bounds, and ``check`` never changes it.
    """
    g = ReplayGuard(max_age_ms=1_000, max_skew_ms=500, max_ids_per_sender=max_ids, max_senders=max_senders)
    now = T0 + 2 * S
    admitted: set[tuple[str, int]] = set()
    for sender, mid, ts_ms, advance_ms in events:
        now += advance_ms * MS
        ts = T0 + ts_ms * MS
        before = g.snapshot()
        try:
            g.admit(sender, str(mid), ts, None, now)
        except ReplayError:
            assert g.snapshot() == before
            continue
        assert (sender, mid) not in admitted, "replay admitted"
        admitted.add((sender, mid))
        assert g.sender_count <= max_senders
        assert len(g) <= max_ids * max_senders
