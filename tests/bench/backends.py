"""Backend benchmark: our backends next to the raw call they wrap, measured in one run on one machine.

    python -m tests.bench.backends [--threads 1 2] [--tokens 64] [--runs 3] [--sim-calls 2000]

Rows:
- SmolLM2 direct: LlamaCppBackend (worker thread, streamed deltas) vs xllamacpp's own blocking call on the same
  loaded model; decode tokens/s (output tokens over the time after the first token).
- SmolLM2 over HTTP: OpenAIBackend (SSE, typed parsing) vs a raw httpx POST + line read of the same stream on
  the same server; end-to-end tokens/s.
- simulated: SimulatedBackend.complete calls/s vs a bare coroutine that builds the same Completion.
The ratio column is ours / raw (1.00 = no overhead). Medians over ``--runs``. Also prints the model's load time
and the process's peak RSS. No assertions: numbers for the report.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
from rich.console import Console
from rich.table import Table

from accord.backends import (
    SIM_SMALL,
    Completion,
    CompletionRequest,
    Delta,
    LlamaCppBackend,
    LlamaCppConfig,
    LlamaCppServer,
    OpenAIBackend,
    SimulatedBackend,
)
from accord.protocol.messages import Timings, Usage

PROMPT = "Tell me about the moon."
SYSTEM = "You are a helpful assistant."


def request(tokens: int) -> CompletionRequest:
    return CompletionRequest.from_prompt(PROMPT, system=SYSTEM, max_tokens=tokens, temperature=0.0, seed=1)


def raw_body(tokens: int, *, stream: bool) -> dict[str, object]:
    body: dict[str, object] = {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0.0,
        "seed": 1,
        "repeat_penalty": LlamaCppConfig().repeat_penalty,
        "ignore_eos": True,
    }
    if stream:
        body["stream"] = True
    return body


async def bench_direct(server: LlamaCppServer, tokens: int, runs: int) -> tuple[float, float]:
    backend = LlamaCppBackend(server=server)
    ours: list[float] = []
    raw: list[float] = []

    async def sink(delta: Delta) -> None:
        return None

    for _ in range(runs):
        result = await backend.complete(request(tokens), on_delta=sink)
        decode_ms = max(1, result.timings.total_ms - result.timings.ttft_ms)
        ours.append((result.usage.output_tokens - 1) / decode_ms * 1000)

        def raw_call() -> dict[str, object]:
            reply = server.server.handle_chat_completions(raw_body(tokens, stream=False))
            assert isinstance(reply, dict)
            return reply

        reply = await anyio.to_thread.run_sync(raw_call)
        timings = reply["timings"]
        assert isinstance(timings, dict)
        raw.append(float(timings["predicted_per_second"]))
    return statistics.median(ours), statistics.median(raw)


async def bench_http(server: LlamaCppServer, tokens: int, runs: int) -> tuple[float, float]:
    ours: list[float] = []
    raw: list[float] = []
    async with (
        OpenAIBackend(server.openai_base_url, model="SmolLM2-135M-Instruct") as backend,
        httpx.AsyncClient(timeout=120) as client,
    ):
        for _ in range(runs):
            started = time.perf_counter()
            result = await backend.complete(request(tokens))
            ours.append(result.usage.output_tokens / (time.perf_counter() - started))
            started = time.perf_counter()
            count = 0
            url = server.openai_base_url + "/chat/completions"
            async with client.stream("POST", url, json=raw_body(tokens, stream=True)) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and '"content":"' in line:
                        count += 1
            raw.append(count / (time.perf_counter() - started))
    return statistics.median(ours), statistics.median(raw)


async def rate(calls: int, make: Callable[[int], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for i in range(calls):
        await make(i)
    return calls / (time.perf_counter() - started)


async def bench_sim(calls: int) -> tuple[float, float]:
    backend = SimulatedBackend(SIM_SMALL, seed=0)
    requests = [CompletionRequest.from_prompt(f"question {i}") for i in range(calls)]

    async def ours(i: int) -> Completion:
        return await backend.complete(requests[i])

    async def raw(i: int) -> Completion:
        await anyio.lowlevel.checkpoint()
        return Completion(
            text="x", model="sim-small", usage=Usage(input_tokens=8, output_tokens=48), timings=Timings()
        )

    return await rate(calls, ours), await rate(calls, raw)


async def main(threads: list[int], tokens: int, runs: int, sim_calls: int) -> None:
    table = Table(title=f"Backends ({tokens} tokens, median of {runs} runs)")
    for column in ("case", "ours", "raw floor", "unit", "ratio"):
        table.add_column(column, justify="left" if column == "case" else "right")
    notes: list[str] = []
    for n in threads:
        server = await LlamaCppServer.astart(LlamaCppConfig(threads=n))
        try:
            notes.append(f"SmolLM2 load with {n} thread(s): {server.load_ms} ms")
            ours, raw = await bench_direct(server, tokens, runs)
            table.add_row(
                f"SmolLM2 direct, {n} thread(s)", f"{ours:.1f}", f"{raw:.1f}", "tok/s", f"{ours / raw:.2f}"
            )
            ours, raw = await bench_http(server, tokens, runs)
            table.add_row(
                f"SmolLM2 over HTTP, {n} thread(s)", f"{ours:.1f}", f"{raw:.1f}", "tok/s", f"{ours / raw:.2f}"
            )
        finally:
            await anyio.to_thread.run_sync(server.close)
    ours, raw = await bench_sim(sim_calls)
    table.add_row("simulated, instant", f"{ours:,.0f}", f"{raw:,.0f}", "calls/s", f"{ours / raw:.2f}")
    console = Console()
    console.print(table)
    for note in notes:
        console.print(note)
    console.print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"load average during the run: {load} (the box has {os.cpu_count()} cores)")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads", type=int, nargs="*", default=[1, 2], help="thread counts to try (none: skip the model rows)"
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sim-calls", type=int, default=2000)
    args = parser.parse_args()
    anyio.run(main, args.threads, args.tokens, args.runs, args.sim_calls)


if __name__ == "__main__":
    cli()
