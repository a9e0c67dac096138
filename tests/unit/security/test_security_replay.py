"""Replay guard: the window, the skew bound, expiry, and what happens at each memory bound."""

from __future__ import annotations

import pytest
from hypothesis import given
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


def test_the_floor_never_goes_down() -> None:
    """Evicting a sender whose newest frame is below the floor (it was admitted before the floor rose) keeps the
    floor: else an evicted sender's frames between the two would be admitted again."""
    g = ReplayGuard(max_age_ms=60_000, max_senders=2)
    g.admit("A", "a", T0 + 100 * MS, None, T0 + 300 * MS)
    g.admit("B", "b", T0 + 200 * MS, None, T0 + 300 * MS)
    g.admit("C", "c", T0 + 150 * MS, None, T0 + 300 * MS)  # evicts A: floor 100 ms
    g.admit("D", "d", T0 + 210 * MS, None, T0 + 300 * MS)  # evicts B: floor 200 ms
    g.admit("E", "e", T0 + 220 * MS, None, T0 + 300 * MS)  # evicts C, whose newest (150 ms) is below the floor
    assert g.floor_ns == T0 + 200 * MS
    assert _reason(g, "B", "b", T0 + 200 * MS, T0 + 300 * MS) is Reason.STALE


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


_steps = st.lists(
    st.tuples(
        st.booleans(),  # True: replay an earlier frame (picked by the next number); False: a new frame
        st.integers(0, 2**16),  # the replayed frame, or the new frame's sender
        st.integers(-400, 900),  # a new frame's age at arrival (ms; negative: from slightly ahead)
        st.integers(0, 60),  # clock advance before the step (ms)
    ),
    max_size=24,
)


@given(_steps, st.integers(1, 3), st.integers(1, 3))
def test_no_replay_is_ever_admitted(
    steps: list[tuple[bool, int, int, int]], max_ids: int, max_senders: int
) -> None:
    """Safety under every bound: a frame (sender, id, ts) is admitted at most once, whatever was forgotten.

    A replay is the same signed frame again, so the same id AND ts; new frames get fresh ids (a sender that
    reuses an id with a newer ts sends a new frame, which the guard may admit once it forgot the old one).
    Replays are drawn from the frames sent so far, so that a replay after an eviction by count, by age or by
    sender (three steps: frame, frame that evicts it, replay) is among the first examples. Also: the guard
    never holds more than its bounds, and a refused frame changes nothing.
    """
    g = ReplayGuard(max_age_ms=1_000, max_skew_ms=500, max_ids_per_sender=max_ids, max_senders=max_senders)
    now = T0
    sent: list[tuple[str, str, int]] = []
    admitted: set[tuple[str, str, int]] = set()
    for replay, pick, age_ms, advance_ms in steps:
        now += advance_ms * MS
        if replay and sent:
            frame = sent[pick % len(sent)]
        else:
            frame = ("ABCDE"[pick % 5], f"m{len(sent)}", now - age_ms * MS)
            sent.append(frame)
        before = g.snapshot()
        try:
            g.admit(frame[0], frame[1], frame[2], None, now)
        except ReplayError:
            assert g.snapshot() == before, "a refused frame changed the guard"
            continue
        assert frame not in admitted, f"replay admitted: {frame}"
        admitted.add(frame)
        assert g.sender_count <= max_senders
        assert len(g) <= max_ids * max_senders


def test_each_refusal_says_by_how_much_or_why() -> None:
    """The detail of each refusal (what the refusal log shows an operator): how far out of the window, whose id."""
    g = ReplayGuard(max_age_ms=60_000, max_skew_ms=5_000, max_ids_per_sender=1)
    g.admit("A", "1", T0, None, T0)
    cases = [
        (("A", "2", T0, T0 - 7_250 * MS, T0), "expired 7250 ms ago"),
        (("A", "3", T0 + 6_500 * MS, None, T0), "ts is 6500 ms ahead"),
        (("A", "4", T0 - 61_500 * MS, None, T0), "ts is 61500 ms old"),
        (("A", "1", T0, None, T0), "message 1 from A already seen"),
    ]
    for (sender, mid, ts, expires, now), detail in cases:
        with pytest.raises(ReplayError) as info:
            g.admit(sender, mid, ts, expires, now)
        assert str(info.value).endswith(detail), str(info.value)
    g.admit("A", "5", T0 + MS, None, T0 + MS)  # one id per sender: "1" is forgotten, the horizon rises over it
    with pytest.raises(ReplayError) as info:
        g.admit("A", "6", T0, None, T0 + MS)
    assert info.value.reason is Reason.STALE
    assert str(info.value).endswith("older than the replay guard's eviction horizon")
