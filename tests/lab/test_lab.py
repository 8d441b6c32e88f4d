"""The lab's hosts are real: SSH, systemd as PID 1, an isolated network, apt via the proxy."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

from valkey_plans import lab
from valkey_plans.lab import config, ssh

pytestmark = [pytest.mark.lab, pytest.mark.root]

PROJECT = Path(__file__).resolve().parents[2]


def test_each_host_runs_its_release_and_answers_ssh_as_root(lab_hosts, lab_run):
    for host in lab_hosts.hosts:
        assert lab_run(host, "id -u").strip() == "0"
        assert lab_run(host, "hostname").strip() == host.name
        codename = lab_run(host, ". /etc/os-release; echo $VERSION_CODENAME").strip()
        assert codename == host.release, f"{host.name}: {codename}, want {host.release}"


def test_systemd_is_pid_1_and_the_system_is_up(lab_hosts, lab_run):
    for host in lab_hosts.hosts:
        assert lab_run(host, "cat /proc/1/comm").strip() == "systemd"
        state = lab_hosts.run(host, "systemctl is-system-running").stdout.strip()
        assert state in ("running", "degraded"), f"{host.name}: systemd is {state!r}"
        failed = lab_run(host, "systemctl --failed --no-legend --plain")
        assert "ssh" not in failed, f"{host.name}: failed units: {failed}"


def test_hosts_have_no_default_route_and_no_way_out(lab_hosts, lab_run):
    for host in lab_hosts.hosts:
        routes = json.loads(lab_run(host, "ip -json route show"))
        assert routes, f"{host.name}: no routes at all"
        for route in routes:
            assert route["dst"] == str(config.SUBNET), f"{host.name}: unexpected route {route}"
        # No packet is sent: the kernel finds no route for any address outside the lab.
        done = lab_hosts.run(host, "ip route get 192.0.2.2")
        assert done.returncode != 0 and "unreachable" in done.stderr, done.stderr


def test_hosts_reach_each_other_on_the_lab_bridge(lab_hosts, lab_run):
    for a, b in itertools.permutations(lab_hosts.hosts, 2):
        lab_run(a, f"timeout 5 bash -c '</dev/tcp/{b.address}/22'")
        assert lab_run(a, f"getent hosts {b.name}").split()[0] == b.address


def test_apt_reaches_the_mirror_only_through_the_proxy(lab_hosts, lab_run):
    for host in lab_hosts.hosts:
        proxy = lab_run(host, "apt-config dump Acquire::http::Proxy")
        assert config.proxy_url() in proxy, f"{host.name}: apt proxy is {proxy!r}"
        sources = lab_run(host, "cat /etc/apt/sources.list")
        assert "http://deb.debian.org/debian" in sources, sources
        dns = lab_hosts.run(host, "getent hosts deb.debian.org")
        assert dns.returncode != 0, f"{host.name} resolved the mirror itself: {dns.stdout}"
        out = lab_run(host, "apt-get update 2>&1")
        assert f"http://deb.debian.org/debian {host.release}" in out, out
        assert "Err:" not in out and "W: " not in out, out


def test_status_reports_every_host_up(lab_hosts):
    state, report = lab.status()
    assert state is not None
    assert [(r.name, r.release, r.running, r.ssh) for r in report] == [
        (h.name, h.release, True, True) for h in lab_hosts.hosts
    ]


def test_up_with_the_same_shape_reuses_the_running_hosts(lab_hosts):
    again = lab.up(len(lab_hosts.hosts), [h.release for h in lab_hosts.hosts])
    assert [h.proc for h in again.hosts] == [h.proc for h in lab_hosts.hosts]


def test_cli_status_and_hosts(lab_hosts):
    cli = [str(Path(sys.executable).parent / "valkey-plans"), "lab"]
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    for host in lab_hosts.hosts:
        assert f"{host.name}  {host.release}" in status.stdout and " up" in status.stdout
    hosts = subprocess.run([*cli, "hosts"], capture_output=True, text=True, check=True)
    assert hosts.stdout.strip() == ssh.testinfra_hosts(lab_hosts.state)


def test_pyinfra_inventory_connects_over_ssh_with_strict_host_keys(lab_hosts):
    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    done = subprocess.run(
        [pyinfra, "-y", "inventories/lab.py", "exec", "--", "cat /etc/hostname"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for host in lab_hosts.hosts:
        assert f"[{host.name}] {host.name}" in output, output


def test_testinfra_reaches_every_host_over_ssh(lab_hosts):
    for url in ssh.testinfra_hosts(lab_hosts.state).split(","):
        host = testinfra.get_host(url)
        assert host.backend.NAME == "ssh"
        assert host.service("ssh").is_running
        assert host.file("/run/systemd/system").is_directory
