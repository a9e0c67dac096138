"""Owner-only files: private key seeds (refused when group or others may read them) and trust files.

Files are written to a temporary sibling created with mode 0600 and then renamed over the target, so a reader
never sees a half-written file and the secret never exists with wider permissions.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from accord.security.errors import KeyFileError, Reason

__all__ = ["check_private", "read_private", "write_owner_only"]

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
    """Raise KeyFileError(insecure_key_file) when group or others have any permission on ``path``."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeyFileError(Reason.KEY_FILE_MISSING, f"{path} does not exist") from exc
    except OSError as exc:
        raise KeyFileError(Reason.BAD_KEY_FILE, f"cannot stat {path}: {exc.strerror or exc}") from exc
    if _POSIX and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            Reason.INSECURE_KEY_FILE,
            f"{path} has mode {stat.S_IMODE(mode):04o}: a private key must be readable by its owner only "
            f"(run: chmod 600 {path})",
        )


def read_private(path: Path) -> bytes:
    """The bytes of a private file after :func:`check_private`."""
    check_private(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(Reason.BAD_KEY_FILE, f"cannot read {path}: {exc.strerror or exc}") from exc
