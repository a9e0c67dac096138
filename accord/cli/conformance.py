"""``accord conformance``: drive a running agent through the protocol over NATS and report every check.

    accord conformance --nats URL --agent AGENT_ID --trust TRUST.json --key KIT.seed \\
        [--creds FILE | --nkey-seed FILE] [--junit out.xml] [--json out.json] [--timeout-ms N] [--check ID]...

The kit acts as a requester with its own key (``--key``); the operator certifies that key in the agent's trust
file (``accord keys issue``), and ``--trust`` must hold the agent's certificate. Exit 0 when every check passed
or does not apply, 1 when any failed, 2 when the kit could not run (bad files, unknown check, no connection, or
a precondition: the agent is not on the mesh, or ignores the kit's Tasks because it does not trust the kit's
key).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from accord.bus.base import BusError
from accord.cli.logging import configure_logging
from accord.conformance import (
    KitConfig,
    all_checks,
    print_report,
    run_conformance,
    select_checks,
    to_json,
    to_junit,
)
from accord.files import FileRefusedError
from accord.security import KeyKind, SecurityError, TrustStore, load_identity, public_key_of
from accord.security.keyfile import check_private

__all__ = ["register"]


def _setup_error(text: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[red]error[/red] {escape(text)}", highlight=False)
    return typer.Exit(2)


def _list_checks() -> None:
    table = Table(title="Accord conformance checks", title_justify="left")
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("spec", no_wrap=True)
    table.add_column("what it verifies", overflow="fold")
    for spec in all_checks():
        table.add_row(spec.id, ", ".join(f"§{s}" for s in spec.sections), spec.title)
    Console().print(table)


def _config(
    agent: str, trust_file: Path, key: Path, checks: list[str] | None, timings: dict[str, int]
) -> KitConfig:
    if public_key_of(agent, KeyKind.USER) is None:
        raise _setup_error(f"{agent!r} is not an agent id (U..., 56 characters)")
    try:
        identity = load_identity(key, kind=KeyKind.USER)
        trust = TrustStore.load(trust_file)
    except (SecurityError, FileRefusedError) as exc:
        raise _setup_error(str(exc)) from exc
    now = time.time_ns()
    for who, agent_id in (("the agent", agent), ("the kit's key", identity.id)):
        try:
            trust.check(agent_id, now)
        except SecurityError as exc:
            raise _setup_error(
                f"the trust file has no valid certificate for {who} {agent_id} ({exc.reason.value}); "
                "issue one with `accord keys issue`"
            ) from exc
    try:
        selected = tuple(c.id for c in select_checks(tuple(checks) if checks else None))
    except ValueError as exc:
        raise _setup_error(str(exc)) from exc
    return KitConfig(agent_id=agent, identity=identity, trust=trust, checks=selected, **timings)


def register(app: typer.Typer) -> None:
    @app.command("conformance")
    def conformance(
        nats: Annotated[str | None, typer.Option("--nats", help="NATS URL of the mesh the agent is on.")] = None,
        agent: Annotated[str | None, typer.Option("--agent", help="Id (U...) of the agent under test.")] = None,
        trust: Annotated[
            Path | None, typer.Option("--trust", help="Trust file with the agent's and the kit's certificates.")
        ] = None,
        key: Annotated[
            Path | None, typer.Option("--key", help="The kit's key file; the agent must trust its certificate.")
        ] = None,
        creds: Annotated[Path | None, typer.Option("--creds", help="NATS credentials file (JWT + seed).")] = None,
        nkey_seed: Annotated[
            Path | None, typer.Option("--nkey-seed", help="NATS nkey seed file for the connection.")
        ] = None,
        junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write a JSON report here.")] = None,
        timeout_ms: Annotated[int, typer.Option(help="Longest wait for a reply the agent owes.", min=100)] = 3000,
        quiet_ms: Annotated[
            int, typer.Option(help="How long to watch for a frame that must not come.", min=50)
        ] = 500,
        bid_window_ms: Annotated[int, typer.Option(help="Bid window of the kit's Tasks.", min=20)] = 250,
        advert_timeout_ms: Annotated[
            int, typer.Option(help="How long to wait for the agent's first Advertise.", min=100)
        ] = 15_000,
        check: Annotated[
            list[str] | None, typer.Option("--check", help="Run only this check (repeatable).")
        ] = None,
        list_checks: Annotated[bool, typer.Option("--list", help="List the checks and exit.")] = False,
        log_level: Annotated[str, typer.Option(help="Log level of the kit's own logs (stderr).")] = "warning",
    ) -> None:
        """Check that a running agent speaks the Accord protocol: a table of checks, exit 1 on any failure."""
        if list_checks:
            _list_checks()
            return
        given = (("--nats", nats), ("--agent", agent), ("--trust", trust), ("--key", key))
        missing = [name for name, value in given if not value]
        if missing:
            raise _setup_error(f"missing {', '.join(missing)} (see accord conformance --help)")
        if creds is not None and nkey_seed is not None:
            raise _setup_error("give --creds or --nkey-seed, not both")
        assert nats is not None and agent is not None and trust is not None and key is not None
        configure_logging(level=log_level)
        timings = {
            "timeout_ms": timeout_ms,
            "quiet_ms": quiet_ms,
            "bid_window_ms": bid_window_ms,
            "advert_timeout_ms": advert_timeout_ms,
        }
        config = _config(agent, trust, key, check, timings)
        seed: str | None = None
        try:  # secrets both: read (the seed) or checked (the creds file nats-py reads) like every key file
            if nkey_seed is not None:
                seed = load_identity(nkey_seed, kind=KeyKind.USER).seed
            if creds is not None:
                check_private(creds)
        except (SecurityError, FileRefusedError) as exc:
            flag = "--nkey-seed" if nkey_seed is not None else "--creds"  # not both (checked above)
            raise _setup_error(f"{flag}: {exc}") from exc
        run = functools.partial(run_conformance, config, nats, nkey_seed=seed, credentials=creds)
        try:
            report = anyio.run(run)
        except BusError as exc:
            raise _setup_error(f"cannot run over NATS at {nats}: {exc}") from exc
        if report.precondition is None:
            print_report(report, Console())
        try:
            if junit is not None:
                junit.write_bytes(to_junit(report))
            if json_out is not None:
                json_out.write_bytes(to_json(report))
        except OSError as exc:
            raise _setup_error(f"cannot write the report: {exc}") from exc
        if report.precondition is not None:  # nothing was checked: one reason, not a table of failures
            raise _setup_error(f"cannot run the checks: {report.precondition}")
        if not report.ok:
            raise typer.Exit(1)
