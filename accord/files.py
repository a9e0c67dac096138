"""Reading a file a user named: a regular file only, opened without blocking, never more than a cap.

A path given on the command line or in a mesh file can name anything: a FIFO (opening it for reading blocks until
a writer comes), a device (``/dev/zero`` never ends), a directory, or a file far larger than what it should hold.
Every file Accord reads from such a path goes through :func:`read_capped` (or :func:`open_regular`, for a log read
as a stream), which refuses all of them before reading a byte of them:

1. ``stat`` the path (following links): anything but a regular file is refused without opening it, so a writer
   waiting on a FIFO is not woken either;
2. open it with ``O_NONBLOCK`` (a FIFO or device swapped in since step 1 cannot make the open block) and
   ``fstat`` what was opened, refused again unless it is a regular file within the cap;
3. read at most ``cap + 1`` bytes, so a file that grows past the cap (or a ``/proc`` file that claims size 0) is
   refused as too large instead of being read to the end.

Caps by kind of file (bytes):

- :data:`MAX_FILE_BYTES` (16 MiB): the default; mesh files, trust files, attestations and frames (``accord
  verify``), questions and contexts (``accord ask --file``, ``--context-file``), A2A cards, API keys files;
- :data:`MAX_KEY_FILE_BYTES` (64 KiB): seed files and NATS ``.creds`` files;
- :data:`MAX_DATA_FILE_BYTES` (4 GiB): outcome logs and router files (training data, read as a stream).

A refusal is a :class:`FileRefusedError` with a reason token (``not_found``, ``unreadable``, ``not_regular``,
``too_large``) and a message that names the file; the command line exits 2 with it (a bad file is a usage error).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

from accord.errors import AccordError

__all__ = [
    "MAX_DATA_FILE_BYTES",
    "MAX_FILE_BYTES",
    "MAX_KEY_FILE_BYTES",
    "FileRefusedError",
    "open_regular",
    "read_capped",
    "stat_regular",
]

MAX_FILE_BYTES: Final = 16 * 1024 * 1024
"""The default cap of a file read whole (mesh, trust, attestation, frame, question, card, API keys)."""

MAX_KEY_FILE_BYTES: Final = 64 * 1024
"""Cap of a seed file (a seed is 58 characters) and of a NATS ``.creds`` file (a JWT and a seed)."""

MAX_DATA_FILE_BYTES: Final = 4 * 1024**3
"""Cap of an outcome log or a router file (training data)."""

_O_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)  # not on Windows, where a FIFO is no path to open
_O_NOCTTY: Final = getattr(os, "O_NOCTTY", 0)  # a terminal given as the path never becomes ours


class FileRefusedError(AccordError):
    """A file cannot be read: it does not exist, cannot be opened, is not a regular file, or exceeds its cap.

    ``reason`` is a stable token (``not_found``, ``unreadable``, ``not_regular``, ``too_large``); ``path`` the
    file as given; the message names both."""

    def __init__(self, reason: str, path: str | Path, detail: str) -> None:
        self.reason = reason
        self.path = Path(path)
        self.detail = detail
        super().__init__(f"{path}: {detail}")


def stat_regular(path: str | Path, *, cap: int = MAX_FILE_BYTES) -> os.stat_result:
    """``path``'s status if it is a regular file of at most ``cap`` bytes, without opening it; else
    FileRefusedError."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise FileRefusedError("not_found", path, "no such file") from exc
    except OSError as exc:
        raise FileRefusedError("unreadable", path, f"cannot read: {exc.strerror or exc}") from exc
    _check(path, st, cap)
    return st


def open_regular(
    path: str | Path, *, cap: int = MAX_FILE_BYTES, check: Callable[[os.stat_result], None] | None = None
) -> BinaryIO:
    """``path`` open for reading (binary) if it is a regular file of at most ``cap`` bytes, checked before the
    open and again on what was opened (``check``, if given, also sees that ``fstat``); else
    FileRefusedError. The open never blocks, whatever the path names."""
    stat_regular(path, cap=cap)
    try:
        fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise FileRefusedError("not_found", path, "no such file") from exc
    except OSError as exc:
        raise FileRefusedError("unreadable", path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        _check(path, st, cap)  # what was opened, not what was there at the stat (a swapped-in FIFO or device)
        if check is not None:
            check(st)
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(
    path: str | Path, *, cap: int = MAX_FILE_BYTES, check: Callable[[os.stat_result], None] | None = None
) -> bytes:
    """The bytes of ``path``, a regular file of at most ``cap`` bytes (:func:`open_regular`); never reads more
    than ``cap + 1`` bytes of it."""
    with open_regular(path, cap=cap, check=check) as handle:
        try:
            # Sized by what the file says it holds, not by the cap: read(n) allocates n bytes up front, and a
            # data file's cap is gigabytes. A file that grew since goes on in chunks, still up to cap + 1.
            data = handle.read(min(cap, os.fstat(handle.fileno()).st_size) + 1)
            if len(data) <= cap and (more := _read_up_to(handle, cap + 1 - len(data))):
                data += more
        except OSError as exc:
            raise FileRefusedError("unreadable", path, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > cap:
        raise FileRefusedError("too_large", path, f"larger than {_size(cap)}, the most read from such a file")
    return data


def _read_up_to(handle: BinaryIO, limit: int, chunk: int = 1 << 20) -> bytes:
    """At most ``limit`` more bytes of ``handle``, read in chunks (nothing allocated for bytes not there)."""
    parts: list[bytes] = []
    while limit > 0 and (part := handle.read(min(chunk, limit))):
        parts.append(part)
        limit -= len(part)
    return b"".join(parts)


def _check(path: str | Path, st: os.stat_result, cap: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRefusedError("not_regular", path, f"not a regular file ({_kind(st.st_mode)})")
    if st.st_size > cap:
        raise FileRefusedError(
            "too_large", path, f"{_size(st.st_size)}, larger than {_size(cap)}, the most read from such a file"
        )


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"
