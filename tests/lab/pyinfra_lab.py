"""Run the real pyinfra CLI against the lab inventory and read its per-host outcome."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.pyinfra_run import project_command

PROJECT = Path(__file__).resolve().parents[2]
INVENTORY = "inventories/lab.py"
#: pyinfra prints one line per host and operation: "[vplab1] Success" (changed something),
#: "[vplab1] No changes" or "[vplab1] Error".
OUTCOME = re.compile(r"^\s*\[(?P<host>[^\]]+)\] (?P<outcome>Success|No changes|Error)\b", re.M)


@dataclass
class Run:
    """A finished pyinfra run: exit code, full output, and outcome counts per host."""

    returncode: int
    output: str

    def count(self, host: str, outcome: str) -> int:
        return sum(
            1
            for m in OUTCOME.finditer(self.output)
            if m["host"] == host and m["outcome"] == outcome
        )

    def changed(self, host: str) -> int:
        return self.count(host, "Success")

    def changed_operations(self, host: str) -> list[str]:
        """Names of the operations that changed something on `host` (for failure messages)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("--> Starting operation:"):
                current = line.split(":", 1)[1].strip()
            elif line.strip() == f"[{host}] Success":
                names.append(current)
        return names

    def tail(self) -> str:
        """What a failure message needs: every error pyinfra printed, with the lines just
        before it (the command's own output), then the end of the run. The end alone is
        the results table, which says that an operation failed but never why."""
        lines = self.output.splitlines()
        shown: dict[int, str] = {}
        for i, line in enumerate(lines):
            if "] Error" in line:
                shown |= {j: lines[j] for j in range(max(0, i - 20), i + 3) if j < len(lines)}
        errors = "\n".join(shown[j] for j in sorted(shown))[:8000]
        return f"{errors}\n[...]\n{self.output[-3000:]}" if errors else self.output[-5000:]


def plan_env(common: dict | None = None, per_host: dict | None = None) -> dict[str, str]:
    """Environment that makes inventories/lab.py layer this plan data over group_data/."""
    return {
        **os.environ,
        "VALKEY_PLANS_LAB_DATA": json.dumps(common or {}),
        "VALKEY_PLANS_LAB_HOST_DATA": json.dumps(per_host or {}),
        "COLUMNS": "250",
    }


def deploy(
    env: dict[str, str],
    timeout: float = 1200,
    inventory: str = INVENTORY,
    limit: str | None = None,
) -> Run:
    """`pyinfra -y INVENTORY deploy.py`: one parallel run over SSH to every lab host (or
    to the host `limit` names)."""
    only = ["--limit", limit] if limit else []
    return Run(*project_command(["pyinfra", "-y", *only, inventory, "deploy.py"], timeout, env))


def hosts_url(lab: Any, chosen: list[Any]) -> str:
    """The `--hosts=` value of the checks for the lab hosts `chosen` only."""
    return ",".join(f"ssh://root@{h.address}?ssh_config={lab.state.ssh_config}" for h in chosen)


def checks(
    env: dict[str, str],
    hosts: str,
    timeout: float = 600,
    inventory: str = INVENTORY,
    paths: tuple[str, ...] = ("checks/",),
) -> Run:
    """`pytest checks/ --hosts=...` over testinfra's SSH backend, plans from `inventory`."""
    args = ["pytest", "-p", "no:cacheprovider", "-v", "-rf", *paths]
    args += [f"--hosts={hosts}", f"--plan-inventory={inventory}"]
    return Run(*project_command(args, timeout, env))
