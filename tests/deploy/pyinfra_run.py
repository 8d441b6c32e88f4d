"""Run the real pyinfra CLI on this machine and read its results table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
#: The checkout: pyinfra runs here, so it reads deploy.py, inventories/ and group_data/.
PROJECT_DIR = Path(__file__).resolve().parents[2]
GRAND_TOTAL = re.compile(r"Grand total\s+(\d+|-)\s+(\d+|-)\s+(\d+|-)\s+(\d+|-)")


@dataclass
class Run:
    returncode: int
    output: str

    def _total(self, column: int) -> int:
        match = GRAND_TOTAL.search(self.output)
        assert match, f"no results table in pyinfra output:\n{self.output[-3000:]}"
        value = match.group(column)
        return 0 if value == "-" else int(value)

    @property
    def changed(self) -> int:
        return self._total(2)

    @property
    def errors(self) -> int:
        return self._total(3)

    @property
    def unchanged(self) -> int:
        return self._total(4)


def project_command(
    args: list[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run one of the venv's commands in the project dir: (exit code, stdout + stderr)."""
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def pyinfra(
    inventory: Path | str, *extra: str, timeout: float = 900, env: dict[str, str] | None = None
) -> Run:
    return Run(
        *project_command(["pyinfra", "-y", *extra, str(inventory), "deploy.py"], timeout, env)
    )


def valkey_plans(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> Run:
    return Run(*project_command(["valkey-plans", *args], timeout, env))
