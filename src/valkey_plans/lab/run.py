"""Running host commands with errors that say what failed."""

from __future__ import annotations

import shlex
import subprocess


def run(
    *argv: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (an argv, never through a shell), capturing output; on failure raise
    with the command, quoted so it can be pasted into a shell, and its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"command failed ({done.returncode}): {shlex.join(argv)}\n{done.stderr.strip()}"
        )
    return done
