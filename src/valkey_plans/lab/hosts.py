"""One lab host: overlay root, per-host identity files, a systemd-nspawn boot, readiness.

Per-host files are written into the overlay (never into the cached base): hostname, hosts,
machine id, ssh host key, the lab's login key, the apt proxy, an empty resolver config.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from valkey_plans.lab import config, mounts, net, procs, ssh
from valkey_plans.lab.state import Host, LabState

#: Timers that would run apt on their own and race the deploy for the dpkg lock.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer")


def plan(base: Path, index: int, release: str, lower: Path) -> Host:
    """The names, address and paths of host number `index` (1-based)."""
    name = f"{config.PREFIX}{index}"
    home = base / "hosts" / name
    return Host(
        name=name,
        release=release,
        address=str(config.SUBNET.network_address + config.FIRST_HOST_OFFSET + index - 1),
        netns=name,
        veth=name,
        lower=str(lower),
        upper=str(home / "upper"),
        work=str(home / "work"),
        root=str(home / "root"),
    )


def prepare(state: LabState, host: Host) -> str:
    """Create the host's namespace and root; return its public ssh host key line."""
    net.add_host(host.netns, host.veth, host.address)
    root = Path(host.root)
    mounts.mount_overlay(Path(host.lower), Path(host.upper), Path(host.work), root)
    etc = root / "etc"
    (etc / "hostname").write_text(f"{host.name}\n")
    write_etc_hosts(state, host)
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    resolv = etc / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("# lab host: no DNS; apt reaches the mirror through the proxy\n")
    (etc / "apt/apt.conf.d/00valkey-plans-lab-proxy").write_text(
        f'Acquire::http::Proxy "{state.proxy_url}";\n' + archive_checks()
    )
    for unit in MASKED_UNITS:
        link = etc / "systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    ssh.authorize(root, Path(state.ssh_key))
    return ssh.make_host_key(root, host.name)


#: apt settings a machine may have for the archive it reaches (a frozen snapshot of
#: Debian, whose testing suites carry Release files past their Valid-Until date).
ARCHIVE_CHECKS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date")


def archive_checks() -> str:
    """This machine's own apt lines for ARCHIVE_CHECKS: lab hosts reach the same archive
    (through the proxy) and must judge its Release files the same way."""
    try:
        dump = subprocess.run(
            ["apt-config", "dump"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:  # no apt here: the hosts keep apt's defaults
        return ""
    lines = [line for line in dump.splitlines() if line.split(" ", 1)[0] in ARCHIVE_CHECKS]
    return "".join(f"{line}\n" for line in lines)


def write_etc_hosts(state: LabState, host: Host) -> None:
    """The host's /etc/hosts: loopback and every lab host by name (rewritten when the lab grows)."""
    peers = "".join(f"{h.address}\t{h.name}\n" for h in state.hosts)
    etc_hosts = Path(host.root) / "etc" / "hosts"
    etc_hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{peers}")


def _unit_manager_present() -> bool:
    """True when this machine runs systemd as PID 1 with a system bus nspawn can ask."""
    return Path("/run/systemd/system").is_dir() and Path("/run/dbus/system_bus_socket").exists()


def boot(state: LabState, host: Host) -> None:
    """Start systemd-nspawn booting the host; it runs on after this process exits.

    Where systemd runs this machine, nspawn asks it for a scope of its own (a properly
    delegated cgroup for the host's systemd); without systemd (containers, this project's
    build machines) there is nobody to ask, so nspawn keeps the cgroup it was started in.
    """
    keep_unit = [] if _unit_manager_present() else ["--keep-unit"]
    argv = [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        *keep_unit,
        f"--directory={host.root}",
        f"--machine={host.name}",
        f"--network-namespace-path=/run/netns/{host.netns}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
        "--boot",
    ]
    log = Path(state.lab_dir) / "logs" / f"{host.name}.console.log"
    host.proc = procs.spawn(argv, log, env=_cgroups(host.release))


def _cgroups(release: str) -> dict[str, str]:
    """nspawn's environment for `release`: forky's systemd (262) refuses to run on the
    legacy cgroup v1 hierarchy that nspawn hands it where this machine has one (CI's
    containers do), so its hosts get a cgroup v2 hierarchy of their own. The older
    releases keep what they were tested with."""
    legacy_host = not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    if release in config.UNIFIED_CGROUP_RELEASES and legacy_host:
        return {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
    return {}


def wait_ready(state: LabState, host: Host, timeout: float = 120.0) -> str:
    """Wait until sshd answers and systemd finished booting; return `is-system-running`."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if host.proc is None or not procs.alive(host.proc):
            raise RuntimeError(f"{host.name}: systemd-nspawn exited; see {_log(state, host)}")
        try:
            done = ssh.ssh_run(state, host, "systemctl is-system-running --wait", timeout=60)
        except subprocess.TimeoutExpired:
            continue
        lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
        last = lines[-1] if lines else ""
        if done.returncode == 255:  # ssh itself failed: sshd is not up yet
            time.sleep(0.5)
            continue
        if last in ("running", "degraded"):
            return last
        time.sleep(0.5)
    raise RuntimeError(f"{host.name} did not become ready ({last!r}); see {_log(state, host)}")


def _log(state: LabState, host: Host) -> Path:
    return Path(state.lab_dir) / "logs" / f"{host.name}.console.log"
