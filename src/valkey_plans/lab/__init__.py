"""The lab: real systemd hosts (systemd-nspawn, one netns each) for multi-host deploy tests.

from valkey_plans import lab
state = lab.up(2, ["bookworm", "trixie"])
...
lab.down()
"""

from __future__ import annotations

from valkey_plans.lab.lifecycle import HostStatus, assign, down, status, up
from valkey_plans.lab.state import Host, LabState, load

__all__ = ["Host", "HostStatus", "LabState", "assign", "down", "load", "status", "up"]
