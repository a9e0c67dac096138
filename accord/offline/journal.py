"""The device's journal: a durable, bounded, owner-only JSONL file of audit records and their sync marks.

Two kinds of line, each one compact JSON object ending in ``\\n``:

- ``{"kind":"record","record":{...}}``: an :class:`~accord.offline.records.AuditRecord`, appended and
  fsync'd before the answer it records is returned to the caller;
- ``{"kind":"synced","id":...,"stream":...,"seq":...}``: the stream acknowledged that record (written only
  after the acknowledgement, so a crash in between means one more publish with the same Msg-Id, which the
  stream absorbs as a duplicate).

Rules: the file is created with mode 0600 and a file that group or others may access is refused
(:class:`JournalPermissionError`); one Journal at a time may hold the file (an advisory lock on
``<file>.lock``, :class:`JournalLockedError`); records never take the file past ``max_bytes`` (synced records
are dropped by an atomic rewrite first; if that is not enough, :class:`JournalFullError`); a last line without
its newline is a write torn by a crash, moved to ``<file>.corrupt`` and cut off; any other line that does not
decode raises :class:`JournalCorruptError` naming ``file:line`` and changes nothing, unless the journal is
opened with ``repair=True``, which moves such lines to ``<file>.corrupt`` (nothing is deleted).

Blocking file I/O: call the mutating methods from a worker thread in async code
(``await anyio.to_thread.run_sync(journal.append, record)``); a lock serialises them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Final

import msgspec
from msgspec import Struct

from accord.bus.base import DurableAck
from accord.errors import AccordError
from accord.logs import get_logger
from accord.offline.records import AuditRecord

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Journal",
    "JournalCorruptError",
    "JournalError",
    "JournalFullError",
    "JournalLockedError",
    "JournalPermissionError",
]

log = get_logger(__name__)

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
_POSIX: Final = os.name == "posix"


class JournalError(AccordError):
    """The journal cannot be used as asked. ``reason`` is a stable token; the text says what to do."""

    reason: ClassVar[str] = "io"

    def __init__(self, detail: str, *, path: Path | None = None, line: int | None = None) -> None:
        self.detail = detail
        self.path = path
        self.line = line
        where = "" if path is None else f"{path}{'' if line is None else f':{line}'}: "
        super().__init__(f"{self.reason}: {where}{detail}")


class JournalCorruptError(JournalError):
    reason = "corrupt"


class JournalFullError(JournalError):
    reason = "full"


class JournalPermissionError(JournalError):
    reason = "insecure_permissions"


class JournalLockedError(JournalError):
    """Another Journal (in this or another process) has the file open: two writers would interleave lines."""

    reason = "locked"


class _RecordLine(Struct, frozen=True, tag_field="kind", tag="record"):
    record: AuditRecord


class _SyncedLine(Struct, frozen=True, tag_field="kind", tag="synced"):
    id: str
    stream: str
    seq: int


_Line = _RecordLine | _SyncedLine
_encoder: Final = msgspec.json.Encoder(order="deterministic")
_decoder: Final = msgspec.json.Decoder(_Line)


class Journal:
    """A journal file (see the module docstring). ``Journal(path)`` loads it, or creates it empty."""

    def __init__(self, path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, repair: bool = False) -> None:
        if max_bytes < 1024:
            raise ValueError("max_bytes must be at least 1024")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._records: dict[str, AuditRecord] = {}  # insertion order = append order
        self._synced: dict[str, DurableAck] = {}
        self._size = 0
        self._fd: int | None = None
        self._lock_fd: int | None = self._take_file_lock()
        try:
            self._load(repair)
            self._fd = self._open_append()
        except BaseException:
            self._release_file_lock()
            raise

    # --- reading ------------------------------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._records

    def records(self) -> list[AuditRecord]:
        """Every record held, in append order (synced ones included until a compaction drops them)."""
        with self._lock:
            return list(self._records.values())

    def pending(self) -> list[AuditRecord]:
        """Records not yet acknowledged by the stream, in append order."""
        with self._lock:
            return [r for rid, r in self._records.items() if rid not in self._synced]

    def ack_of(self, record_id: str) -> DurableAck | None:
        """The stream's acknowledgement of a record, if it was synced (and not compacted away)."""
        return self._synced.get(record_id)

    # --- writing ------------------------------------------------------------------------------------------------
    def append(self, record: AuditRecord) -> None:
        """Write ``record`` and fsync. JournalFullError if it does not fit even after dropping synced records."""
        line = _encoder.encode(_RecordLine(record)) + b"\n"
        with self._lock:
            if record.id in self._records:
                raise JournalError(f"record {record.id} is already in the journal", path=self.path)
            if self._size + len(line) > self.max_bytes:
                self._compact_locked()
            if self._size + len(line) > self.max_bytes:
                unsynced = len(self._records) - len(self._synced)
                raise JournalFullError(
                    f"no room for a {len(line)}-byte record ({self._size} of {self.max_bytes} bytes used by "
                    f"{unsynced} unsynced records); reconnect so they sync, or raise max_bytes",
                    path=self.path,
                )
            self._write(line)
            self._records[record.id] = record

    def mark_synced(self, record_id: str, ack: DurableAck) -> None:
        """Record that the stream stored ``record_id`` (write and fsync the mark). Idempotent.

        The mark may take the file past ``max_bytes`` by its own few bytes; synced records are dropped then.
        """
        with self._lock:
            if record_id not in self._records:
                raise JournalError(f"no record {record_id} to mark synced", path=self.path)
            if record_id in self._synced:
                return
            line = _encoder.encode(_SyncedLine(record_id, ack.stream, ack.seq)) + b"\n"
            self._write(line)
            self._synced[record_id] = ack
            if self._size > self.max_bytes:
                self._compact_locked()

    def compact(self) -> int:
        """Drop synced records (atomic rewrite); the number of bytes freed."""
        with self._lock:
            return self._compact_locked()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._release_file_lock()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------------------------
    def _take_file_lock(self) -> int | None:
        """An exclusive advisory lock on ``<file>.lock`` (POSIX), held until :meth:`close`."""
        if not _POSIX:
            return None
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open {lock_path.name}: {exc.strerror or exc}", path=self.path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise JournalLockedError("open elsewhere (one writer at a time)", path=self.path) from exc
        return fd

    def _release_file_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            raise JournalError("the journal is closed", path=self.path)
        try:
            _write_all(self._fd, line)
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot write: {exc.strerror or exc}", path=self.path) from exc
        self._size += len(line)

    def _open_append(self) -> int:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open: {exc.strerror or exc}", path=self.path) from exc
        if _POSIX and stat.S_IMODE(os.fstat(fd).st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
            os.close(fd)
            raise self._insecure()
        return fd

    def _insecure(self) -> JournalPermissionError:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        return JournalPermissionError(
            f"mode {mode:04o}: the journal must be accessible by its owner only (run: chmod 600 {self.path})",
            path=self.path,
        )

    def _load(self, repair: bool) -> None:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return
        except OSError as exc:
            raise JournalError(f"cannot stat: {exc.strerror or exc}", path=self.path) from exc
        if _POSIX and stat.S_IMODE(mode) & (stat.S_IRWXG | stat.S_IRWXO):
            raise self._insecure()
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read: {exc.strerror or exc}", path=self.path) from exc
        body, torn = data, b""
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            body, torn = data[:cut], data[cut:]
        bad: list[tuple[int, bytes]] = []
        good: list[bytes] = []
        for line_no, raw in enumerate(body.splitlines(keepends=True), start=1):
            if not raw.strip():
                continue
            try:
                self._apply(_decoder.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
                if not repair:
                    raise JournalCorruptError(
                        f"{exc}; nothing was changed (open with repair=True to move bad lines to "
                        f"{self._quarantine_path().name})",
                        path=self.path,
                        line=line_no,
                    ) from exc
                bad.append((line_no, raw))
                continue
            good.append(raw)
        if torn:
            self._quarantine([torn])
            with open(self.path, "r+b") as handle:
                handle.truncate(len(body))
                handle.flush()
                os.fsync(handle.fileno())
            log.warning("journal.torn_tail", path=str(self.path), bytes=len(torn))
        if bad:
            self._quarantine([raw for _, raw in bad])
            self._rewrite(b"".join(good))
            log.warning("journal.repaired", path=str(self.path), lines=[n for n, _ in bad])
        self._size = self.path.stat().st_size

    def _apply(self, line: _Line) -> None:
        if isinstance(line, _RecordLine):
            self._records[line.record.id] = line.record
        elif line.id in self._records:
            self._synced[line.id] = DurableAck(stream=line.stream, seq=line.seq)

    def _quarantine_path(self) -> Path:
        return self.path.with_name(self.path.name + ".corrupt")

    def _quarantine(self, lines: list[bytes]) -> None:
        """Append ``lines`` (each ending in a newline) to ``<file>.corrupt``, mode 0600, fsync'd."""
        target = self._quarantine_path()
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            for raw in lines:
                _write_all(fd, raw if raw.endswith(b"\n") else raw + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _compact_locked(self) -> int:
        if not self._synced:
            return 0
        keep = [r for rid, r in self._records.items() if rid not in self._synced]
        data = b"".join(_encoder.encode(_RecordLine(r)) + b"\n" for r in keep)
        before = self._size
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            self._rewrite(data)
        finally:
            self._fd = self._open_append()
        self._records = {r.id: r for r in keep}
        self._synced = {}
        self._size = len(data)
        log.info("journal.compacted", path=str(self.path), freed=before - self._size, kept=len(keep))
        return before - self._size

    def _rewrite(self, data: bytes) -> None:
        """Replace the file's contents atomically (temp file 0600, fsync, rename, fsync the directory)."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if _POSIX:
                    os.fchmod(fd, 0o600)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise JournalError(f"cannot rewrite: {exc.strerror or exc}", path=self.path) from exc

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self.records())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    if not _POSIX:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
