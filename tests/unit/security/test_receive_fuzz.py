"""The receive-path fuzzer at a small size (issue 15; ``python -m tests.bench.fuzz_frames`` runs 10^6 frames):
every mutated frame is received or refused with a typed reason on every receive path, never a crash."""

from __future__ import annotations

import anyio
import pytest

from accord.bus.base import BusMessage
from accord.protocol import subjects
from accord.protocol.messages import Attestation
from accord.security import seal
from tests.bench.fuzz_frames import fuzz
from tests.support.frame_fuzz import MUTATIONS, FrameFuzzer

pytestmark = pytest.mark.asyncio

FRAMES = 6_000


async def test_fuzzed_frames_are_received_or_refused_with_a_typed_reason_on_every_receive_path() -> None:
    report = await fuzz(FRAMES, seed=20_260_101, progress=False)
    assert report.crash_count == 0, report.crashes
    assert report.frames == FRAMES == report.outcomes.total()
    assert all(outcome == "received" or outcome.startswith("refused:") for _, outcome in report.outcomes)
    assert {m for m, _ in report.outcomes} == set(MUTATIONS)
    assert len(report.targets) == 10  # open_frame, peek, and four shell paths on two kinds of bus
    received = sum(n for (_, outcome), n in report.outcomes.items() if outcome == "received")
    assert received > 0 and report.typed_refusals > FRAMES // 2


async def test_a_message_the_requester_never_receives_is_counted_not_a_crash() -> None:
    """An Attestation (a statement, never a frame of its own) sent as a frame for the requester's task used to
    crash the receive with a TypeError in the log call that reported the machine's refusal."""
    fuzzer = FrameFuzzer(7)
    async with anyio.create_task_group() as tg:
        await fuzzer.start(tg)
        for requester in fuzzer.requesters.values():
            statement = next(
                s
                for s in fuzzer.seeds
                if isinstance(s.message, Attestation) and s.message.task_id in requester._tasks
            )
            subject = subjects.direct(requester.id, statement.signer.id)
            requester._receive(BusMessage(subject, seal(statement.message, statement.signer)))
            assert requester.refusals == {"machine": 1}
        tg.cancel_scope.cancel()
