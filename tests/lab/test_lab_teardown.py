"""`lab down` leaves nothing behind, and a crashed lab is cleaned up by the next `lab up`.

These tests take the session's lab down, so tests/lab/conftest.py runs them last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from valkey_plans import lab
from valkey_plans.lab import config, procs

pytestmark = [pytest.mark.lab, pytest.mark.root]


def _lab_netns_inodes() -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in Path("/run/netns").glob(f"{config.PREFIX}*")}


def _live_pids_in(inodes: set[int]) -> list[int]:
    """Live (not zombie) processes whose network namespace is one of `inodes`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            inode = (proc / "ns/net").stat().st_ino
        except OSError:
            continue
        if inode in inodes and procs.start_time(int(proc.name)) is not None:
            found.append(int(proc.name))
    return found


def _pids_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True)
    return [
        line
        for line in out.stdout.splitlines()
        if text in line and line.split()[1][0] != "Z" and "pytest" not in line
    ]


def assert_nothing_left(inodes: set[int], pids: list[int]) -> None:
    """No namespace, mount, link, state or process of the lab remains."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert config.PREFIX not in netns, f"namespaces left: {netns}"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert config.PREFIX not in links, f"interfaces left: {links}"
    lab_dir = str(config.lab_dir())
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if lab_dir in line]
    assert not mounts, f"mounts left: {mounts}"
    assert not config.state_file().exists()
    assert not _live_pids_in(inodes), "processes left in the lab's network namespaces"
    left = [pid for pid in pids if procs.start_time(pid) is not None and _alive(pid)]
    assert not left, f"processes the lab started are still running: {left}"
    assert not _pids_mentioning(lab_dir), _pids_mentioning(lab_dir)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_down_leaves_no_namespace_mount_bridge_or_process(lab_hosts):
    state = json.loads(config.state_file().read_text())
    pids = [h["proc"]["pid"] for h in state["hosts"]]
    if state["proxy"]:
        pids.append(state["proxy"]["pid"])
    inodes = set(_lab_netns_inodes().values())
    assert len(inodes) == len(lab_hosts.hosts)
    assert _live_pids_in(inodes), "the lab's hosts were not running before down"

    lab.down()

    assert_nothing_left(inodes, pids)
    # What is kept on purpose: the rootfs cache and the lab's ssh key.
    assert any((config.lab_dir() / "rootfs").glob("bookworm-*"))


def test_next_up_cleans_a_crashed_lab_even_without_its_state_file():
    state = lab.up(1, ["bookworm"])
    host = state.hosts[0]
    assert host.proc is not None
    inodes = set(_lab_netns_inodes().values())
    # A crash as bad as it gets: nspawn killed outright (its container keeps running)
    # and the state file gone, so only the lab's names are left to find things by.
    os.kill(host.proc.pid, signal.SIGKILL)
    config.state_file().unlink()
    orphans = [(pid, procs.start_time(pid)) for pid in _live_pids_in(inodes)]
    assert orphans, "the container should outlive its killed nspawn"

    again = lab.up(1, ["bookworm"])
    assert again.hosts[0].proc != host.proc
    left = [pid for pid, started in orphans if procs.start_time(pid) == started and _alive(pid)]
    assert not left, f"the crashed host's container is still running: {left}"
    inodes = set(_lab_netns_inodes().values())
    lab.down()

    assert_nothing_left(inodes, [host.proc.pid])
