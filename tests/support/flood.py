"""The flood tests' measure (issue 15): drive N hostile inputs into one structure under tracemalloc, and print
one line per structure: ``[flood] <structure>: <n> frames, peak <KiB> KiB, held <count>``.

``N`` is ``ACCORD_FLOOD_N`` (default 100,000: the figure the issue asks for; set it lower for a quick local run).
Peaks are measured with tracemalloc from a baseline taken just before the flood (what the structure already held
is not counted), so each test can assert that the peak stays under a bound derived from the structure's limit:
memory stays flat however many frames come. No timing is asserted.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest

from accord.protocol.messages import Bid, Tier

__all__ = ["FLOOD_N", "KIB", "MIB", "Flood", "bid", "flood"]

FLOOD_N: Final = int(os.environ.get("ACCORD_FLOOD_N", "100000"))
KIB: Final = 1024
MIB: Final = 1024 * KIB


@dataclass(frozen=True)
class Flood:
    structure: str
    n: int
    peak_bytes: int
    """The highest traced memory during the flood, above what was traced when it started."""
    held: int
    """What the structure holds afterwards, in its own unit (jobs, bids, ids, messages, timers...)."""

    @property
    def line(self) -> str:
        return f"[flood] {self.structure}: {self.n} frames, peak {self.peak_bytes // KIB} KiB, held {self.held}"


def flood(
    structure: str,
    n: int,
    feed: Callable[[int], object],
    held: Callable[[], int],
    capsys: pytest.CaptureFixture[str],
) -> Flood:
    """Call ``feed(i)`` for i in 0..n-1 under tracemalloc; print and return the structure's line."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            feed(i)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    result = Flood(structure, n, peak, held())
    with capsys.disabled():  # shown in CI logs as well as under -s
        print(f"\n{result.line}")
    return result


def bid(
    task_id: str, sender: str, *, now: int, bid_id: str = "f" * 32, price: int = 1_000, region: str = "eu"
) -> Bid:
    """A plausible cloud bid of ``sender`` for ``task_id``, valid for a minute and a half: the flood's unit. Its id
    defaults to ``"f" * 32``, which frame floods replace byte-wise to vary it."""
    return Bid(
        id=bid_id,
        sender=sender,
        ts=now,
        task_id=task_id,
        model="sim-small",
        price_micros=price,
        est_latency_ms=100,
        quality=0.6,
        valid_until_ns=now + 90_000_000_000,
        tier=Tier.CLOUD,
        region=region,
        residency=["eu"],
    )
