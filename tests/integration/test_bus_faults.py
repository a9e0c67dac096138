"""A real nats-server killed (SIGKILL) and restarted under a steady JetStream publisher, ten times (the issue's
figure, twenty, is ``python -m tests.bench.bus_faults --kills 20``).

What must hold: NatsBus reconnects by itself; every message the stream acknowledged is in the stream afterwards
(0 acked lost, thanks to ``sync_interval: always``); retries of a publish whose ack was lost are absorbed by the
Msg-Id duplicate window (no message stored twice). The numbers are printed (fail-fast while disconnected is
checked deterministically in test_bus_nats.py).
"""

from __future__ import annotations

import pytest

from tests.bench.bus_faults import sigkill_under_load

KILLS = 10
PUBLISHERS = 4


@pytest.mark.integration
@pytest.mark.asyncio
async def test_sigkill_and_restart_under_load_loses_no_acked_message(capsys: pytest.CaptureFixture[str]) -> None:
    report = await sigkill_under_load(KILLS, PUBLISHERS)
    with capsys.disabled():
        print("\n" + "\n".join(report.lines()))
    assert report.reconnects >= KILLS
    assert len(report.acked) > 100
    assert report.lost == [], f"acknowledged messages lost: {report.lost[:10]}"
    assert report.stored_twice == [], f"stored more than once: {report.stored_twice[:10]}"
    assert report.stream_messages == len(report.stored) >= len(report.acked)
