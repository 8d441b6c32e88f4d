"""What a Valkey log says about the server's current run.

The checks read this to fail a rollout whose instance started with warnings the plan
could fix (and did not): a wrong setting, or an AOF it could not replay in full.
"""

from __future__ import annotations

import re

LINE = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ (?P<level>[.\-*#]) (?P<text>.*)$")
#: Valkey's start banner: where each run of the server begins in its log.
START_BANNER = "is starting oO0OoO0OoO0Oo"
#: Warning-level lines that are not problems (shutdown), or are reported by the kernel
#: check as advisory (the plan cannot change a kernel setting), or are Valkey Cluster
#: and replication events (a cluster forming, a failover, a primary out of reach) that
#: checks/test_scaleout.py judges by the live state instead.
NOT_FIXABLE = (
    "ready to exit",
    "Memory overcommit",
    "Transparent Huge Pages",
    "TCP backlog",
    "Cluster is currently down",
    "Cluster state changed",
    "Error condition on socket for SYNC",
)


def last_run(log: str) -> list[str]:
    """The lines from the last start banner on: a killed server never logs its exit."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if START_BANNER in line]
    return lines[starts[-1] :] if starts else lines


def startup_warnings(log: str) -> list[str]:
    """Warning-level lines of the last run, minus the ones the plan cannot fix."""
    found = []
    for line in last_run(log):
        match = LINE.match(line)
        if match and match["level"] == "#" and not any(s in match["text"] for s in NOT_FIXABLE):
            found.append(match["text"])
    return found
