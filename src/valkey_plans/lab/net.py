"""The lab network: one bridge on the lab /24, one namespace per host joined by a veth pair.

Hosts get an address on the lab /24 and no default route, so the only peers they can reach are
the bridge address (apt-cacher-ng) and each other.
"""

from __future__ import annotations

import json
from pathlib import Path

from valkey_plans.lab import config
from valkey_plans.lab.run import run


def _links() -> list[dict[str, object]]:
    return json.loads(run("ip", "-json", "link", "show").stdout or "[]")


def link_exists(name: str) -> bool:
    """True when a network interface `name` exists in this (the root) namespace."""
    return any(link.get("ifname") == name for link in _links())


def lab_links() -> list[str]:
    """Interfaces in the root namespace that the lab named: its bridge and host veths."""
    names = [str(link.get("ifname")) for link in _links()]
    return [n for n in names if n == config.BRIDGE or n.startswith(config.PREFIX)]


def lab_namespaces() -> list[str]:
    """Network namespaces the lab named (from `ip netns list`)."""
    out = run("ip", "-json", "netns", "list").stdout
    names = [str(ns["name"]) for ns in json.loads(out or "[]")]
    return [n for n in names if n.startswith(config.PREFIX)]


def _check_subnet_free() -> None:
    """Refuse to start if anything but our bridge already routes the lab /24."""
    routes = json.loads(run("ip", "-json", "route", "show", "match", str(config.SUBNET)).stdout)
    for route in routes:
        if route.get("dst") != "default" and route.get("dev") != config.BRIDGE:
            raise RuntimeError(
                f"the lab subnet {config.SUBNET} is already routed via {route.get('dev')}; "
                "the lab uses it alone"
            )


def ensure_bridge() -> bool:
    """Create the lab bridge with the bridge address; True if this call created it."""
    if link_exists(config.BRIDGE):
        return False
    _check_subnet_free()
    run("ip", "link", "add", config.BRIDGE, "type", "bridge")
    run(
        "ip",
        "addr",
        "add",
        f"{config.BRIDGE_ADDRESS}/{config.SUBNET.prefixlen}",
        "dev",
        config.BRIDGE,
    )
    run("ip", "link", "set", config.BRIDGE, "up")
    return True


def add_host(netns: str, veth: str, address: str) -> None:
    """A namespace `netns` whose `eth0` has `address`, wired to the bridge via veth `veth`."""
    run("ip", "netns", "add", netns)
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    run("ip", "link", "set", veth, "master", config.BRIDGE, "up")
    run("ip", "-n", netns, "link", "set", "lo", "up")
    run("ip", "-n", netns, "addr", "add", f"{address}/{config.SUBNET.prefixlen}", "dev", "eth0")
    run("ip", "-n", netns, "link", "set", "eth0", "up")


def namespace_pids(netns: str) -> list[int]:
    """Processes inside namespace `netns` (a container whose nspawn died keeps running)."""
    if not Path("/run/netns", netns).exists():
        return []
    return [int(pid) for pid in run("ip", "netns", "pids", netns).stdout.split()]


def remove_namespace(netns: str) -> None:
    """Delete a namespace (its eth0 goes with it, and so does the veth peer)."""
    if Path("/run/netns", netns).exists():
        run("ip", "netns", "delete", netns)


def remove_link(name: str) -> None:
    """Delete an interface if it still exists. A veth whose peer's namespace was just
    deleted vanishes on its own a moment later (the kernel frees namespaces
    asynchronously), so a failed delete counts only if the link is still there."""
    if link_exists(name):
        done = run("ip", "link", "delete", name, check=False)
        if done.returncode != 0 and link_exists(name):
            raise RuntimeError(f"could not delete {name}: {done.stderr.strip()}")


def cut_off(veth: str) -> None:
    """Take a host off the lab bridge (its veth down), as if its network failed."""
    run("ip", "link", "set", veth, "down")


def reconnect(veth: str) -> None:
    """Put a host cut off by `cut_off` back on the bridge."""
    run("ip", "link", "set", veth, "up")
