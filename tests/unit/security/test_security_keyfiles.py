"""Key files: written owner-only, refused when group or others can read them, typed errors for every failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from accord.files import MAX_KEY_FILE_BYTES, FileRefusedError
from accord.security import Identity, KeyFileError, KeyKind, Reason, load_identity, save_identity
from accord.security.keyfile import write_owner_only
from tests.support.fifo import outcome_unblocked


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_key_is_0600_and_round_trips(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask the file is owner-only
    try:
        identity = Identity.generate()
        path = tmp_path / "agent.seed"
        save_identity(identity, path)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert path.read_text() == identity.seed + "\n"
    loaded = load_identity(path)
    assert loaded.id == identity.id and loaded.kind is KeyKind.USER
    assert list(tmp_path.iterdir()) == [path], "no temporary file left behind"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601, 0o610, 0o777])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "agent.seed"
    save_identity(Identity.generate(), path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        load_identity(path)
    assert info.value.reason is Reason.INSECURE_KEY_FILE
    assert f"{mode:04o}" in str(info.value) and "chmod 600" in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_load(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "agent.seed"
    identity = Identity.generate()
    save_identity(identity, path)
    path.chmod(mode)
    assert load_identity(path).id == identity.id


def test_existing_file_is_not_replaced_without_force(tmp_path: Path) -> None:
    path = tmp_path / "agent.seed"
    first, second = Identity.generate(), Identity.generate()
    save_identity(first, path)
    with pytest.raises(KeyFileError) as info:
        save_identity(second, path)
    assert info.value.reason is Reason.KEY_FILE_EXISTS
    assert load_identity(path).id == first.id
    save_identity(second, path, force=True)
    assert load_identity(path).id == second.id and _mode(path) == 0o600


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_identity(tmp_path / "nope.seed")
    assert info.value.reason is Reason.KEY_FILE_MISSING
    for content in [b"", b"hello\n", b"\xff\xfe", Identity.generate().id.encode()]:
        path = tmp_path / "bad.seed"
        write_owner_only(path, content, force=True)
        with pytest.raises(KeyFileError) as info:
            load_identity(path)
        assert info.value.reason is Reason.BAD_KEY_FILE


def test_kind_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "op.seed"
    save_identity(Identity.generate(KeyKind.OPERATOR), path)
    assert load_identity(path, kind=KeyKind.OPERATOR).kind is KeyKind.OPERATOR
    with pytest.raises(KeyFileError) as info:
        load_identity(path, kind=KeyKind.USER)
    assert info.value.reason is Reason.BAD_KEY_FILE and "operator" in str(info.value)


def test_unwritable_directory_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        save_identity(Identity.generate(), tmp_path / "missing-dir" / "agent.seed")
    assert info.value.reason is Reason.BAD_KEY_FILE


def test_repr_never_shows_the_secret() -> None:
    identity = Identity.generate()
    assert identity.seed not in repr(identity) and identity.id in repr(identity)


def test_a_seed_path_that_is_a_fifo_is_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "agent.seed"
    os.mkfifo(fifo, 0o600)  # owner-only: only the file check stands between the reader and a hang
    error = outcome_unblocked(lambda: load_identity(fifo), fifo)
    assert isinstance(error, FileRefusedError) and error.reason == "not_regular", error


def test_a_device_as_a_seed_is_refused_as_no_regular_file() -> None:
    with pytest.raises(FileRefusedError) as info:
        load_identity("/dev/zero")
    assert info.value.reason == "not_regular"


def test_a_seed_file_over_its_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "agent.seed"
    save_identity(Identity.generate(), path)
    with path.open("ab") as handle:
        handle.truncate(MAX_KEY_FILE_BYTES + 1)
    with pytest.raises(FileRefusedError) as info:
        load_identity(path)
    assert info.value.reason == "too_large"
