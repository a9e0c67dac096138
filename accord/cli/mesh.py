"""``accord up``, ``accord ask``, ``accord agents``: run a mesh from its file and talk to it."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import anyio
import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from accord.bus.base import BusError
from accord.cli.logging import configure_logging
from accord.errors import AccordError
from accord.mesh.config import MeshConfig, MeshConfigError, load_mesh
from accord.mesh.discovery import DISCOVERY_WAIT_MS, await_candidates
from accord.mesh.run import connect_bus, run_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.protocol.messages import Constraints, Privacy, Tier
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import Requester, TaskFailed
from accord.runtime.timers import now_ns
from accord.security import TrustStore
from accord.strategies import (
    Ask,
    StrategyConfigError,
    StrategyFailed,
    StrategyResult,
    build_strategy,
    parse_strategy_option,
    run_strategy,
)
from accord.strategies.parsing import SingleSpec

__all__ = ["register"]

log = structlog.get_logger(__name__)
console = Console()
err = Console(stderr=True)

MeshFile = Annotated[Path, typer.Argument(help="The mesh TOML file.")]


def load_mesh_or_exit(path: Path) -> MeshConfig:
    """The mesh file, or exit 2 with the reason it cannot be used."""
    try:
        return load_mesh(path)
    except MeshConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _mesh_url(config: MeshConfig, url: str | None) -> str:
    if url:
        return url
    if config.bus.url:
        return config.bus.url
    assert config.state_dir is not None
    url_file = MeshState(Path(config.state_dir)).url_file
    if not url_file.exists():
        err.print("[red]error:[/red] no running mesh: start it with `accord up MESH.toml` or pass --nats URL")
        raise typer.Exit(2)
    return url_file.read_text(encoding="utf-8").strip()


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        mesh: MeshFile,
        only: Annotated[list[str] | None, typer.Option(help="Run only these agents (repeatable).")] = None,
        nats: Annotated[str | None, typer.Option(help="NATS URL (default: the file's, else embedded).")] = None,
        seconds: Annotated[float, typer.Option(help="Stop after this long (0: until Ctrl-C).")] = 0.0,
        log_json: Annotated[bool, typer.Option("--log-json", help="Logs as JSON lines.")] = False,
    ) -> None:
        """Run the agents of a mesh file until interrupted."""
        configure_logging(json=log_json)
        config = load_mesh_or_exit(mesh)

        async def main() -> None:
            # SIGTERM and SIGINT end the mesh gracefully: agents fail running work with `shutdown` and withdraw,
            # the embedded nats-server is stopped, the exit code is 0. The handlers are in place before anything
            # starts, so a signal during start-up cannot leave a nats-server behind. A signal only sets `stop`:
            # cancelling would cancel the agents' own tasks too, and they could no longer withdraw.
            started = time.monotonic()
            stop = anyio.Event()
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with anyio.create_task_group() as tg:

                    async def stop_on_signal() -> None:
                        async for signum in signals:
                            name = signal.Signals(signum).name
                            log.info("mesh.stopping", signal=name)
                            err.print(f"{name}: stopping the mesh (agents withdraw) ...")
                            stop.set()

                    tg.start_soon(stop_on_signal)
                    async with run_mesh(config, only=only, url=nats) as running:
                        pid = f" (nats-server pid {running.server.pid})" if running.server is not None else ""
                        console.print(
                            f"mesh up on [bold]{running.url}[/bold]{pid} with {len(running.agents)} agents"
                        )
                        with anyio.move_on_after(seconds if seconds > 0 else None):
                            await stop.wait()
                    tg.cancel_scope.cancel()
            err.print(f"mesh stopped after {time.monotonic() - started:.1f} s")

        _run(main)

    @app.command("ask")
    def ask(
        question: Annotated[str, typer.Argument(help="The question to ask the mesh.")],
        mesh: Annotated[Path, typer.Option(help="The mesh file (for keys and the URL).")] = Path("mesh.toml"),
        nats: Annotated[str | None, typer.Option(help="NATS URL of a running mesh.")] = None,
        deadline_ms: Annotated[int, typer.Option(help="Deadline from now.")] = 30_000,
        max_price_micros: Annotated[
            int, typer.Option("--max-price-micros", "--budget-micros", help="Budget in micro-USD (the whole run).")
        ] = 100_000,
        residency: Annotated[str | None, typer.Option(help="Required residency class.")] = None,
        privacy: Annotated[Privacy, typer.Option(help="Privacy class of the prompt.")] = Privacy.PUBLIC,
        tier: Annotated[list[Tier] | None, typer.Option(help="Preferred tiers (repeatable).")] = None,
        max_tokens: Annotated[int, typer.Option(help="Maximum output tokens.")] = 128,
        strategy: Annotated[
            str | None,
            typer.Option(
                help="Collaboration strategy: single (default), route, cascade, ensemble, moa, debate, split, a "
                "[strategies] name of the mesh file, or KIND:key=value,... (spec/STRATEGIES.md).",
            ),
        ] = None,
        form: Annotated[str, typer.Option(help="Answer form for voting: chat, math or mcq.")] = "chat",
        context_file: Annotated[
            Path | None, typer.Option(help="Private context for the split strategy (stays on device/edge).")
        ] = None,
        wait_ms: Annotated[
            int,
            typer.Option(
                min=0,
                help="How long to wait for an agent that can take the question (default: one advert heartbeat "
                "interval plus 1 s).",
            ),
        ] = DISCOVERY_WAIT_MS,
    ) -> None:
        """Ask one question through the market of a running mesh and print the verified answer.

        ``--max-price-micros`` and ``--deadline-ms`` bound the whole strategy run (all its tasks together)."""
        configure_logging(json=False, level="warning")
        config = load_mesh_or_exit(mesh)
        url = _mesh_url(config, nats)
        try:
            chosen = parse_strategy_option(strategy or config.strategy or "single", config.strategies)
            if isinstance(chosen, SingleSpec) and tier:
                chosen = SingleSpec(tiers=list(tier))
            runner = build_strategy(chosen)  # mesh-file routers are resolved already; --strategy ones from here
            context = context_file.read_text(encoding="utf-8") if context_file is not None else None
        except (StrategyConfigError, OSError) as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        assert config.state_dir is not None
        state = MeshState(Path(config.state_dir))
        trust, identities = load_trust(config, state)
        question_ask = Ask(
            prompt=question,
            form=form,
            context=context,
            max_output_tokens=max_tokens,
            residency=residency,
            privacy=privacy,
        )
        probe = TaskSpec(  # what the first agent must be able to take (any tier: the strategy picks)
            messages=question_ask.messages(),
            constraints=Constraints(
                deadline_ns=now_ns() + deadline_ms * 1_000_000,
                max_price_micros=max_price_micros,
                residency=residency,
                privacy=privacy,
            ),
            max_output_tokens=max_tokens,
            est_input_tokens=max(1, len(question) // 4),
        )

        async def main() -> None:
            with state.outcome_store() as outcomes:
                async with connect_bus(url, name="accord-ask") as bus:
                    requester = Requester(identities[REQUESTER_NAME], bus=bus, trust=trust, outcomes=outcomes)
                    async with anyio.create_task_group() as tg:
                        await tg.start(requester.run)
                        try:
                            # a fresh requester knows nobody: wait for the advert of an agent that could take it
                            await await_candidates(requester, probe, timeout_ms=wait_ms)
                            left_ms = max(1, (probe.constraints.deadline_ns - now_ns()) // 1_000_000)
                            result = await run_strategy(
                                requester,
                                runner,
                                question_ask,
                                budget_micros=max_price_micros,
                                deadline_ms=left_ms,
                            )
                        finally:
                            tg.cancel_scope.cancel()
            console.print(result.answer, markup=False, highlight=False)  # model text, not rich markup
            _print_calls(result, trust)

        _run(main)

    @app.command("agents")
    def agents(
        mesh: Annotated[Path, typer.Option(help="The mesh file (for keys and the URL).")] = Path("mesh.toml"),
        nats: Annotated[str | None, typer.Option(help="NATS URL of a running mesh.")] = None,
        listen_s: Annotated[
            float, typer.Option(help="How long to listen for adverts (one heartbeat interval plus 1 s).")
        ] = DISCOVERY_WAIT_MS / 1000,
    ) -> None:
        """List the agents advertising on a running mesh (their signed, verified cards)."""
        configure_logging(json=False, level="warning")
        config = load_mesh_or_exit(mesh)
        url = _mesh_url(config, nats)
        assert config.state_dir is not None
        trust, identities = load_trust(config, MeshState(Path(config.state_dir)))

        async def main() -> None:
            async with connect_bus(url, name="accord-agents") as bus:
                requester = Requester(identities[REQUESTER_NAME], bus=bus, trust=trust)
                async with anyio.create_task_group() as tg:
                    await tg.start(requester.run)
                    await anyio.sleep(listen_s)
                    tg.cancel_scope.cancel()
            now = now_ns()
            table = Table(title=f"agents on {url}")
            for col in ("name", "id", "tier", "region", "residency", "models", "slots", "load", "$/1k out"):
                table.add_column(col)
            for entry in sorted(requester.registry.live(now=now), key=lambda e: e.advert.name):
                ad = entry.advert
                table.add_row(
                    ad.name,
                    ad.sender[:12],
                    ad.tier.value,
                    ad.region,
                    ",".join(ad.residency) or "-",
                    ",".join(m.name for m in ad.models),
                    str(ad.slots),
                    str(ad.load),
                    ",".join(f"{m.price_out_per_1k_micros / 1e6:.4f}" for m in ad.models),
                )
            console.print(table)

        _run(main)


def _print_calls(result: StrategyResult, trust: TrustStore) -> None:
    """One line per call of a strategy run (who, which tier, model, price, latency), then the totals."""
    now = now_ns()
    for call in result.calls:
        if call.ok and call.agent_id is not None:
            cert = trust.check(call.agent_id, now)
            console.print(
                f"[dim]-- {call.role}: {escape(cert.name)} ({cert.tier.value}, {escape(cert.region)}), model "
                f"{escape(call.model or '')}, ${call.price_micros / 1e6:.6f}, {call.latency_ms:.0f} ms, "
                "attestation verified[/dim]"
            )
        else:
            console.print(f"[dim]-- {call.role}: no answer ({escape(call.failure or '')})[/dim]")
    stopped = f", stopped early: {result.stopped}" if result.stopped else ""
    console.print(
        f"[dim]-- {result.strategy}: {len(result.calls)} calls, spent ${result.spent_micros / 1e6:.6f} of "
        f"${result.budget_micros / 1e6:.6f}, {result.latency_ms:.0f} ms{stopped}[/dim]"
    )


def _run(main: Callable[[], Awaitable[None]]) -> None:
    """Run an async CLI body; typed errors become a message and a non-zero exit, never a traceback.

    An error raised inside a task group arrives wrapped in an exception group: a group of one is unwrapped.
    """
    start = time.monotonic()
    try:
        anyio.run(main)
    except BaseExceptionGroup as group:
        leaf = _single(group)
        if leaf is group or not isinstance(leaf, AccordError | KeyboardInterrupt):
            raise
        _exit_for(leaf, start)
    except (AccordError, KeyboardInterrupt) as exc:
        _exit_for(exc, start)


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested groups of one (``exc`` itself otherwise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _exit_for(exc: BaseException, start: float) -> None:
    if isinstance(exc, KeyboardInterrupt):
        err.print(f"stopped after {time.monotonic() - start:.1f} s")
        return
    if isinstance(exc, TaskFailed):
        detail = f" ({escape(exc.detail)})" if exc.detail else ""
        err.print(f"[red]task failed:[/red] {exc.reason.value}{detail}")
    elif isinstance(exc, StrategyFailed):
        err.print(f"[red]strategy failed:[/red] {escape(str(exc))}")
    elif isinstance(exc, BusError):
        err.print(f"[red]bus error:[/red] {escape(str(exc))}")
    else:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(1) from exc
