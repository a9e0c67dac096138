"""Running ``accord`` commands as a user runs them: subprocesses with their output in a log file, started in a
session of their own (a signal reaches only them), waited for without timed asserts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio

from tests.support.paths import REPO_ROOT

__all__ = [
    "ACCORD",
    "ONE_AGENT",
    "alive",
    "bounded",
    "cli_env",
    "poll",
    "run_all",
    "spawn",
    "stop",
    "wait_for_text",
]

ACCORD = [
    sys.executable,
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from accord.cli import main; main()",
]
"""``accord`` as a terminal runs it. SIGINT is set as Python sets it in a foreground process: a runner started
as a background job of a script ignores SIGINT, its children inherit that, and Ctrl-C tests would then wait."""

ONE_AGENT = """
[[agents]]
name = "a"
tier = "device"
backend = { kind = "simulated" }
"""
"""A mesh file's smallest agent entry (a simulated device), for commands that need a mesh file to get going."""


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    for name in ("NATS_URL", "ACCORD_MESH"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def spawn(
    argv: list[str],
    cwd: Path,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stderr_to: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``accord ARGV`` in ``cwd``; stdout to ``log`` (stderr too, unless ``stderr_to`` names another file)."""
    out = log.open("wb")
    errors = stderr_to.open("wb") if stderr_to is not None else None
    try:
        return subprocess.Popen(
            [*ACCORD, *argv],
            cwd=cwd,
            stdout=out,
            stderr=errors if errors is not None else subprocess.STDOUT,
            stdin=stdin,
            env=cli_env(env),
            start_new_session=True,  # a signal goes to this process only, as `kill PID` would send it
        )
    finally:
        out.close()
        if errors is not None:
            errors.close()


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie nobody reaped counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


async def poll(cond: Callable[[], object], *, timeout_s: float, what: str) -> None:
    """Wait until ``cond()`` holds (files and processes have no event to wait on); fail naming ``what``."""
    try:
        with anyio.fail_after(timeout_s):
            while not cond():  # noqa: ASYNC110
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"waited {timeout_s} s for {what}") from None


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30) -> int:
    """Signal ``proc`` and reap it (killed if it does not stop in time); its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def wait_for_text(log: Path, text: str, *, timeout_s: float = 60) -> str:
    """Block until ``text`` appears in ``log`` (for synchronous fixtures); the log's text."""
    end = time.monotonic() + timeout_s
    while True:
        found = log.read_text(errors="replace") if log.exists() else ""
        if text in found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"waited {timeout_s} s for {text!r} in {log.name}:\n{found[-3000:]}")
        time.sleep(0.05)


def bounded(memory_bytes: int) -> list[str]:
    """``accord`` with its address space capped at ``memory_bytes``: a command that reads without bound fails with
    MemoryError there instead of taking the machine's memory."""
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory_bytes}, {memory_bytes}))"
    return [sys.executable, "-c", f"{limit}; from accord.cli import main; main()"]


def run_all(
    cases: Mapping[str, tuple[list[str], Path] | tuple[list[str], Path, Mapping[str, str] | None]],
    *,
    command: list[str] = ACCORD,
    timeout_s: float = 60,
) -> dict[str, tuple[int, str]]:
    """Run ``accord ARGV`` (or ``command`` ARGV) for every case at once (name -> (argv, cwd[, env])); name -> (exit
    code, output with whitespace runs folded to one space). A case still running after ``timeout_s`` (a hang)
    fails with AssertionError naming it; every process is killed then."""
    procs = {
        name: subprocess.Popen(
            [*command, *case[0]],
            cwd=case[1],
            env=cli_env(case[2] if len(case) > 2 else None),  # type: ignore[misc]
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        for name, case in cases.items()
    }
    out: dict[str, tuple[int, str]] = {}
    try:
        for name, proc in procs.items():
            try:
                stdout, _ = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{name}: still running after {timeout_s} s (blocked?)") from None
            out[name] = (proc.returncode, " ".join(stdout.decode(errors="replace").split()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
    return out
