"""``accord traces``: fine-tuning data from a mesh's outcome store (accord/routing/traces.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from accord.cli.common import load_mesh_file
from accord.mesh.state import MeshState
from accord.routing.traces import TraceFormat, trace_rows

__all__ = ["register"]

err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    traces = typer.Typer(
        help="Fine-tuning data from the outcomes a mesh's requesters recorded.", no_args_is_help=True
    )
    app.add_typer(traces, name="traces")

    @traces.command("export")
    def export(
        mesh: Annotated[Path, typer.Option(help="The mesh file (its state dir holds the outcome store).")] = Path(
            "mesh.toml"
        ),
        fmt: Annotated[
            TraceFormat,
            typer.Option(
                "--format", help="openai-chat (SFT rows), preference (DPO pairs) or outcomes (router training)."
            ),
        ] = TraceFormat.OPENAI_CHAT,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Where to write (default: stdout).")
        ] = None,
        tier: Annotated[
            list[str] | None, typer.Option(help="openai-chat: tiers whose answers to export (default: cloud).")
        ] = None,
        include_private: Annotated[
            bool, typer.Option(help="Also export rows of confidential and restricted tasks.")
        ] = False,
    ) -> None:
        """Write the store's rows as JSON Lines (each with the digest of the attestation it comes from)."""
        config = load_mesh_file(mesh)
        assert config.state_dir is not None
        state = MeshState(Path(config.state_dir))
        if not state.outcomes_file.exists():
            err.print(f"error: no outcome store at {state.outcomes_file} (ask the mesh something first)")
            raise typer.Exit(2)
        with state.outcome_store() as store:
            rows = trace_rows(store.rows(), fmt, tiers=tuple(tier or ("cloud",)), include_private=include_private)
            lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        text = "".join(line + "\n" for line in lines)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
            err.print(f"{len(lines)} rows written to {output}")
