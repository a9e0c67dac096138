"""``accord interop ...`` and ``accord card``: the AsyncAPI document and A2A Agent Cards.

    accord interop asyncapi [--check] [-o PATH]          write (or check) spec/asyncapi.yaml
    accord interop card --advertise FILE.json [--url URL] an Advertise (Accord JSON) as an A2A Agent Card
    accord interop card --import CARD.json [--format toml|json]   an A2A card as an Accord agent config
    accord card AGENT [--url URL]                         the same export; AGENT is an Advertise JSON file for now
    accord card --import CARD.json                        the same import

Failures print the reason code and exit 1 (exit 2 for usage errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from accord.errors import AccordError, RemoteProtocolError
from accord.files import FileRefusedError, read_capped
from accord.interop.a2a import (
    A2A_BINDINGS,
    ACCORD_NATS_BINDING,
    A2AVersion,
    advertise_to_card,
    card_to_agent_config,
)
from accord.interop.errors import InteropError
from accord.interop.toml import dumps as toml_dumps
from accord.protocol.codec import decode_json
from accord.protocol.messages import Advertise, Tier
from accord.spec.asyncapi import DEFAULT_PATH, asyncapi_yaml

__all__ = ["register"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _fail(text: str, code: int = 1) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[red]error[/red] {escape(text)}", highlight=False)
    return typer.Exit(code)


def _read(path: Path) -> bytes:
    try:
        return read_capped(path)
    except FileRefusedError as exc:
        raise _fail(f"cannot read {exc}", 2) from exc


def _load_advertise(path: Path) -> Advertise:
    try:
        message = decode_json(_read(path))
    except RemoteProtocolError as exc:
        raise _fail(f"{exc.reason}: {path} is not a valid Accord message in JSON form: {exc.detail}") from exc
    if not isinstance(message, Advertise):
        raise _fail(f"invalid: {path} holds a {type(message).__name__}, not an Advertise")
    return message


def _export(
    path: Path,
    url: str | None,
    nats_url: str,
    binding: str | None,
    a2a_version: str,
    bearer: bool,
    openai: str | None,
) -> None:
    advertise = _load_advertise(path)
    if a2a_version not in ("0.3", "1.0"):
        raise _fail(f"invalid_version: --a2a-version must be 0.3 or 1.0, not {a2a_version!r}", 2)
    version: A2AVersion = "0.3" if a2a_version == "0.3" else "1.0"
    if url is None:
        url, binding = nats_url, binding or ACCORD_NATS_BINDING
    try:
        card = advertise_to_card(
            advertise,
            url=url,
            binding=binding or "JSONRPC",
            bearer_auth=bearer,
            openai_base_url=openai,
            a2a_version=version,
        )
    except InteropError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(json.dumps(card, indent=2, ensure_ascii=False))


def _import(path: Path, fmt: str, tier: Tier | None, region: str | None) -> None:
    if fmt not in ("toml", "json"):
        raise _fail(f"invalid: --format must be toml or json, not {fmt!r}", 2)
    try:
        card = json.loads(_read(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(f"invalid_card: {path} is not JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise _fail(f"invalid_card: {path} does not hold a JSON object")
    try:
        config = card_to_agent_config(card, tier=tier, region=region)
    except AccordError as exc:
        raise _fail(str(exc)) from exc
    if fmt == "json":
        typer.echo(json.dumps(config, indent=2, ensure_ascii=False))
    else:
        header = f"# Accord agent config imported from the A2A Agent Card {path.name} (accord card --import)\n"
        typer.echo(header + toml_dumps({"agents": [config]}), nl=False)


_Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Where A2A clients reach the agent (an A2A gateway, http(s)). Default: the agent's NATS server "
        f"with binding {ACCORD_NATS_BINDING}.",
    ),
]
_Nats = Annotated[str, typer.Option("--nats", help="NATS server URL used when --url is not given.")]
_Binding = Annotated[
    str | None,
    typer.Option("--binding", help=f"A2A transport at --url: {', '.join(A2A_BINDINGS)} (default JSONRPC)."),
]
_Version = Annotated[str, typer.Option("--a2a-version", help="Card format: 0.3 (protocolVersion 0.3.0) or 1.0.")]
_Bearer = Annotated[bool, typer.Option("--bearer", help="Declare that the endpoint wants an HTTP bearer token.")]
_OpenAI = Annotated[
    str | None, typer.Option("--openai-base-url", help="Publish the agent's OpenAI-compatible API in the card.")
]
_Import = Annotated[
    Path | None,
    typer.Option("--import", help="Import this A2A Agent Card (JSON) as an Accord agent config.", dir_okay=False),
]
_Format = Annotated[str, typer.Option("--format", help="Output format of --import: toml or json.")]
_Tier = Annotated[Tier | None, typer.Option("--tier", help="Imported agent's tier (default: card, or cloud).")]
_Region = Annotated[
    str | None, typer.Option("--region", help="Region of the imported agent (default: card, else unknown).")
]


def register(app: typer.Typer) -> None:
    interop_app = typer.Typer(
        help="Interop: the AsyncAPI document of the NATS channels, A2A Agent Cards.", no_args_is_help=True
    )
    app.add_typer(interop_app, name="interop")

    @interop_app.command("asyncapi")
    def asyncapi(
        check: Annotated[
            bool, typer.Option("--check", help="Fail (exit 1) if the file differs from the generated document.")
        ] = False,
        output: Annotated[Path, typer.Option("--output", "-o", help="Path of the AsyncAPI YAML file.")] = Path(
            DEFAULT_PATH
        ),
    ) -> None:
        """Write the AsyncAPI 3.0 document generated from the message types and subject scheme."""
        text = asyncapi_yaml()
        if check:
            try:
                current = read_capped(output)
            except FileRefusedError as exc:
                raise _fail(f"{exc}: run `accord interop asyncapi`") from exc
            if current != text.encode("utf-8"):
                raise _fail(f"{output} is stale: run `accord interop asyncapi`")
            typer.echo(f"{output} is up to date")
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")

    @interop_app.command("card")
    def interop_card(
        advertise: Annotated[
            Path | None,
            typer.Option("--advertise", help="An Advertise in Accord's JSON form to export.", dir_okay=False),
        ] = None,
        import_: _Import = None,
        url: _Url = None,
        nats: _Nats = DEFAULT_NATS_URL,
        binding: _Binding = None,
        a2a_version: _Version = "0.3",
        bearer: _Bearer = False,
        openai_base_url: _OpenAI = None,
        fmt: _Format = "toml",
        tier: _Tier = None,
        region: _Region = None,
    ) -> None:
        """Export an Advertise as an A2A Agent Card, or import an A2A card as an Accord agent config."""
        if (advertise is None) == (import_ is None):
            raise _fail("give exactly one of --advertise FILE.json and --import CARD.json", 2)
        if import_ is not None:
            _import(import_, fmt, tier, region)
        else:
            assert advertise is not None
            _export(advertise, url, nats, binding, a2a_version, bearer, openai_base_url)

    @app.command("card")
    def card(
        agent: Annotated[
            str | None,
            typer.Argument(help="The agent to export; for now a file with its Advertise in Accord's JSON form."),
        ] = None,
        import_: _Import = None,
        url: _Url = None,
        nats: _Nats = DEFAULT_NATS_URL,
        binding: _Binding = None,
        a2a_version: _Version = "0.3",
        bearer: _Bearer = False,
        openai_base_url: _OpenAI = None,
        fmt: _Format = "toml",
        tier: _Tier = None,
        region: _Region = None,
    ) -> None:
        """A2A Agent Cards: `accord card AGENT` exports one, `accord card --import CARD.json` imports one."""
        if (agent is None) == (import_ is None):
            raise _fail("give exactly one of AGENT and --import CARD.json", 2)
        if import_ is not None:
            _import(import_, fmt, tier, region)
        else:
            assert agent is not None
            _export(Path(agent), url, nats, binding, a2a_version, bearer, openai_base_url)
