"""Serving an ASGI app with uvicorn inside an anyio task group: on a free port if asked, stopped gracefully by
cancelling (uvicorn's own signal handling is off: the command that runs it owns the signals)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette

from accord.errors import AccordError

__all__ = ["serve_http"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller decides when to stop (by cancelling)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with uvicorn on ``host:port`` (port 0: a free one) until cancelled, then shut down
    gracefully (running requests get two seconds); ``task_status`` gets the base URL (``http://host:port/v1``)
    once the socket listens."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise AccordError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    server = _Server(
        uvicorn.Config(app, log_level=log_level, lifespan="off", log_config=None, timeout_graceful_shutdown=2)
    )

    async def serve() -> None:
        with anyio.CancelScope(shield=True):  # stopped by should_exit, so that it can shut down gracefully
            await server.serve(sockets=[sock])

    shown = f"[{host}]" if ":" in host else host
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            task_status.started(f"http://{shown}:{sock.getsockname()[1]}/v1")
            try:
                await anyio.sleep_forever()
            finally:
                server.should_exit = True
    finally:
        sock.close()
