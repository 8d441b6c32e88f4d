"""Processes the lab starts, and stopping exactly those (never by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from valkey_plans.lab.state import Proc


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces; everything after the last ")" is fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start a long-running process detached from us (own session), output to `log`;
    `env` adds to this process's environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    started = start_time(child.pid)
    if started is None:
        raise RuntimeError(f"{argv[0]} exited at once; see {log}")
    return Proc(pid=child.pid, start_time=started)


def alive(proc: Proc) -> bool:
    """True while the very process we started runs (not a later one with the same pid)."""
    state = _state(proc.pid)
    return start_time(proc.pid) == proc.start_time and state not in (None, "Z")


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (same Python that spawned it)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(proc: Proc, grace: float = 30.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL. Does nothing if it is not ours."""
    if not alive(proc):
        return
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not alive(proc):
            return
        time.sleep(0.2)
    if alive(proc):
        os.kill(proc.pid, signal.SIGKILL)
    while alive(proc):
        _reap(proc.pid)
        time.sleep(0.1)


def kill_all(pids: list[int], wait: float = 30.0) -> None:
    """SIGKILL `pids` (processes found by namespace, not by name) and wait until they are gone."""
    procs = [Proc(pid=pid, start_time=t) for pid in pids if (t := start_time(pid)) is not None]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while any(alive(p) for p in procs) and time.monotonic() < deadline:
        for proc in procs:
            _reap(proc.pid)
        time.sleep(0.1)
