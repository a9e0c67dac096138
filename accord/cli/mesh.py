"""``accord up``, ``ask``, ``agents``, ``ps``, ``down``: run a mesh from its file and talk to it.

``accord ask`` is made for scripts: stdout is the answer's exact text (``--json``: the answer with who gave it
and the attestation), everything else goes to stderr; ``-`` reads the question from stdin.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from accord.cli.common import (
    Level,
    LogJson,
    LogLevel,
    MeshOption,
    NatsOption,
    agent_credentials,
    check_own_creds,
    console,
    err,
    fail,
    load_mesh_file,
    mesh_bus,
    mesh_credentials,
    run_cli,
)
from accord.cli.logging import configure_logging
from accord.errors import AccordError
from accord.files import FileRefusedError, read_capped
from accord.httpapi.account import answer_json, main_outcome
from accord.logs import get_logger
from accord.mesh.config import MeshConfig
from accord.mesh.discovery import DISCOVERY_WAIT_MS, await_candidates, discover
from accord.mesh.lock import MeshLocks
from accord.mesh.run import run_mesh
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.protocol.messages import Constraints, Privacy, Tier
from accord.protocol.pricing import estimate_prompt_tokens
from accord.protocol.requester import TaskSpec
from accord.runtime.agent import Agent
from accord.runtime.requester import Requester, check_frame_size
from accord.runtime.timers import now_ns
from accord.security import Identity, SecurityError, TrustStore, load_identity
from accord.strategies import (
    Ask,
    Single,
    StrategyConfigError,
    StrategyResult,
    build_strategy,
    parse_strategy_option,
    run_strategy,
)
from accord.strategies.parsing import SingleSpec, SplitSpec

__all__ = ["register"]

log = get_logger(__name__)


class Form(enum.StrEnum):
    """How a strategy compares answers."""

    CHAT = "chat"
    MATH = "math"
    MCQ = "mcq"


MeshFile = Annotated[
    Path, typer.Argument(envvar="ACCORD_MESH", help="The mesh TOML file (default $ACCORD_MESH, else mesh.toml).")
]


def _state(config: MeshConfig) -> MeshState:
    assert config.state_dir is not None
    return MeshState(Path(config.state_dir))


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        mesh: MeshFile = Path("mesh.toml"),
        only: Annotated[list[str] | None, typer.Option(help="Run only these agents (repeatable).")] = None,
        nats: NatsOption = None,
        seconds: Annotated[float, typer.Option(help="Stop after this long (0: until Ctrl-C).", min=0)] = 0.0,
        log_json: LogJson = False,
        log_level: LogLevel = Level.INFO,
    ) -> None:
        """Run the agents of a mesh file until Ctrl-C, SIGTERM or `accord down` (exit 0)."""
        configure_logging(json=log_json, level=log_level)
        config = load_mesh_file(mesh)
        credentials = mesh_credentials(config)
        agent_credentials(config, only, nats)
        say = err.print if not log_json else _silent  # with --log-json, stderr carries only JSON lines

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
                            say(f"{name}: stopping the mesh (agents withdraw) ...")
                            stop.set()

                    tg.start_soon(stop_on_signal)
                    async with run_mesh(config, only=only, url=nats, credentials=credentials) as running:
                        pid = f" (nats-server pid {running.server.pid})" if running.server is not None else ""
                        log.info(
                            "mesh.ready",
                            url=running.url,
                            agents=len(running.agents),
                            nats_server_pid=running.server.pid if running.server else None,
                        )
                        say(f"mesh up on [bold]{running.url}[/bold]{pid} with {len(running.agents)} agents")
                        with anyio.move_on_after(seconds if seconds > 0 else None):
                            await _until_stopped(stop, running.agents, say)
                    tg.cancel_scope.cancel()
            log.info("mesh.stopped", seconds=round(time.monotonic() - started, 1))
            say(f"mesh stopped after {time.monotonic() - started:.1f} s")

        run_cli(main)

    @app.command("ask")
    def ask(
        question: Annotated[str, typer.Argument(help="The question; - reads it from stdin.")] = "",
        file: Annotated[Path | None, typer.Option("--file", help="Read the question from this file.")] = None,
        mesh: MeshOption = Path("mesh.toml"),
        nats: NatsOption = None,
        key: Annotated[
            Path | None,
            typer.Option(
                help="Sign as this requester key (certified in the mesh's trust file: `accord keys issue`)."
            ),
        ] = None,
        json_out: Annotated[
            bool, typer.Option("--json", help="Print the answer, agent, model, price and attestation as JSON.")
        ] = False,
        save_attestation: Annotated[
            Path | None,
            typer.Option(help="Write the answer's attestation here (for `accord verify ... --output ANSWER`)."),
        ] = None,
        deadline_ms: Annotated[int, typer.Option(min=1, help="Deadline, from the first announce.")] = 30_000,
        max_price_micros: Annotated[
            int,
            typer.Option(
                "--max-price-micros", "--budget-micros", min=0, help="Budget in micro-USD (the whole run)."
            ),
        ] = 100_000,
        residency: Annotated[str | None, typer.Option(help="Required residency class.")] = None,
        privacy: Annotated[Privacy, typer.Option(help="Privacy class of the prompt.")] = Privacy.PUBLIC,
        tier: Annotated[list[Tier] | None, typer.Option(help="Preferred tiers (repeatable).")] = None,
        max_tokens: Annotated[int, typer.Option(min=1, help="Maximum output tokens.")] = 128,
        strategy: Annotated[
            str | None,
            typer.Option(
                help="Collaboration strategy: single (default), route, cascade, ensemble, moa, debate, split, a "
                "[strategies] name of the mesh file, or KIND:key=value,... (spec/STRATEGIES.md).",
            ),
        ] = None,
        form: Annotated[Form, typer.Option(help="Answer form for voting.")] = Form.CHAT,
        agent: Annotated[
            str | None,
            typer.Option(
                "--agent",
                help="Ask this agent (its certified name or its id) directly: an award from the price sheet it "
                "advertises, no bid round.",
            ),
        ] = None,
        context_file: Annotated[
            Path | None, typer.Option(help="Private context for the split strategy (stays on device/edge).")
        ] = None,
        creds: Annotated[
            Path | None,
            typer.Option(
                "--creds",
                help="Connect with this NATS .creds file, a JWT user of the requester's own key (decentralised "
                "auth); it wins over the mesh file's [bus] creds_file.",
            ),
        ] = None,
        wait_ms: Annotated[
            int,
            typer.Option(
                min=0,
                help="How long to wait for an agent that can take the question (agents that are up answer at "
                "once; default: one advert heartbeat interval plus 1 s, for agents still starting).",
            ),
        ] = DISCOVERY_WAIT_MS,
        log_json: LogJson = False,
        log_level: LogLevel = Level.WARNING,
    ) -> None:
        """Ask one question through the market of a running mesh and print the verified answer.

        ``--max-price-micros`` and ``--deadline-ms`` bound the whole strategy run (all its tasks together)."""
        configure_logging(json=log_json, level=log_level)
        text = _question(question, file)
        config = load_mesh_file(mesh)
        try:
            chosen = parse_strategy_option(strategy or config.strategy or "single", config.strategies)
            if isinstance(chosen, SingleSpec) and tier:
                chosen = SingleSpec(tiers=list(tier))
            if context_file is not None and not isinstance(chosen, SplitSpec):
                raise StrategyConfigError("--context-file is read by the split strategy only (--strategy split)")
            if agent is not None and not isinstance(chosen, SingleSpec):
                raise StrategyConfigError("--agent asks one agent: it goes with the single strategy only")
            runner = build_strategy(chosen)  # mesh-file routers are resolved already; --strategy ones from here
            single_tiers = tuple(chosen.tiers) if isinstance(chosen, SingleSpec) else ()
            context = read_capped(context_file).decode("utf-8") if context_file is not None else None
        except (StrategyConfigError, FileRefusedError, UnicodeDecodeError) as exc:
            fail(str(exc), 2)
        question_ask = Ask(
            prompt=text,
            form=form.value,
            context=context,
            max_output_tokens=max_tokens,
            residency=residency,
            privacy=privacy,
        )
        probe = TaskSpec(  # what the first agent must be able to take (any tier: the strategy picks)
            messages=question_ask.messages(),
            constraints=Constraints(
                deadline_ns=now_ns() + deadline_ms * 1_000_000,  # rebased at each look: from the announce
                max_price_micros=max_price_micros,
                residency=residency,
                privacy=privacy,
            ),
            max_output_tokens=max_tokens,
            est_input_tokens=estimate_prompt_tokens(question_ask.messages()),
        )
        bus_to = mesh_bus(config, nats)

        async def main() -> None:
            check_frame_size(probe)  # a prompt too large for a frame fails here, not as no_bids
            trust, identity = _requester(config, key)
            if creds is not None:
                check_own_creds(creds, identity)
            named = _agent_ids(trust, agent) if agent is not None else None
            assert config.state_dir is not None
            with MeshState(Path(config.state_dir)).outcome_store() as outcomes:  # the record of earlier asks
                async with bus_to.connect(identity, name="accord-ask", own_creds=creds) as bus:
                    requester = Requester(
                        identity, bus=bus, trust=trust, outcomes=outcomes, authenticated_bus=bus_to.authenticated
                    )
                    async with anyio.create_task_group() as tg:
                        await tg.start(requester.run)
                        try:
                            found = await await_candidates(requester, probe, timeout_ms=wait_ms, among=named)
                            result = await run_strategy(
                                requester,
                                runner if named is None else Single(single_tiers, agent=found[0]),
                                question_ask,
                                budget_micros=max_price_micros,
                                deadline_ms=deadline_ms,
                            )
                        finally:
                            tg.cancel_scope.cancel()
            _print_answer(result, trust, json_out=json_out, save_attestation=save_attestation)

        run_cli(main)

    @app.command("agents")
    def agents(
        mesh: MeshOption = Path("mesh.toml"),
        nats: NatsOption = None,
        listen_s: Annotated[
            float | None,
            typer.Option(
                min=0,
                help="Listen this long for adverts (default: until every agent that answers a service PING "
                "has advertised, or a heartbeat interval plus 1 s when none answers).",
            ),
        ] = None,
        json_out: Annotated[bool, typer.Option("--json", help="One JSON object per agent.")] = False,
    ) -> None:
        """List the agents advertising on a running mesh (their signed, verified cards)."""
        configure_logging(json=False, level="warning")
        config = load_mesh_file(mesh)
        bus_to = mesh_bus(config, nats)

        async def main() -> None:
            trust, identities = load_trust(config, _state(config))
            me = identities[REQUESTER_NAME]
            async with bus_to.connect(me, name="accord-agents") as bus:
                requester = Requester(me, bus=bus, trust=trust, authenticated_bus=bus_to.authenticated)
                async with anyio.create_task_group() as tg:
                    await tg.start(requester.run)
                    if listen_s is not None:
                        await anyio.sleep(listen_s)
                    elif not await discover(requester, timeout_ms=2_000):
                        await anyio.sleep(DISCOVERY_WAIT_MS / 1000)  # nobody answered: wait for a heartbeat
                    tg.cancel_scope.cancel()
            _print_agents(requester, bus_to.url, json_out=json_out)

        run_cli(main)

    @app.command("ps")
    def ps(mesh: MeshFile = Path("mesh.toml")) -> None:
        """What of this mesh runs on this machine: each process, what it runs and the bus URL (exit 1: nothing)."""
        config = load_mesh_file(mesh)
        holders = MeshLocks(_state(config).directory).holders()
        if not holders:
            err.print(f"nothing of {mesh} runs")
            raise typer.Exit(1)
        table = Table(title=f"{mesh}: running")
        for col in ("pid", "runs", "bus"):
            table.add_column(col)
        by_pid: dict[int, list[str]] = {}
        urls: dict[int, str] = {}
        for holder in holders:
            by_pid.setdefault(holder.pid, []).append(holder.name.removeprefix("agent-"))
            if holder.url:
                urls[holder.pid] = holder.url
        for pid, names in sorted(by_pid.items()):
            table.add_row(str(pid), ", ".join(names), urls.get(pid, "-"))
        console.print(table)

    @app.command("down")
    def down(
        mesh: MeshFile = Path("mesh.toml"),
        timeout_s: Annotated[float, typer.Option(min=0, help="How long to wait for them to stop.")] = 20.0,
    ) -> None:
        """Stop every process running part of this mesh (SIGTERM: agents withdraw) and wait until they are gone."""
        config = load_mesh_file(mesh)
        locks = MeshLocks(_state(config).directory)
        pids = sorted({h.pid for h in locks.holders() if h.pid > 0})
        if not pids:
            err.print(f"nothing of {mesh} runs")
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        end = time.monotonic() + timeout_s
        while locks.holders() and time.monotonic() < end:
            time.sleep(0.05)
        left = sorted({h.pid for h in locks.holders()})
        if left:
            fail(f"still running after {timeout_s:.0f} s: pid {', '.join(map(str, left))}")
        err.print(f"stopped {len(pids)} process{'es' if len(pids) > 1 else ''} of {mesh}")


def _silent(*_args: object, **_kw: object) -> None:
    """Nothing: with ``--log-json`` the log events say it."""


async def _until_stopped(stop: anyio.Event, agents: list[Agent], say: Callable[[str], None]) -> None:
    """Until ``stop`` is set, or every agent has left (a backend that broke while serving: its agent withdrew,
    saying why). Raises AccordError when no agent is left."""
    async with anyio.create_task_group() as tg:

        async def watch(agent: Agent) -> None:
            await agent.done.wait()
            if agent.left_because and not stop.is_set():
                say(f"agent {agent.profile.name} left the mesh: {agent.left_because}")
            if all(a.done.is_set() for a in agents):
                tg.cancel_scope.cancel()

        for agent in agents:
            tg.start_soon(watch, agent)
        await stop.wait()
        tg.cancel_scope.cancel()
    if not stop.is_set():
        causes = "; ".join(f"{a.profile.name}: {a.left_because}" for a in agents if a.left_because)
        raise AccordError(f"every agent left the mesh ({causes or 'no cause given'})")


def _question(question: str, file: Path | None) -> str:
    """The question from the argument, ``-`` (stdin) or ``--file``; a usage error when there is none."""
    if file is not None and question:
        fail("give the question as an argument, as - (stdin) or with --file, not two of them", 2)
    try:
        if file is not None:
            text = read_capped(file).decode("utf-8")
        elif question == "-":
            text = sys.stdin.read()
        else:
            text = question
    except (FileRefusedError, OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the question: {exc}", 2)
    if not text.strip():
        fail("the question is empty", 2)
    return text


def _requester(config: MeshConfig, key: Path | None) -> tuple[TrustStore, Identity]:
    """The trust store and the identity `ask` signs with: ``--key``, else the mesh's own requester key. With a
    trust file, the key must be certified in it (an uncertified requester would only meet silence)."""
    state = _state(config)
    trust, identities = load_trust(config, state)
    chosen = load_identity(key) if key is not None else identities[REQUESTER_NAME]
    try:
        trust.check(chosen.id, now_ns())
    except SecurityError as exc:
        which = f"--key {key}" if key is not None else f"the mesh's requester key ({state.directory}/keys)"
        fail(
            f"{which}: {chosen.id} is not certified by {config.trust.file} ({exc.reason.value}); certify it with "
            "`accord keys issue --operator-key OP.seed --agent KEY.seed --name NAME --trust TRUST.json` "
            "(before `accord up`) and pass --key KEY.seed"
        )
    return trust, chosen


def _agent_ids(trust: TrustStore, agent: str) -> list[str]:
    """The ids ``--agent`` names: the id itself, or every key certified now under that name (a key rotation
    certifies two); exits 2 when the trust store knows no such agent."""
    now = now_ns()
    valid = [s.certificate for s in trust.certificates(now) if s.status == "valid"]
    ids = sorted({c.agent_id for c in valid if agent in (c.agent_id, c.name)})
    if not ids:
        fail(f"--agent {agent}: no agent of that name or id is certified in this mesh's trust store", 2)
    return ids


def _print_answer(
    result: StrategyResult, trust: TrustStore, *, json_out: bool, save_attestation: Path | None
) -> None:
    """stdout: the answer's exact text (a newline added only on a terminal) or ``--json``; stderr: who answered."""
    main = main_outcome(result)
    if save_attestation is not None and main is not None:
        save_attestation.write_bytes(main.result.attestation)
    if json_out:
        assert main is not None
        sys.stdout.write(json.dumps(answer_json(result.answer, main, result)) + "\n")
    else:
        sys.stdout.write(result.answer + ("\n" if sys.stdout.isatty() else ""))
    sys.stdout.flush()
    _print_calls(result, trust)


def _print_calls(result: StrategyResult, trust: TrustStore) -> None:
    """One line per call of a strategy run (who, which tier, model, price, latency), then the totals (stderr)."""
    now = now_ns()
    for call in result.calls:
        if call.ok and call.agent_id is not None:
            cert = trust.check(call.agent_id, now)
            err.print(
                f"[dim]-- {call.role}: {escape(cert.name)} ({cert.tier.value}, {escape(cert.region)}), model "
                f"{escape(call.model or '')}, ${call.price_micros / 1e6:.6f}, {call.latency_ms:.0f} ms, "
                "attestation verified[/dim]",
                highlight=False,
            )
        else:
            err.print(f"[dim]-- {call.role}: no answer ({escape(call.failure or '')})[/dim]", highlight=False)
    stopped = f", stopped early: {result.stopped}" if result.stopped else ""
    err.print(
        f"[dim]-- {result.strategy}: {len(result.calls)} calls, spent ${result.spent_micros / 1e6:.6f} of "
        f"${result.budget_micros / 1e6:.6f}, {result.latency_ms:.0f} ms{stopped}[/dim]",
        highlight=False,
    )


def _print_agents(requester: Requester, url: str, *, json_out: bool) -> None:
    entries = sorted(requester.registry.live(now=now_ns()), key=lambda e: e.advert.name)
    if json_out:
        for entry in entries:
            ad = entry.advert
            row: dict[str, object] = {"name": ad.name, "id": ad.sender, "tier": ad.tier.value, "region": ad.region}
            row.update({"residency": list(ad.residency), "models": [m.name for m in ad.models]})
            row.update({"slots": ad.slots, "load": ad.load})
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(title=f"agents on {url}")
    for col in ("name", "id", "tier", "region", "residency", "models", "slots", "load", "$/1k out"):
        table.add_column(col, no_wrap=col == "id")
    for entry in entries:
        ad = entry.advert
        table.add_row(
            ad.name,
            ad.sender,  # the whole id: it is what --agent, trust files and logs name
            ad.tier.value,
            ad.region,
            ",".join(ad.residency) or "-",
            ",".join(m.name for m in ad.models),
            str(ad.slots),
            str(ad.load),
            ",".join(f"{m.price_out_per_1k_micros / 1e6:.4f}" for m in ad.models),
        )
    console.print(table)
