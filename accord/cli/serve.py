"""``accord serve``: the OpenAI-compatible HTTP API in front of a running mesh (:mod:`accord.httpapi`)."""

from __future__ import annotations

import functools
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated

import anyio
import typer

from accord.bus.base import Bus
from accord.cli.common import (
    Level,
    LogJson,
    LogLevel,
    MeshBus,
    MeshOption,
    NatsOption,
    err,
    fail,
    load_mesh_file,
    mesh_bus,
    run_cli,
)
from accord.cli.logging import configure_logging
from accord.httpapi import (
    ApiKeyConfig,
    ApiKeysError,
    ApiSettings,
    MeshApi,
    load_api_keys,
    make_callers,
    serve_http,
)
from accord.logs import get_logger
from accord.mesh.config import MeshConfig
from accord.mesh.run import TRUST_FOLLOW_MS, trust_stamp
from accord.mesh.state import REQUESTER_NAME, MeshState, load_trust
from accord.security import Identity, load_identity

__all__ = ["register"]

log = get_logger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        mesh: MeshOption = Path("mesh.toml"),
        nats: NatsOption = None,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on (0: a free one).", min=0, max=65535)] = 8000,
        keys: Annotated[
            Path | None,
            typer.Option(help="API keys file (TOML): bearer tokens, their requester identities and budgets."),
        ] = None,
        budget_micros: Annotated[
            int, typer.Option(min=0, help="A request's budget when it names none (micro-USD).")
        ] = 100_000,
        deadline_ms: Annotated[int, typer.Option(min=1, help="A request's deadline when it names none.")] = 30_000,
        wait_ms: Annotated[
            int, typer.Option(min=0, help="How long a request waits for an agent that could take it.")
        ] = 2_000,
        log_json: LogJson = False,
        log_level: LogLevel = Level.INFO,
    ) -> None:
        """Serve the mesh over OpenAI's chat-completions API (plain and streamed) until Ctrl-C or SIGTERM."""
        configure_logging(json=log_json, level=log_level)
        config = load_mesh_file(mesh)
        bus_to = mesh_bus(config, nats)
        try:
            api_keys = load_api_keys(keys) if keys is not None else {}
        except ApiKeysError as exc:
            fail(str(exc), 2)
        settings = ApiSettings(
            default_budget_micros=budget_micros,
            default_deadline_ms=deadline_ms,
            wait_ms=wait_ms,
            strategies=config.strategies,
            default_strategy=config.strategy,
        )
        run_cli(
            functools.partial(_serve, config, bus_to, api_keys, settings, host=host, port=port, quiet=log_json)
        )


async def _serve(
    config: MeshConfig,
    bus_to: MeshBus,
    api_keys: dict[str, ApiKeyConfig],
    settings: ApiSettings,
    *,
    host: str,
    port: int,
    quiet: bool,
) -> None:
    assert config.state_dir is not None
    state = MeshState(Path(config.state_dir))
    named = {
        k.identity_name: load_identity(k.key) if k.key else state.identity(k.identity_name)
        for k in api_keys.values()
    }
    trust_file = Path(config.trust.file) if config.trust.file else state.trust_file
    before = trust_stamp(trust_file)
    trust, identities = load_trust(config, state, requesters=named)
    if trust_stamp(trust_file) != before:  # the callers were just certified: let running agents read it
        log.info("api.trust_updated", file=str(trust_file))
        await anyio.sleep(3 * TRUST_FOLLOW_MS / 1000)
    async with AsyncExitStack() as connections:
        buses: dict[str, Bus] = {}

        async def bus_of(identity: Identity) -> Bus:  # every caller on a connection as its own key
            if identity.id not in buses:
                connection = bus_to.connect(identity, name=f"accord-serve-{len(buses)}")
                buses[identity.id] = await connections.enter_async_context(connection)
            return buses[identity.id]

        wanted = [identities[k.identity_name] for k in api_keys.values()] or [identities[REQUESTER_NAME]]
        for identity in wanted:
            await bus_of(identity)
        callers = make_callers(
            buses.__getitem__,
            trust,
            keys=api_keys,
            identities=identities,
            open_identity=identities[REQUESTER_NAME],
            authenticated_bus=bus_to.authenticated,
        )
        api = MeshApi(callers, settings)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                await tg.start(api.run)
                base = await tg.start(functools.partial(serve_http, api.app(), host=host, port=port))
                log.info("api.serving", url=base, mesh=bus_to.url, keys=len(api_keys))
                if not api_keys and host not in ("127.0.0.1", "localhost", "::1"):
                    log.warning(
                        "api.open", host=host, hint="without --keys anyone who reaches it spends the mesh's budget"
                    )
                if not quiet:
                    auth = f"{len(api_keys)} API keys" if api_keys else "no API keys: open to all who can connect"
                    err.print(f"serving the mesh at {base} (OpenAI-compatible; {auth})", highlight=False)
                async for signum in signals:
                    log.info("api.stopping", signal=signal.Signals(signum).name)
                    if not quiet:
                        err.print(f"{signal.Signals(signum).name}: stopping", highlight=False)
                    break
                tg.cancel_scope.cancel()
