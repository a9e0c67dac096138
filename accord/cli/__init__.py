"""The ``accord`` command line. Each area registers its commands from its own module (see ``_AREAS``)."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

import accord

__all__ = ["app", "main"]

app = typer.Typer(
    name="accord",
    help="Accord: LLMs on devices, edge boxes and clouds collaborating on tasks over NATS.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"accord {accord.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Accord: LLMs on devices, edge boxes and clouds collaborating on tasks over NATS.

    Environment: ACCORD_MESH (the mesh file), NATS_URL (a running mesh's bus)."""


# Modules under accord.cli that define ``register(app: typer.Typer) -> None``.
_AREAS: tuple[str, ...] = (
    "spec",
    "keys",
    "verify",
    "interop",
    "mesh",
    "serve",
    "demo",
    "conformance",
    "router",
    "bench",
    "traces",
)


def _register_all() -> None:
    for area in _AREAS:
        module = importlib.import_module(f"accord.cli.{area}")
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()
