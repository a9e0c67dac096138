"""``accord spec ...``: the spec artefacts (vectors, schemas) generated from and checked against the types."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    spec_app = typer.Typer(help="Spec artefacts: JSON Schemas and golden vectors.", no_args_is_help=True)
    app.add_typer(spec_app, name="spec")

    @spec_app.command("version")
    def version() -> None:
        """Print the protocol version this build speaks."""
        from accord.protocol import PROTOCOL_VERSION

        typer.echo(f"accord protocol v{PROTOCOL_VERSION}")
