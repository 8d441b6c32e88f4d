"""Debian 14 forky in the release matrix: its own Valkey 9.1, deployed and checked.

The lab's other modules run on bookworm (8.0) and trixie (8.1); this one grows the lab by
three forky hosts (Debian testing today: its os-release names no VERSION_ID, so the deploy
knows it by its codename) and runs the lab inventory's base plan there, a cache and a
primary, with the user's commands: the deploy, then every check of `checks/` (templates,
live config, ACL-free logins, the Functions library and the canary through the client
module, the keyspace audit, the exporters), then what a boot runs (systemd-tmpfiles, whose
rule in Valkey 9.1's package would chmod every file in /etc/valkey to 2770 but for the
deploy's replacement), then the deploy again, which changes nothing. Then the scale-out
inventories, replication with Sentinel and a Valkey Cluster, on the three forky hosts,
and the Sentinel lab's drill there: the primary's host lost.
"""

from __future__ import annotations

import re

import pytest

from tests.deploy.pyinfra_run import pyinfra, valkey_plans
from tests.lab.pyinfra_lab import checks, deploy, hosts_url, plan_env
from tests.lab.test_sentinel_lab import primary_loss_drill
from valkey_plans.lab import up as lab_up
from valkey_plans.lab.inventory import RELEASE_ENV

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

BASE = {
    "valkey_instances": [
        {"name": "cache", "role": "cache", "port": 6379, "maxmemory": "64mb"},
        {"name": "hosted", "role": "primary", "port": 6380, "maxmemory": "64mb"},
    ]
}


@pytest.fixture(scope="module")
def forky_hosts(lab_hosts):
    """Three forky hosts added to the lab (after every other lab module but the teardown)."""
    releases = [h.release for h in lab_hosts.hosts]
    lab_hosts.state = lab_up(len(releases) + 3, [*releases, *["forky"] * 3])
    return [h for h in lab_hosts.hosts if h.release == "forky"]


@pytest.fixture(scope="module")
def forky(forky_hosts):
    return forky_hosts[0]


def test_the_deploy_and_every_check_pass_on_forky_with_its_own_valkey_9_1(lab_hosts, forky):
    lab = lab_hosts
    env = plan_env(BASE)
    first = deploy(env, limit=forky.name)
    assert first.returncode == 0, first.tail()
    for port in (6379, 6380):
        info = lab.check(forky, f"valkey-cli -p {port} INFO server")
        assert "valkey_version:9.1." in info, info[:500]
    assert "forky" in lab.check(forky, "apt-cache policy valkey-server | sed -n 3,6p")
    held = lab.check(forky, "apt-mark showhold").split()
    assert {"valkey-server", "valkey-tools"} <= set(held), held

    checked = checks(env, hosts_url(lab, [forky]))
    assert checked.returncode == 0, checked.tail()
    assert " passed" in checked.output and "failed" not in checked.output, checked.tail()

    # what every boot runs: Valkey 9.1's own rule would make every file there 2770
    lab.check(forky, "systemd-tmpfiles --create")
    modes = lab.check(forky, "stat -c '%n %a' /etc/valkey/valkey-*.conf").split()
    assert modes[1::2] == ["640", "640"], modes
    again = deploy(env, limit=forky.name)
    assert again.returncode == 0 and again.changed(forky.name) == 0, again.tail()


@pytest.mark.parametrize("inventory", ["inventories/replication.py", "inventories/cluster.py"])
def test_replication_with_sentinel_and_a_cluster_run_on_forky_s_valkey_9_1(
    lab_hosts, forky_hosts, inventory
):
    """The scale-out inventories on three forky hosts (one series for the whole group):
    the deploy, `valkey-plans verify` (replication linked, sentinels in quorum, the
    cluster whole, the canary through the client module), and a rerun with no change."""
    env = {RELEASE_ENV: "forky"}
    first = pyinfra(inventory, env=env)
    assert first.returncode == 0, first.output[-5000:]
    for host in forky_hosts:
        assert "v=9.1." in lab_hosts.check(host, "valkey-server --version")
    verified = valkey_plans("verify", inventory, env=env)
    assert verified.returncode == 0, verified.output[-5000:]
    assert re.search(r"3 host\(s\), \d+ results: 0 failed", verified.output), verified.output
    assert verified.output.count("PASS") >= 3 * 10, verified.output[-3000:]
    again = pyinfra(inventory, env=env)
    assert again.returncode == 0 and again.changed == 0, again.output[-5000:]


def test_losing_the_primary_host_on_forky_promotes_a_replica_and_loses_no_waited_write(
    lab_hosts, forky_hosts, tmp_path
):
    """test_sentinel_lab's drill on Valkey 9.1: Sentinel's failover, the client's move to
    the new primary, the old one back as a replica, and a rerun that changes nothing."""
    env = {RELEASE_ENV: "forky"}
    deployed = pyinfra("inventories/replication.py", env=env)
    assert deployed.returncode == 0, deployed.output[-5000:]
    settings = tmp_path / "repl.env"
    settings.write_text(lab_hosts.check(forky_hosts[1], "cat /etc/valkey-plans/repl.env"))
    settings.chmod(0o600)
    primary_loss_drill(lab_hosts, forky_hosts, settings, env)
