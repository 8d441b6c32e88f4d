"""apt-cacher-ng on the bridge address: the hosts' only way to Debian's archive.

Hosts have no DNS and no default route; apt sends each request, mirror name included, to the
proxy, which resolves and fetches it. If an apt-cacher-ng already answers on the bridge address
(a system service listening on all addresses, as on a machine with systemd), the lab uses it and
leaves it alone; otherwise it starts its own, bound to the bridge address only, and records it
so that `down()` stops exactly that process.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from valkey_plans.lab import config, procs
from valkey_plans.lab.state import Proc


def listening(timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on the proxy address."""
    try:
        with socket.create_connection((str(config.BRIDGE_ADDRESS), config.PROXY_PORT), timeout):
            return True
    except OSError:
        return False


def ensure(base: Path, wait: float = 20.0) -> Proc | None:
    """Make the proxy answer; return the process if the lab started it, None if it was there."""
    if listening():
        return None
    home = base / "apt-cacher-ng"
    for sub in ("cache", "log", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    proc = procs.spawn(
        [
            "apt-cacher-ng",
            "-c",
            "/etc/apt-cacher-ng",
            "ForeGround=1",
            f"BindAddress={config.BRIDGE_ADDRESS}",
            f"Port={config.PROXY_PORT}",
            f"CacheDir={home / 'cache'}",
            f"LogDir={home / 'log'}",
            f"PidFile={home / 'run' / 'pid'}",
            f"SocketPath={home / 'run' / 'socket'}",
        ],
        home / "log" / "stdout.log",
    )
    deadline = time.monotonic() + wait
    while not listening():
        if not procs.alive(proc) or time.monotonic() > deadline:
            procs.stop(proc)
            raise RuntimeError(f"apt-cacher-ng did not start; see {home / 'log'}")
        time.sleep(0.2)
    return proc
