"""``accord verify FILE --trust TRUST [--output OUT]``: check an attestation (or a signed frame) and say who
produced what. Exit 0 when it verifies; 1 with the reason code when it is refused (forged, tampered, untrusted,
expired, not the output given); 2 when it could not be checked (FILE, OUT or the trust file cannot be read:
missing, not a regular file, or over :data:`accord.files.MAX_FILE_BYTES`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from accord.cli.keys import fail, format_ns
from accord.files import FileRefusedError, read_capped
from accord.security import (
    Certificate,
    SecurityError,
    TrustStore,
    VerifiedAttestation,
    open_frame,
    verify_attestation,
)

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        file: Annotated[Path, typer.Argument(help="A DSSE attestation (JSON) or a signed frame (msgpack).")],
        trust: Annotated[Path, typer.Option("--trust", help="The trust file (accord keys issue).")],
        output: Annotated[
            Path | None, typer.Option("--output", help="The output the attestation must attest (its bytes).")
        ] = None,
        at_ns: Annotated[int | None, typer.Option(help="Verify as of this time (ns); default now.")] = None,
    ) -> None:
        """Verify an attestation (or a signed frame) against a trust file and print who produced what."""
        err = Console(stderr=True, soft_wrap=True)
        try:
            data = read_capped(file)
            expected = read_capped(output) if output is not None else None
        except FileRefusedError as exc:
            err.print(f"[red]error[/red] cannot read: {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from exc
        now = time.time_ns() if at_ns is None else at_ns
        try:
            store = TrustStore.load(trust)
        except (SecurityError, FileRefusedError) as exc:  # could not check: not a refusal
            err.print(f"[red]error[/red] cannot check: {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from exc
        try:
            if data.lstrip()[:1] == b"{":
                _print_attestation(verify_attestation(data, store, now, output=expected), output)
            else:
                if expected is not None:
                    err.print("[red]error[/red] --output applies to attestations only")
                    raise typer.Exit(2)
                opened = open_frame(data, store, None, now)
                assert opened.certificate is not None
                _print_frame(opened.message.__class__.__name__, opened.signer, opened.certificate, opened.digest)
        except SecurityError as exc:
            err.print("[red]✗ verification failed[/red]", highlight=False)
            raise fail(exc) from exc


def _who(table: Table, signer: str, cert: Certificate) -> None:
    table.add_row("signed by", f"{cert.name} ({signer})")
    residency = ",".join(cert.residency) or "-"
    privacy = ",".join(p.value for p in cert.privacy)
    table.add_row(
        "certified as", f"tier {cert.tier.value}, region {cert.region}, residency {residency}, privacy {privacy}"
    )
    table.add_row("issuer", cert.issuer or "DIRECT TRUST (development only)")


def _print_attestation(v: VerifiedAttestation, output: Path | None) -> None:
    s = v.statement
    table = Table(title="[green]✓ attestation verified[/green]", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    _who(table, v.signer, v.certificate)
    table.add_row("model", f"{s.model} (backend {s.backend})")
    table.add_row("task", f"{s.task_id} attempt {s.attempt}, for requester {s.requester}")
    table.add_row("at", format_ns(s.ts))
    table.add_row("usage", f"{s.usage.input_tokens} input + {s.usage.output_tokens} output tokens")
    table.add_row(
        "timings", f"queued {s.timings.queued_ms} ms, ttft {s.timings.ttft_ms} ms, total {s.timings.total_ms} ms"
    )
    table.add_row("prompt sha256", s.prompt_digest)
    table.add_row("award sha256", s.award_digest)
    checked = f"matches {output}" if v.output_checked else "not checked (pass --output FILE)"
    table.add_row("output sha256", f"{v.output_digest} ({checked})")
    Console().print(table)


def _print_frame(kind: str, signer: str, cert: Certificate, digest: str) -> None:
    table = Table(title=f"[green]✓ {kind} frame verified[/green]", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    _who(table, signer, cert)
    table.add_row("payload sha256", digest)
    Console().print(table)
