"""Who runs what of a mesh: a lock per agent replica, and one for the bus URL an ``accord up`` publishes.

Each lock is a file in the state dir's ``run/`` held with ``flock`` by the process that runs the agent (or
embeds the server) for as long as it lives: a crash or ``kill -9`` releases it with the process, so a lock is
never stale. A second ``accord up`` of the same agents fails at once naming the process that runs them; ``accord
ps`` lists the holders; ``accord down`` signals them. The files stay (only the lock, not the file, says that
something runs); what a held file says (pid, URL) is read only while it is held.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path

from accord.errors import AccordError

__all__ = ["BUS_LOCK", "Holder", "MeshBusyError", "MeshLocks"]

BUS_LOCK = "bus"
"""The lock of the process that publishes the mesh's bus URL (``nats.url``)."""


class MeshBusyError(AccordError):
    """Part of the mesh already runs in another process; the message names it."""


@dataclass(frozen=True)
class Holder:
    """One running part of a mesh: the lock's name (``bus`` or ``agent-NAME``), its process and the bus URL."""

    name: str
    pid: int
    url: str | None = None


class MeshLocks:
    """The locks of one mesh's state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "run"

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.lock"

    def acquire(self, stack: ExitStack | AsyncExitStack, name: str, *, url: str | None = None) -> bool:
        """Hold lock ``name`` until ``stack`` closes (writing this pid and ``url`` into it); False if another
        process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path(name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        stack.callback(os.close, fd)  # closing releases the lock
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "url": url}).encode())
        return True

    def holder(self, name: str) -> Holder | None:
        """Who holds lock ``name`` now (None: nobody)."""
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: read what its holder wrote
            else:
                return None  # nobody holds it (what the file says is stale)
            try:
                data = json.loads(path.read_bytes() or b"{}")
            except (OSError, ValueError):
                data = {}
            return Holder(name, int(data.get("pid", 0)), data.get("url"))
        finally:
            os.close(fd)

    def holders(self) -> list[Holder]:
        """Every held lock of the mesh, by name."""
        if not self.directory.is_dir():
            return []
        found = (self.holder(p.stem) for p in sorted(self.directory.glob("*.lock")))
        return [h for h in found if h is not None]
