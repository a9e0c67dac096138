"""Owner-only files: private key seeds (refused when group or others may read them) and trust files.

A seed is read only through :func:`read_private`: a regular file of at most 64 KiB (:mod:`accord.files`), whose
mode, checked on the file as opened, gives group and others nothing.

Files are written to a temporary sibling created with mode 0600 and then renamed over the target, so a reader
never sees a half-written file and the secret never exists with wider permissions.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from accord.files import MAX_KEY_FILE_BYTES, FileRefusedError, read_capped, stat_regular
from accord.security.errors import KeyFileError, Reason

__all__ = ["check_private", "key_file_errors", "read_private", "write_owner_only"]

_POSIX = os.name == "posix"


def write_owner_only(path: Path, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600; refuse to replace an existing file unless ``force``.

    Without ``force`` the file appears atomically or not at all (a hard link of the finished temporary file, which
    fails if ``path`` exists): of two processes creating the same key at once, exactly one wins and the other gets
    ``key_file_exists`` (and can read the winner's key)."""
    if path.exists() and not force:
        raise KeyFileError(Reason.KEY_FILE_EXISTS, f"{path} exists (pass force to replace it)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if _POSIX:
                os.fchmod(fd, 0o600)  # the umask can only remove bits; this pins the exact mode
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # FileExistsError if another process created it meanwhile
            tmp.unlink()
    except FileExistsError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(Reason.KEY_FILE_EXISTS, f"{path} exists (pass force to replace it)") from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(Reason.BAD_KEY_FILE, f"cannot write {path}: {exc.strerror or exc}") from exc


def check_private(path: Path) -> None:
    """Raise KeyFileError(insecure_key_file) when group or others have any permission on ``path``.

    ``path`` must be a regular file of at most :data:`~accord.files.MAX_KEY_FILE_BYTES` (else
    :class:`~accord.files.FileRefusedError`); for a file another program reads (a NATS ``.creds`` file)."""
    with key_file_errors(path):
        _owner_only(path, stat_regular(path, cap=MAX_KEY_FILE_BYTES))


def read_private(path: Path) -> bytes:
    """The bytes of a private file (a seed), read only after the checks of :func:`check_private`, made on the
    file as opened. Every seed Accord reads comes through here."""
    with key_file_errors(path):
        return read_capped(path, cap=MAX_KEY_FILE_BYTES, check=functools.partial(_owner_only, path))


@contextlib.contextmanager
def key_file_errors(path: Path, what: str = "") -> Iterator[None]:
    """A missing or unreadable file as its KeyFileError (``key_file_missing``, ``bad_key_file``: spec 10.6). A
    path that is not a regular file within its cap stays a FileRefusedError: refused unread, whatever it holds."""
    try:
        yield
    except FileRefusedError as exc:
        if exc.reason == "not_found":
            raise KeyFileError(Reason.KEY_FILE_MISSING, f"{what}{path} does not exist") from exc
        if exc.reason == "unreadable":
            raise KeyFileError(Reason.BAD_KEY_FILE, f"{what}{exc}") from exc
        raise


def _owner_only(path: Path, st: os.stat_result) -> None:
    if _POSIX and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            Reason.INSECURE_KEY_FILE,
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: a private key must be readable by its owner only "
            f"(run: chmod 600 {path})",
        )
