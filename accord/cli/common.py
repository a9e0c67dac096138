"""What the commands share: the options every mesh command takes (``--mesh``/``$ACCORD_MESH``,
``--nats``/``$NATS_URL``, ``--log-json``, ``--log-level``), finding a running mesh, and running a command body
so that an expected failure is one line on stderr and an exit code, never a traceback.

Exit codes: 0 done; 1 the command ran and failed (no agent, task failed, bus down, backend broken); 2 usage
(bad option, bad file, nothing to talk to); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import enum
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import anyio
import typer
from rich.console import Console
from rich.markup import escape

from accord.bus.base import BusError
from accord.bus.nats import NatsBus
from accord.cli.logging import json_logs
from accord.errors import AccordError
from accord.files import FileRefusedError
from accord.logs import get_logger
from accord.mesh.auth import connect_as
from accord.mesh.config import MeshConfig, MeshConfigError, load_mesh
from accord.mesh.lock import BUS_LOCK, MeshLocks
from accord.mesh.run import agent_creds, bus_credentials
from accord.mesh.state import MeshState
from accord.runtime.requester import TaskFailed
from accord.security import Identity, KeyFileError, Reason, SecurityError, check_creds_for
from accord.strategies import StrategyFailed

__all__ = [
    "EXIT_INTERRUPTED",
    "Level",
    "LogJson",
    "LogLevel",
    "MeshOption",
    "NatsOption",
    "agent_credentials",
    "console",
    "err",
    "fail",
    "load_mesh_file",
    "MeshBus",
    "mesh_bus",
    "mesh_credentials",
    "refused_file",
    "run_cli",
]

EXIT_INTERRUPTED = 130

log = get_logger(__name__)

console = Console(soft_wrap=True)
"""stdout, for what a command produces (tables); never wraps lines."""
err = Console(stderr=True, soft_wrap=True)
"""stderr, for messages about the run."""

MeshOption = Annotated[
    Path,
    typer.Option("--mesh", envvar="ACCORD_MESH", help="The mesh file (default $ACCORD_MESH, else mesh.toml)."),
]
NatsOption = Annotated[
    str | None, typer.Option("--nats", envvar="NATS_URL", help="NATS URL of a running mesh (default $NATS_URL).")
]
LogJson = Annotated[bool, typer.Option("--log-json", help="Logs as JSON lines on stderr, and nothing else there.")]


class Level(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


LogLevel = Annotated[Level, typer.Option("--log-level", help="Least level of the logs shown.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (a log event with ``--log-json``) and exit ``code``."""
    say_error(message, code)
    raise typer.Exit(code)


def say_error(message: str, code: int) -> None:
    if json_logs():
        log.error("command.failed", error=message, exit_code=code)
    else:
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def load_mesh_file(path: Path) -> MeshConfig:
    try:
        return load_mesh(path)
    except MeshConfigError as exc:
        fail(str(exc), 2)


@dataclass(frozen=True)
class MeshBus:
    """How a command reaches a running mesh: its URL, whether that server authenticates every party as its own
    key (receivers may then peek what they do not act on), and any shared credentials of the mesh file."""

    url: str
    authenticated: bool
    credentials: tuple[str | None, str | None] = (None, None)

    def connect(self, identity: Identity, *, name: str, own_creds: Path | None = None) -> NatsBus:
        """A connection as ``identity``'s own key (or with the mesh file's shared credentials); ``own_creds`` is a
        ``.creds`` file of ``identity``'s own (checked by :func:`check_own_creds`), which wins over both."""
        seed, creds = self.credentials
        return connect_as(
            self.url,
            identity,
            name=name,
            nkey_seed=seed,
            creds=creds,
            own_creds=None if own_creds is None else str(own_creds),
        )


def mesh_bus(config: MeshConfig, url: str | None) -> MeshBus:
    """``--nats``/``$NATS_URL``, else the file's ``[bus] url``, else the URL the running ``accord up`` of this
    mesh published (only while that process holds the mesh's bus lock: a file left by a crash is ignored); that
    embedded server authenticates every party, others as the mesh file says (``[bus] authenticated``)."""
    credentials = mesh_credentials(config)
    if url:
        return MeshBus(url, config.bus.authenticated, credentials)
    if config.bus.url:
        return MeshBus(config.bus.url, config.bus.authenticated, credentials)
    assert config.state_dir is not None
    state = MeshState(Path(config.state_dir))
    holder = MeshLocks(state.directory).holder(BUS_LOCK)
    if holder is None or not holder.url:
        fail("no running mesh: start it with `accord up MESH.toml` or pass --nats URL", 2)
    return MeshBus(holder.url, True, credentials)


def mesh_credentials(config: MeshConfig) -> tuple[str | None, str | None]:
    """The mesh file's shared bus credentials (:func:`~accord.mesh.run.bus_credentials`); exit 2 with the reason
    when a file cannot be used (missing, not an owner-only regular file, not a user seed)."""
    try:
        return bus_credentials(config)
    except MeshConfigError as exc:
        fail(str(exc), 2)


def check_own_creds(path: Path, identity: Identity) -> None:
    """A ``--creds`` file must connect as ``identity`` (:func:`~accord.security.check_creds_for`: an owner-only
    key file whose user JWT and seed name that key); exit 2 with the reason otherwise."""
    try:
        check_creds_for(path, identity.id)
    except (SecurityError, FileRefusedError) as exc:
        fail(f"--creds: {exc}", 2)


def agent_credentials(config: MeshConfig, only: Sequence[str] | None, url: str | None) -> None:
    """Check the ``.creds`` files the agents in ``only`` name for themselves, for a bus at ``url``
    (:func:`~accord.mesh.run.agent_creds`); exit 2 with the reason when one cannot be used."""
    try:
        agent_creds(config, only, url=url)
    except MeshConfigError as exc:
        fail(str(exc), 2)


def run_cli(main: Callable[[], Awaitable[None]]) -> None:
    """Run an async command body. Expected failures (Accord's typed errors, files that cannot be read) become
    one line and exit 1 (2 for a file refused unread: :func:`refused_file`), also when they arrive inside an
    exception group; Ctrl-C exits 130."""
    try:
        anyio.run(main)
    except (KeyboardInterrupt, AccordError, OSError, BaseExceptionGroup) as exc:
        leaf = _single(exc)
        if isinstance(leaf, KeyboardInterrupt | asyncio.CancelledError):
            say_error("interrupted", EXIT_INTERRUPTED)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if isinstance(leaf, typer.Exit):
            raise leaf from None
        if not isinstance(leaf, AccordError | OSError):
            raise
        fail(_describe(leaf), 2 if refused_file(leaf) else 1)


def refused_file(exc: BaseException) -> bool:
    """``exc`` refuses a file the user named before reading it (not a regular file, over its cap, or a key file
    group or others may access): a usage error, exit 2, wherever a command meets it."""
    return isinstance(exc, FileRefusedError) or (
        isinstance(exc, KeyFileError) and exc.reason is Reason.INSECURE_KEY_FILE
    )


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested groups of one; in a larger group, its first expected failure (the
    others are the cancellations it caused)."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        if len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        elif leaves:
            exc = leaves[0]
        else:
            return exc
    return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TaskFailed):
        return f"task failed: {exc.reason.value}" + (f" ({exc.detail})" if exc.detail else "")
    if isinstance(exc, StrategyFailed):
        return f"strategy failed: {exc}"
    if isinstance(exc, BusError) and exc.reason != "payload_too_large":
        return f"bus error: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def stdin_text() -> str:
    """All of standard input (a question given as ``-``)."""
    return sys.stdin.read()
