"""10^6 fuzzed frames through the receive path (issue 15): 0 crashes and 0 untyped exceptions.

    python -m tests.bench.fuzz_frames [--n 1000000] [--seed 1]

Valid signed frames of every message type, mutated (tests/support/frame_fuzz.py says how), go to ``open_frame``,
``peek`` and the agent's and requester's receive functions on either kind of bus, whose machines run on what gets
through. Every frame must be received or refused with a typed AccordError (a reason code); anything else is a
crash, printed with the frame's hex, and the command exits 1. The machines' invariants are checked every 10,000
frames. Prints the outcomes per mutation, the frames per receive path, and the time taken.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence

import anyio
from rich.console import Console
from rich.table import Table

from tests.support.frame_fuzz import MUTATIONS, FrameFuzzer, FuzzReport


async def fuzz(n: int, seed: int, *, progress: bool = True) -> FuzzReport:
    fuzzer = FrameFuzzer(seed)
    async with anyio.create_task_group() as tg:
        await fuzzer.start(tg)

        def report(done: int) -> None:
            if progress and done % 100_000 == 0:
                print(f"  {done:,} frames", file=sys.stderr, flush=True)

        result = fuzzer.run(n, on_progress=report)
        tg.cancel_scope.cancel()
    return result


def render(report: FuzzReport) -> Table:
    table = Table(
        title=f"fuzzed frames: {report.frames:,} in {report.seconds:.0f} s, {report.crash_count} crashes"
    )
    for column in ("mutation", "frames", "received", "refused (typed)", "crashes", "most frequent reasons"):
        table.add_column(column, justify="left" if column in ("mutation", "most frequent reasons") else "right")
    for mutation in MUTATIONS:
        outcomes = Counter({o: n for (m, o), n in report.outcomes.items() if m == mutation})
        refused = Counter({o.split(":", 1)[1]: n for o, n in outcomes.items() if o.startswith("refused:")})
        table.add_row(
            mutation,
            f"{sum(outcomes.values()):,}",
            f"{outcomes['received']:,}",
            f"{sum(refused.values()):,}",
            str(outcomes["crash"]),
            ", ".join(f"{r} {n:,}" for r, n in refused.most_common(3)),
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="frames to fuzz")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the shells log (sparsely) what they refuse: not wanted on the console here
    report = anyio.run(fuzz, args.n, args.seed)
    console = Console(width=max(Console().width, 140))
    console.print(render(report))
    console.print("frames per receive path: " + ", ".join(f"{t} {n:,}" for t, n in report.targets.most_common()))
    console.print(
        f"received {sum(n for (_, o), n in report.outcomes.items() if o == 'received'):,}, "
        f"refused with a typed reason {report.typed_refusals:,}, crashes (untyped exceptions) {report.crash_count}"
    )
    for crash in report.crashes:
        console.print(f"CRASH {crash.mutation} -> {crash.target}: {crash.error}\n  frame {crash.frame_hex}")
    return 1 if report.crash_count else 0


if __name__ == "__main__":
    sys.exit(main())
