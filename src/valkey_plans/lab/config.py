"""Fixed facts of the lab: where it lives, which addresses it owns, what a host is built from.

Everything the lab creates is named from these constants, so `down()` and the crash cleanup of
`up()` can find exactly what the lab made (and nothing else) even without a state file.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

#: The private /24 used only by the lab. The bridge takes .1, hosts .11 upwards.
SUBNET = ipaddress.IPv4Network("10.149.73.0/24")
BRIDGE = "vplab0"
BRIDGE_ADDRESS = SUBNET.network_address + 1
FIRST_HOST_OFFSET = 11
#: Prefix of every host name, network namespace and host-side veth the lab creates.
PREFIX = "vplab"

#: apt-cacher-ng listens here; hosts reach Debian only through it.
PROXY_PORT = 3142

#: Debian releases a host can be: 8.0 (bookworm-backports), 8.1 and 9.1 (forky: testing
#: today, so its os-release names no VERSION_ID).
RELEASES = ("bookworm", "trixie", "forky")
#: What `lab up N` round-robins over unless told: one Valkey major (8) in every group the
#: scale-out inventories build from the first hosts.
DEFAULT_RELEASES = ("bookworm", "trixie")
#: Releases whose systemd runs only on the unified cgroup hierarchy (cgroup v2).
UNIFIED_CGROUP_RELEASES = ("forky",)
#: debootstrap's scripts; a release newer than the machine's debootstrap uses sid's.
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
MIRROR = "http://deb.debian.org/debian"
VARIANT = "minbase"
INCLUDE = ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2", "procps")

DEFAULT_LAB_DIR = Path("/var/lib/valkey-plans-lab")
LAB_DIR_ENV = "VALKEY_PLANS_LAB_DIR"


def lab_dir() -> Path:
    """The lab's directory: state, keys, rootfs cache and host overlays (env overrides it)."""
    return Path(os.environ.get(LAB_DIR_ENV) or DEFAULT_LAB_DIR)


def state_file(base: Path | None = None) -> Path:
    """The JSON file that `status()`, the inventory and the tests read."""
    return (base or lab_dir()) / "state.json"


def proxy_url() -> str:
    """The apt proxy URL that hosts are configured with."""
    return f"http://{BRIDGE_ADDRESS}:{PROXY_PORT}"
