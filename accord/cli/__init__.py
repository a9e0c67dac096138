"""The ``accord`` command line. Each area registers its commands from its own module (see ``_AREAS``)."""

from __future__ import annotations

import importlib

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="accord",
    help="Accord: LLMs on devices, edge boxes and clouds collaborating on tasks over NATS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules under accord.cli that define ``register(app: typer.Typer) -> None``.
_AREAS: tuple[str, ...] = (
    "spec",
    "keys",
    "verify",
    "interop",
    "mesh",
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
