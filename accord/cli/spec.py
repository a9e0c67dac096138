"""``accord spec ...``: the spec artefacts (vectors, schemas) generated from and checked against the types.

    accord spec schemas    write spec/schemas/*.schema.json from the message types
    accord spec vectors    write the golden vectors (spec/vectors/...)
    accord spec check      check the committed artefacts against the code; exit 1 on any mismatch
    accord spec version    print the protocol version

Extending (other areas): append an :class:`ArtifactSet` to :data:`ARTIFACTS` for generated files (``spec
schemas`` / ``spec vectors`` write them, ``spec check`` compares them byte for byte), and a :data:`Check` to
:data:`CHECKS` for semantic checks of committed files (e.g. "every signed vector verifies").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from accord.errors import RemoteProtocolError
from accord.protocol import codec
from accord.spec import decoder_vectors as decoder
from accord.spec import message_vectors as vectors
from accord.spec import schemas as schema

__all__ = [
    "ARTIFACTS",
    "CHECKS",
    "ArtifactSet",
    "Check",
    "SpecCheck",
    "check_artifacts",
    "check_message_vectors",
    "default_spec_dir",
    "register",
    "run_checks",
    "write_artifacts",
]


@dataclass(frozen=True)
class ArtifactSet:
    """A directory of generated files, owned entirely by its generator."""

    name: str
    kind: Literal["schemas", "vectors"]
    """Which command writes it: ``accord spec schemas`` or ``accord spec vectors``."""
    directory: str
    """Relative to the spec directory, '/'-separated (e.g. ``vectors/messages``)."""
    build: Callable[[], dict[str, bytes]]
    """Pure: file path relative to ``directory`` ('/'-separated) -> exact bytes."""

    @property
    def command(self) -> str:
        return f"accord spec {self.kind}"


@dataclass(frozen=True)
class SpecCheck:
    check: str
    item: str
    ok: bool
    detail: str = ""


Check = Callable[[Path], list[SpecCheck]]
"""A check over the spec directory; one result per item it looked at."""

ARTIFACTS: list[ArtifactSet] = [
    ArtifactSet(name="JSON Schemas", kind="schemas", directory="schemas", build=schema.schema_files),
    ArtifactSet(name="message vectors", kind="vectors", directory="vectors/messages", build=vectors.vector_files),
]


def default_spec_dir() -> Path:
    """./spec when run from a checkout's root, else the spec/ next to the installed (editable) package."""
    here = Path.cwd() / "spec"
    if (here / "PROTOCOL.md").is_file():
        return here
    return Path(__file__).resolve().parents[2] / "spec"


def _committed(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*.json") if p.is_file()}


def check_artifacts(spec_dir: Path) -> list[SpecCheck]:
    """Every generated file exists and is byte-identical; no stale .json file lies in a generated directory."""
    results: list[SpecCheck] = []
    for artifact in ARTIFACTS:
        check = f"{artifact.name} current"
        directory = spec_dir / artifact.directory
        expected = artifact.build()
        for name, content in sorted(expected.items()):
            item = f"{artifact.directory}/{name}"
            path = directory / name
            if not path.is_file():
                results.append(SpecCheck(check, item, False, f"missing; run `{artifact.command}`"))
            elif path.read_bytes() != content:
                results.append(SpecCheck(check, item, False, f"differs from the code; run `{artifact.command}`"))
            else:
                results.append(SpecCheck(check, item, True))
        for name in sorted(_committed(directory) - set(expected)):
            item = f"{artifact.directory}/{name}"
            results.append(SpecCheck(check, item, False, f"stale (not generated); run `{artifact.command}`"))
    return results


def _check_valid_vector(doc: dict[str, Any]) -> str:
    """Decode the hex, compare with the JSON form, re-encode byte for byte; '' if all holds, else the problem."""
    frame = bytes.fromhex(doc["msgpack_hex"])
    message = codec.decode(frame)
    if codec.decode_json(json.dumps(doc["json"])) != message:
        return "msgpack and JSON forms decode to different messages"
    if doc["type"] != doc["json"].get("type"):
        return f"type {doc['type']!r} != json type {doc['json'].get('type')!r}"
    if codec.encode(message) != frame:
        return "re-encoding does not reproduce the msgpack bytes"
    if json.loads(codec.encode_json(message)) != doc["json"]:
        return "re-encoding to JSON does not reproduce the json form"
    return ""


def _check_invalid_vector(doc: dict[str, Any]) -> str:
    try:
        codec.decode(decoder.frame_of(doc))
    except RemoteProtocolError as exc:
        return "" if exc.reason == doc["reason"] else f"refused as {exc.reason!r}, expected {doc['reason']!r}"
    return "decoded, but every decoder must refuse it"


def _check_accept_vector(doc: dict[str, Any]) -> str:
    """Decodes to the stated message, which re-encodes to the canonical bytes (the reference never refuses one,
    even where ``may_refuse`` allows it)."""
    message = codec.decode(decoder.frame_of(doc))
    if message != codec.decode_json(json.dumps(doc["json"])):
        return "decodes to another message than its json form"
    if codec.encode(message).hex() != doc["canonical_hex"]:
        return "the canonical re-encoding is not canonical_hex"
    return ""


def _check_json_vector(doc: dict[str, Any]) -> str:
    message = codec.decode_json(doc["json_text"])
    if codec.encode(message).hex() != doc["msgpack_hex"]:
        return "the JSON text does not hold the message of msgpack_hex"
    return ""


_VECTOR_KINDS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "": ("decode, re-encode", _check_valid_vector),
    decoder.INVALID_DIR: ("refused as stated", _check_invalid_vector),
    decoder.ACCEPT_DIR: ("accepted as stated", _check_accept_vector),
    decoder.JSON_DIR: ("JSON form read", _check_json_vector),
}
"""Subdirectory of vectors/messages -> (check name, check of one document)."""


def check_message_vectors(spec_dir: Path) -> list[SpecCheck]:
    """Each committed message vector decodes, matches its JSON form and re-encodes byte for byte; each invalid
    vector is refused with its reason; each accept vector decodes to its message and re-encodes canonically;
    each JSON vector reads as its message."""
    directory = spec_dir / "vectors" / "messages"
    results: list[SpecCheck] = []
    for name in sorted(_committed(directory)):
        subdir = name.rpartition("/")[0]
        if subdir not in _VECTOR_KINDS:
            results.append(SpecCheck("known kind", f"vectors/messages/{name}", False, f"unknown kind {subdir!r}"))
            continue
        check, run = _VECTOR_KINDS[subdir]
        try:
            problem = run(json.loads((directory / name).read_text(encoding="utf-8")))
        except (RemoteProtocolError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        results.append(SpecCheck(check, f"vectors/messages/{name}", not problem, problem))
    if not results:
        results.append(SpecCheck("decode, re-encode", "vectors/messages", False, "no vectors found"))
    return results


def check_security_vectors(spec_dir: Path) -> list[SpecCheck]:
    """Every vector in vectors/security behaves as its manifest says (verifies, or is refused with its reason), and
    every file there is current."""
    from accord.spec import security_vectors

    return [
        SpecCheck("security vector as stated", f"vectors/security/{item}", not problem, problem or "")
        for item, problem in security_vectors.verify(spec_dir)
    ]


def check_asyncapi(spec_dir: Path) -> list[SpecCheck]:
    """spec/asyncapi.yaml equals what the message types and subject scheme generate."""
    from accord.spec import asyncapi

    path = spec_dir / "asyncapi.yaml"
    ok = path.is_file() and path.read_text(encoding="utf-8") == asyncapi.render_yaml(asyncapi.asyncapi_document())
    detail = "" if ok else "missing or stale; run `accord interop asyncapi`"
    return [SpecCheck("asyncapi current", "asyncapi.yaml", ok, detail)]


CHECKS: list[Check] = [check_artifacts, check_message_vectors, check_security_vectors, check_asyncapi]
"""Run in order by ``accord spec check``; other areas append theirs."""


def run_checks(spec_dir: Path, checks: Sequence[Check] | None = None) -> list[SpecCheck]:
    """Run every check; a check that raises is reported as one failed result, never as a crash."""
    results: list[SpecCheck] = []
    for check in CHECKS if checks is None else checks:
        try:
            results.extend(check(spec_dir))
        except Exception as exc:  # a broken check is a failed check; report it and run the others
            name = getattr(check, "__name__", repr(check))
            results.append(SpecCheck(name, str(spec_dir), False, f"check raised {type(exc).__name__}: {exc}"))
    return results


def write_artifacts(spec_dir: Path, kind: Literal["schemas", "vectors"]) -> list[tuple[str, str]]:
    """Write every artefact set of ``kind``; remove stale .json files in its directories. (path, action) pairs."""
    done: list[tuple[str, str]] = []
    for artifact in ARTIFACTS:
        if artifact.kind != kind:
            continue
        directory = spec_dir / artifact.directory
        expected = artifact.build()
        for name, content in sorted(expected.items()):
            path = directory / name
            old = path.read_bytes() if path.is_file() else None
            if old == content:
                done.append((f"{artifact.directory}/{name}", "unchanged"))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            done.append((f"{artifact.directory}/{name}", "created" if old is None else "updated"))
        for name in sorted(_committed(directory) - set(expected)):
            (directory / name).unlink()
            done.append((f"{artifact.directory}/{name}", "removed (stale)"))
    return done


SpecDirOption = Annotated[
    Path | None,
    typer.Option("--spec-dir", help="The spec directory (default: ./spec, else the checkout's spec/)."),
]


def _resolve(spec_dir: Path | None) -> Path:
    return spec_dir if spec_dir is not None else default_spec_dir()


def _print_writes(console: Console, done: list[tuple[str, str]], spec_dir: Path) -> None:
    table = Table(title=f"Generated files under {spec_dir}")
    table.add_column("File")
    table.add_column("Action")
    for path, action in done:
        table.add_row(path, action)
    console.print(table)


def register(app: typer.Typer) -> None:
    spec_app = typer.Typer(help="Spec artefacts: JSON Schemas and golden vectors.", no_args_is_help=True)
    app.add_typer(spec_app, name="spec")

    @spec_app.command("version")
    def version() -> None:
        """Print the protocol version this build speaks."""
        from accord.protocol import PROTOCOL_VERSION

        typer.echo(f"accord protocol v{PROTOCOL_VERSION}")

    @spec_app.command("schemas")
    def write_schemas(spec_dir: SpecDirOption = None) -> None:
        """Write the JSON Schemas of every message type into spec/schemas/."""
        root = _resolve(spec_dir)
        _print_writes(Console(), write_artifacts(root, "schemas"), root)

    @spec_app.command("vectors")
    def write_vectors(spec_dir: SpecDirOption = None) -> None:
        """Write the golden vectors into spec/vectors/."""
        root = _resolve(spec_dir)
        _print_writes(Console(), write_artifacts(root, "vectors"), root)

    @spec_app.command("check")
    def check(spec_dir: SpecDirOption = None) -> None:
        """Check the committed vectors and schemas against the code; exit 1 on any mismatch."""
        root = _resolve(spec_dir)
        console = Console()
        if not root.is_dir():
            console.print(f"[red]no spec directory at {root}[/red] (pass --spec-dir)")
            raise typer.Exit(2)
        results = run_checks(root)
        table = Table(title=f"accord spec check: {root}")
        table.add_column("Check", no_wrap=True)
        table.add_column("Item", overflow="fold")
        table.add_column("Result", no_wrap=True)
        table.add_column("Detail", overflow="fold")
        for r in results:
            table.add_row(r.check, r.item, "[green]ok[/green]" if r.ok else "[red]FAIL[/red]", r.detail)
        console.print(table)
        failed = sum(not r.ok for r in results)
        if failed:
            console.print(f"[red]{failed} of {len(results)} checks failed[/red]")
            raise typer.Exit(1)
        console.print(f"[green]all {len(results)} checks passed[/green]")
