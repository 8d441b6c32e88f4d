"""What every lab inventory says about a lab host: how pyinfra and testinfra reach it.

Exactly what a real server needs: its address, root over SSH with the key the lab
generated, and strict host key checking against the lab's known_hosts (the lab wrote
each host's key itself, so nothing is trusted on first use).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from valkey_plans.lab import config, state


def running_lab(minimum: int, inventory: str) -> state.LabState:
    """The lab's state, or a clear error when fewer than `minimum` hosts are up."""
    lab = state.load()
    have = 0 if lab is None else len(lab.hosts)
    if lab is None or have < minimum:
        raise RuntimeError(
            f"{inventory} needs {minimum} lab hosts, the lab has {have}"
            f" ({config.state_file()}): run `valkey-plans lab up {minimum}` first"
        )
    return lab


#: Names a Debian release: the scale-out inventories then take that release's lab hosts.
RELEASE_ENV = "VALKEY_PLANS_LAB_RELEASE"


def lane(lab: state.LabState, release: str | None = None) -> list[state.Host]:
    """The lab hosts a replicated group or a cluster may take: those of `release`, or
    without one those of the default releases (bookworm and trixie: Valkey 8). A group
    runs one Valkey major throughout: a 9.x primary cannot full-sync an 8.x replica."""
    releases = (release,) if release else config.DEFAULT_RELEASES
    return [h for h in lab.hosts if h.release in releases]


def first_hosts(lab: state.LabState, count: int, inventory: str) -> list[state.Host]:
    """The first `count` hosts of the lane VALKEY_PLANS_LAB_RELEASE names (see `lane`)."""
    release = os.environ.get(RELEASE_ENV) or None
    hosts = lane(lab, release)
    if len(hosts) < count:
        releases = release or " or ".join(config.DEFAULT_RELEASES)
        raise RuntimeError(
            f"{inventory} needs {count} lab hosts of {releases}, the lab has {len(hosts)}:"
            " run `valkey-plans lab up` with more"
        )
    return hosts[:count]


def connection(lab: state.LabState, host: state.Host) -> dict[str, Any]:
    return {
        "ssh_hostname": host.address,
        "ssh_user": "root",
        "ssh_key": lab.ssh_key,
        "ssh_known_hosts_file": lab.known_hosts,
        "ssh_strict_host_key_checking": "yes",
        "ssh_config_file": lab.ssh_config,
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "lab_release": host.release,
    }


def secrets_file(lab: state.LabState, name: str) -> str:
    """A generated 0600 secrets file in the lab dir: lab passwords never touch the repo."""
    return str(Path(lab.lab_dir) / f"{name}-secrets.json")
