"""pyinfra facts the Valkey deploy decides with."""

from __future__ import annotations

from pyinfra.api import FactBase, QuoteString, StringCommand


class HasSystemd(FactBase[bool]):
    """True when systemd is PID 1 (`/run/systemd/system` exists).

    pyinfra's `server.service` picks systemd whenever `systemctl` is installed, which
    fails in containers and WSL; this fact decides the service path instead.
    """

    def command(self) -> str:
        return "test -d /run/systemd/system && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "yes"


class RunningPid(FactBase[int | None]):
    """PID from a pidfile if that process is alive, else None.

    + pidfile: path of the pidfile
    """

    def command(self, pidfile: str) -> StringCommand:
        return StringCommand(
            "pid=$(cat",
            QuoteString(pidfile),
            '2>/dev/null) && kill -0 "$pid" 2>/dev/null && echo "$pid" || true',
        )

    def process(self, output: list[str]) -> int | None:
        text = "".join(output).strip()
        return int(text) if text.isdigit() else None


class BrewServiceRunning(FactBase[bool]):
    """Whether `brew services` runs `formula`.

    + formula: the Homebrew formula
    """

    def command(self, formula: str) -> StringCommand:
        return StringCommand("brew services list | awk '$1 ==", QuoteString(formula), "{print $2}'")

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "started"
