"""``accord keys ...``: operator and agent keys, certificates, revocations and the trust file.

    accord keys new-operator FILE          an operator key (seed file, mode 0600); prints its id (O...)
    accord keys new-agent FILE             an agent key (usable as nats-py ``nkeys_seed``); prints its id (U...)
    accord keys issue --operator-key F --agent ID --name N --tier T --region R --trust TRUST
    accord keys revoke --operator-key F --trust TRUST (--serial N | --agent ID)...
    accord keys show FILE                  a key file (its public id only) or a trust file

Every file written is owner-only (0600). Failures print the reason code and exit 1; a file refused unread (a key
file group or others may access, a path that is no regular file, a file over its cap) exits 2.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from accord.cli.common import refused_file
from accord.errors import LocalProtocolError
from accord.files import FileRefusedError, open_regular
from accord.protocol.messages import Privacy, Tier
from accord.security import (
    Certificate,
    Identity,
    KeyFileError,
    KeyKind,
    RevocationList,
    SecurityError,
    TrustStore,
    load_identity,
    public_key_of,
    save_identity,
    sign_certificate,
    sign_revocations,
)
from accord.security.errors import Reason
from accord.security.keyfile import key_file_errors

__all__ = ["fail", "format_ns", "register"]

_DAY_NS = 24 * 3600 * 1_000_000_000
_I64_MAX = 2**63 - 1


def format_ns(ns: int) -> str:
    """An absolute ns time as ISO-8601 UTC (seconds precision)."""
    if ns >= _I64_MAX // 2:
        return "never"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_Failure = SecurityError | LocalProtocolError | FileRefusedError
_FAILURES = (SecurityError, LocalProtocolError, FileRefusedError)


def fail(exc: _Failure) -> typer.Exit:
    text = f"invalid: {exc}" if isinstance(exc, LocalProtocolError) else str(exc)
    Console(stderr=True, soft_wrap=True).print(f"[red]error[/red] {escape(text)}", highlight=False)
    return typer.Exit(2 if refused_file(exc) else 1)


def _load_trust(path: Path, *, create_for: Identity | None = None) -> TrustStore:
    if not path.exists() and create_for is not None:
        return TrustStore([create_for.id])
    return TrustStore.load(path)


def _agent_id(value: str) -> str:
    """An agent id given directly, or read (public part only) from an agent seed file."""
    if public_key_of(value, KeyKind.USER) is not None:
        return value
    path = Path(value)
    if path.exists():
        return load_identity(path, kind=KeyKind.USER).id
    raise KeyFileError(Reason.BAD_KEY_FILE, f"{value!r} is neither an agent id (U...) nor an agent key file")


def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(help="Keys, certificates, revocations and trust files.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    @keys_app.command("new-operator")
    def new_operator(
        out: Annotated[Path, typer.Argument(help="Seed file to write (mode 0600).")],
        force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
    ) -> None:
        """Create an operator key (issues certificates and revocation lists)."""
        _new_key(out, KeyKind.OPERATOR, force)

    @keys_app.command("new-agent")
    def new_agent(
        out: Annotated[Path, typer.Argument(help="Seed file to write (mode 0600).")],
        force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
    ) -> None:
        """Create an agent key. The file is an nkey seed: pass it to nats-py as ``nkeys_seed`` too."""
        _new_key(out, KeyKind.USER, force)

    @keys_app.command("issue")
    def issue(
        operator_key: Annotated[Path, typer.Option("--operator-key", help="The operator's seed file.")],
        agent: Annotated[str, typer.Option("--agent", help="Agent id (U...) or the agent's seed file.")],
        name: Annotated[str, typer.Option(help="The agent's stable name (kept across key rotation).")],
        trust: Annotated[Path, typer.Option("--trust", help="Trust file to add the certificate to.")],
        tier: Annotated[Tier, typer.Option(help="device, edge or cloud.")] = Tier.CLOUD,
        region: Annotated[str, typer.Option(help="Region token, e.g. eu-central.")] = "local",
        residency: Annotated[
            list[str] | None, typer.Option("--residency", help="A residency class it may serve (repeat).")
        ] = None,
        privacy: Annotated[
            list[Privacy] | None, typer.Option("--privacy", help="A privacy class it may serve (repeat).")
        ] = None,
        days: Annotated[int, typer.Option(min=1, help="Validity in days from --not-before.")] = 365,
        not_before_ns: Annotated[int | None, typer.Option(help="Start of validity (ns); default now.")] = None,
        serial: Annotated[int | None, typer.Option(min=0, help="Certificate serial; default random.")] = None,
    ) -> None:
        """Issue a certificate for an agent key and add it to a trust file (created if missing)."""
        try:
            operator = load_identity(operator_key, kind=KeyKind.OPERATOR)
            store = _load_trust(trust, create_for=operator)
            if operator.id not in store.operators:
                store.add_operator(operator.id)
            start = time.time_ns() if not_before_ns is None else not_before_ns
            cert = Certificate(
                serial=secrets.randbits(63) if serial is None else serial,
                agent_id=_agent_id(agent),
                name=name,
                tier=tier,
                region=region,
                residency=list(residency or []),
                privacy=list(privacy or [Privacy.PUBLIC]),
                not_before_ns=start,
                not_after_ns=min(start + days * _DAY_NS, _I64_MAX),
                issuer=operator.id,
            )
            added = store.add_certificate(sign_certificate(cert, operator))
            store.save(trust)
        except _FAILURES as exc:
            raise fail(exc) from exc
        Console().print(
            f"issued certificate serial {added.serial} for [bold]{added.name}[/bold] ({added.agent_id}), "
            f"valid {format_ns(added.not_before_ns)} to {format_ns(added.not_after_ns)}, into {trust}",
            highlight=False,
        )

    @keys_app.command("revoke")
    def revoke(
        operator_key: Annotated[Path, typer.Option("--operator-key", help="The operator's seed file.")],
        trust: Annotated[Path, typer.Option("--trust", help="Trust file holding the revocation list.")],
        serial: Annotated[
            list[int] | None, typer.Option("--serial", help="Revoke this certificate of yours (repeat).")
        ] = None,
        agent: Annotated[
            list[str] | None, typer.Option("--agent", help="Revoke this key everywhere (repeat).")
        ] = None,
    ) -> None:
        """Add revocations to the operator's signed revocation list in a trust file."""
        if not serial and not agent:
            Console(stderr=True, soft_wrap=True).print("[red]error[/red] give at least one --serial or --agent")
            raise typer.Exit(2)
        try:
            operator = load_identity(operator_key, kind=KeyKind.OPERATOR)
            store = TrustStore.load(trust)
            current = store.revocations(operator.id)
            agents = [_agent_id(a) for a in agent or []]
            crl = RevocationList(
                issuer=operator.id,
                number=0 if current is None else current.number + 1,
                issued_ns=time.time_ns(),
                serials=sorted({*(current.serials if current else []), *(serial or [])}),
                agents=sorted({*(current.agents if current else []), *agents}),
            )
            store.add_revocations(sign_revocations(crl, operator))
            store.save(trust)
        except _FAILURES as exc:
            raise fail(exc) from exc
        Console().print(
            f"revocation list #{crl.number} of {operator.id}: serials {crl.serials}, agents {crl.agents}",
            highlight=False,
            markup=False,
        )

    @keys_app.command("show")
    def show(
        file: Annotated[Path, typer.Argument(help="A seed file or a trust file.")],
        at_ns: Annotated[int | None, typer.Option(help="Evaluate certificates at this time (ns).")] = None,
    ) -> None:
        """Show a key file's public id (never the secret) or a trust file's contents and status."""
        now = time.time_ns() if at_ns is None else at_ns
        try:
            with key_file_errors(file), open_regular(file) as handle:  # the first byte, before the key file checks
                head = handle.read(1)
            if head == b"{":
                _show_trust(TrustStore.load(file), now)
            else:
                identity = load_identity(file)
                Console().print(f"{identity.kind.name.lower()} key {identity.id}", highlight=False)
        except _FAILURES as exc:
            raise fail(exc) from exc


def _new_key(out: Path, kind: KeyKind, force: bool) -> None:
    identity = Identity.generate(kind)
    try:
        save_identity(identity, out, force=force)
    except SecurityError as exc:
        raise fail(exc) from exc
    typer.echo(identity.id)


def _show_trust(store: TrustStore, now_ns: int) -> None:
    console = Console()
    console.print(f"trust anchors (operators): {', '.join(store.operators) or 'none'}", highlight=False)
    entries = store.certificates(now_ns)
    console.print(f"{len(entries)} certificate(s) at {format_ns(now_ns)}:", highlight=False)
    for entry in entries:
        c = entry.certificate
        style = "green" if entry.status == "valid" else "red"
        table = Table(show_header=False, title=f"[{style}]{entry.status}[/{style}] [bold]{c.name}[/bold]")
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        table.add_row("agent id", c.agent_id)
        table.add_row("tier / region", f"{c.tier.value} / {c.region}")
        table.add_row("residency", ",".join(c.residency) or "-")
        table.add_row("privacy", ",".join(p.value for p in c.privacy))
        table.add_row("valid", f"{format_ns(c.not_before_ns)} .. {format_ns(c.not_after_ns)}")
        table.add_row("serial", str(c.serial))
        table.add_row("issuer", c.issuer or "DIRECT TRUST (development only)")
        console.print(table)
    for crl in store.all_revocations():
        console.print(
            f"revocations #{crl.number} by {crl.issuer} ({format_ns(crl.issued_ns)}): "
            f"serials {crl.serials or '-'}, agents {crl.agents or '-'}",
            highlight=False,
            markup=False,
        )
