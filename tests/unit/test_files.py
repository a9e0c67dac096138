"""Reading a file a user named (:mod:`accord.files`, issue 15 D13): a regular file only, opened without blocking,
never more than its cap; a FIFO, a device or a directory is refused before a byte of it is read."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import accord.files
from accord.files import MAX_FILE_BYTES, FileRefusedError, open_regular, read_capped, stat_regular
from tests.support.fifo import outcome_unblocked


def _refusal(call: Callable[[], object], fifo: Path | None = None) -> FileRefusedError:
    """What ``call`` raised, which must be a FileRefusedError (a call that blocks on ``fifo`` fails instead)."""
    if fifo is not None:
        error = outcome_unblocked(call, fifo)
        assert isinstance(error, FileRefusedError), error
        return error
    with pytest.raises(FileRefusedError) as info:
        call()
    return info.value


def test_a_regular_file_up_to_its_cap_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    assert read_capped(path, cap=100) == b"x" * 100
    assert stat_regular(path, cap=100).st_size == 100


def test_a_file_over_its_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written to disk
    error = _refusal(lambda: read_capped(path))
    assert error.reason == "too_large" and "16 MiB" in str(error) and str(path) in str(error)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_file_longer_than_its_size_says_is_refused_after_cap_plus_one_bytes() -> None:
    # /proc files claim size 0; the read stops at cap + 1 bytes and refuses, it never reads to the end
    assert Path("/proc/self/status").stat().st_size == 0
    assert _refusal(lambda: read_capped("/proc/self/status", cap=16)).reason == "too_large"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "question.txt"
    os.mkfifo(fifo, 0o600)
    error = _refusal(lambda: read_capped(fifo), fifo)
    assert error.reason == "not_regular" and "a FIFO" in str(error)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused(path: str) -> None:
    if not Path(path).exists():
        pytest.skip(f"no {path}")
    error = _refusal(lambda: read_capped(path))
    assert error.reason == "not_regular" and "a character device" in str(error)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    error = _refusal(lambda: read_capped(tmp_path))
    assert error.reason == "not_regular" and "a directory" in str(error)


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    assert _refusal(lambda: read_capped(tmp_path / "missing.toml")).reason == "not_found"


def test_what_was_opened_is_checked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a FIFO swapped in after the first stat: the open does not block and the fstat of the open file refuses it
    fifo = tmp_path / "swapped"
    os.mkfifo(fifo, 0o600)
    monkeypatch.setattr(accord.files, "stat_regular", lambda *_a, **_k: None)
    error = _refusal(lambda: open_regular(fifo).close(), fifo)
    assert error.reason == "not_regular"


def test_a_check_sees_the_status_of_the_file_as_opened(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    seen: list[int] = []
    assert read_capped(path, check=lambda st: seen.append(st.st_size)) == b"abc"
    assert seen == [3]


def test_a_small_file_under_a_huge_cap_is_read_without_allocating_the_cap(tmp_path: Path) -> None:
    """read(n) allocates n bytes up front: reading up to a data file's cap of gigabytes must not (a 1 TiB cap
    here would need 1 TiB)."""
    path = tmp_path / "small.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 3)
    assert read_capped(path, cap=1 << 40) == b'{"a": 1}\n' * 3
