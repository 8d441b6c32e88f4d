"""`up`, `status` and `down`: the lab's whole life, serialised by a lock file in the lab dir."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from valkey_plans.lab import config, hosts, mounts, net, procs, proxy, rootfs, ssh, state
from valkey_plans.lab.state import LabState, Proc


@contextmanager
def _locked(base: Path) -> Iterator[None]:
    """One `up`/`down` at a time per lab dir (CLI and test fixture may race)."""
    base.mkdir(parents=True, exist_ok=True)
    with (base / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def assign(n: int, releases: Sequence[str]) -> list[str]:
    """Release of each of `n` hosts: round-robin over `releases` (bookworm and trixie if none).

    So `lab up 2` gives one bookworm and one trixie host; forky only when asked for.
    """
    if n < 1:
        raise ValueError("the lab needs at least one host")
    chosen = list(releases) or list(config.DEFAULT_RELEASES)
    for release in chosen:
        if release not in config.RELEASES:
            raise ValueError(f"release {release!r} is not one of {', '.join(config.RELEASES)}")
    return [chosen[i % len(chosen)] for i in range(n)]


def up(n: int, releases: Sequence[str] = ()) -> LabState:
    """Bring up `n` booted hosts; reuse a running lab of the same shape, else rebuild it.

    A running lab whose hosts are the first of the wanted ones grows: the missing hosts
    are added and the running ones are left alone (so a cluster can gain a host).
    Anything left by an earlier run (crashed or not) is removed first, so a failed `up` can
    simply be run again.
    """
    wanted = assign(n, releases)
    base = config.lab_dir()
    with _locked(base):
        old = state.load(base)
        have = [h.release for h in old.hosts] if old else []
        reusable = bool(have) and have == wanted[: len(have)] and _healthy(old)  # type: ignore[arg-type]
        if reusable and have == wanted:
            return old
        if not reusable:
            _teardown(base, old)
        try:
            return _extend(old, wanted) if old and reusable else _build(base, wanted)
        except BaseException:
            _teardown(base, state.load(base))
            raise


def _build(base: Path, wanted: list[str]) -> LabState:
    lab = LabState(
        lab_dir=str(base),
        ssh_key=str(ssh.ensure_client_key(base)),
        known_hosts=str(base / "ssh" / "known_hosts"),
        ssh_config=str(base / "ssh" / "config"),
    )
    releases = sorted(set(wanted))
    with ThreadPoolExecutor() as pool:
        built = pool.map(lambda r: rootfs.ensure(r, base), releases)
        lowers = dict(zip(releases, built, strict=True))
    state.save(lab)
    lab.bridge_created = net.ensure_bridge()
    state.save(lab)
    lab.proxy = proxy.ensure(base)
    # Hosts are recorded before they exist, so a crash halfway is still cleaned up.
    lab.hosts = [hosts.plan(base, i + 1, r, lowers[r]) for i, r in enumerate(wanted)]
    state.save(lab)
    host_keys = {host.name: hosts.prepare(lab, host) for host in lab.hosts}
    ssh.write_client_files(lab, host_keys)
    for host in lab.hosts:
        hosts.boot(lab, host)
        state.save(lab)
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda h: hosts.wait_ready(lab, h), lab.hosts))
    return lab


def _extend(lab: LabState, wanted: list[str]) -> LabState:
    """Add hosts to a running, healthy lab until it has `wanted`; running hosts keep running."""
    base = Path(lab.lab_dir)
    host_keys = _known_host_keys(lab)
    first_new = len(lab.hosts)
    for index in range(first_new, len(wanted)):
        lower = rootfs.ensure(wanted[index], base)
        lab.hosts.append(hosts.plan(base, index + 1, wanted[index], lower))
    state.save(lab)
    added = lab.hosts[first_new:]
    for host in added:
        host_keys[host.name] = hosts.prepare(lab, host)
    ssh.write_client_files(lab, host_keys)
    for host in lab.hosts[:first_new]:
        hosts.write_etc_hosts(lab, host)
    for host in added:
        hosts.boot(lab, host)
        state.save(lab)
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda h: hosts.wait_ready(lab, h), added))
    return lab


def _known_host_keys(lab: LabState) -> dict[str, str]:
    """Host name -> public key line, read back from the lab's known_hosts file."""
    keys = {}
    for line in Path(lab.known_hosts).read_text().splitlines():
        names, _, key = line.partition(" ")
        if key:
            keys[names.split(",")[0]] = key
    return keys


def _healthy(lab: LabState) -> bool:
    """Every host's nspawn runs and answers over SSH (and the proxy is up)."""
    if not proxy.listening():
        return False
    for host in lab.hosts:
        if host.proc is None or not procs.alive(host.proc):
            return False
        if ssh.ssh_run(lab, host, "true", timeout=30).returncode != 0:
            return False
    return True


@dataclass(frozen=True)
class HostStatus:
    """What `status()` reports per host."""

    name: str
    release: str
    address: str
    running: bool
    ssh: bool


def status() -> tuple[LabState | None, list[HostStatus]]:
    """The saved state and, per host, whether its container runs and SSH answers."""
    lab = state.load(config.lab_dir())
    if lab is None:
        return None, []
    report = []
    for host in lab.hosts:
        running = host.proc is not None and procs.alive(host.proc)
        reachable = running and ssh.ssh_run(lab, host, "true", timeout=30).returncode == 0
        report.append(HostStatus(host.name, host.release, host.address, running, reachable))
    return lab, report


def down() -> None:
    """Remove every host, namespace, mount, bridge and process the lab started; keep caches."""
    base = config.lab_dir()
    with _locked(base):
        _teardown(base, state.load(base))


def _teardown(base: Path, lab: LabState | None) -> None:
    """Remove what `lab` names plus anything carrying the lab's names (a crash without state)."""
    ssh.close_shared_connections(base)
    recorded = [h.proc for h in lab.hosts if h.proc] if lab else []
    for proc in recorded + _orphans(base, "systemd-nspawn", f"--directory={base / 'hosts'}/"):
        procs.stop(proc)
    for netns in net.lab_namespaces():  # containers that outlived a killed nspawn
        procs.kill_all(net.namespace_pids(netns))
    mounts.unmount_under(base / "hosts")
    shutil.rmtree(base / "hosts", ignore_errors=True)
    for netns in net.lab_namespaces():
        net.remove_namespace(netns)
    for link in net.lab_links():
        net.remove_link(link)
    proxies = [lab.proxy] if lab and lab.proxy else []
    cache_arg = f"CacheDir={base / 'apt-cacher-ng' / 'cache'}"
    for proc in proxies + _orphans(base, "apt-cacher-ng", cache_arg):
        procs.stop(proc)
    for host in lab.hosts if lab else []:
        _rmdir_quiet(Path("/run/systemd/nspawn/propagate") / host.name)
    state.remove(base)


def _orphans(base: Path, program: str, marker: str) -> list[Proc]:
    """Processes running `program` whose arguments contain `marker` (a path inside the lab)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].decode(errors="replace").endswith(program):
            continue
        if any(marker in a.decode(errors="replace") for a in argv):
            pid = int(cmdline.parent.name)
            started = procs.start_time(pid)
            if started is not None:
                found.append(Proc(pid=pid, start_time=started))
    return found


def _rmdir_quiet(path: Path) -> None:
    with suppress(OSError):
        path.rmdir()
