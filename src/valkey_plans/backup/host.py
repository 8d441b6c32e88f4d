"""Run root commands on an inventory host: here (local://) or over SSH (sudo when not root).

Backup and restore run on the Valkey host itself, where the data, the repository
password and valkey-server are. The command is a shell script of our own with every
value passed as a positional argument (`sh -c SCRIPT sh ARG...`), each quoted once by
`shlex.join`: no plan value is ever spliced into the script's text, and no secret is
ever an argument (the scripts read the root-only files on the host).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass(frozen=True)
class HostShell:
    """One host's root shell; `url` is the target's testinfra URL (local:// or ssh://)."""

    url: str = "local://"

    def argv(self, script: str, *args: str) -> list[str]:
        """The command that runs `script` with `args` as $1... in a root shell there."""
        words = ["sh", "-c", script, "sh", *args]
        if self.url.startswith("local://"):
            return words
        parts = urlsplit(self.url)
        query = parse_qs(parts.query)
        cmd = ["ssh", "-o", "BatchMode=yes"]
        if "ssh_config" in query:
            cmd += ["-F", query["ssh_config"][0]]
        if "ssh_identity_file" in query:
            cmd += ["-i", query["ssh_identity_file"][0]]
        if parts.port:
            cmd += ["-p", str(parts.port)]
        user = unquote(parts.username) if parts.username else None
        if user:
            cmd += ["-l", user]
        # The remote side gets one string, which its login shell splits: quote it whole.
        sudo = ["sudo", "-n"] if user and user != "root" else []
        return [*cmd, "--", str(parts.hostname), shlex.join([*sudo, *words])]

    def run(
        self, script: str, *args: str, timeout: float = 3600, stdin: str | None = None
    ) -> Result:
        """`stdin`: text the script reads (a secret goes there, never into `args`)."""
        done = subprocess.run(
            self.argv(script, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def must(
        self, what: str, script: str, *args: str, timeout: float = 3600, stdin: str | None = None
    ) -> str:
        """stdout of `script`; RestoreError naming `what` and the host's message on failure."""
        result = self.run(script, *args, timeout=timeout, stdin=stdin)
        if not result.ok:
            tail = (result.err or result.out).strip().splitlines()[-3:]
            raise HostError(f"{what} failed on {self.url}: {' / '.join(tail) or result.code}")
        return result.out


class HostError(RuntimeError):
    """A step on a host failed; the message names the step and the host's own words."""
