"""Debian 14 forky in the release matrix: its own Valkey 9.1, deployed and checked.

The lab's other modules run on bookworm (8.0) and trixie (8.1); this one grows the lab by
a forky host (Debian testing today: its os-release names no VERSION_ID, so the deploy
knows it by its codename) and runs the lab inventory's base plan there, a cache and a
primary, with the user's commands: the deploy, then every check of `checks/` (templates,
live config, ACL-free logins, the Functions library and the canary through the client
module, the keyspace audit, the exporters), then what a boot runs (systemd-tmpfiles, whose
rule in Valkey 9.1's package would chmod every file in /etc/valkey to 2770 but for the
deploy's replacement), then the deploy again, which changes nothing.
"""

from __future__ import annotations

import pytest

from tests.lab.pyinfra_lab import checks, deploy, hosts_url, plan_env
from valkey_plans.lab import up as lab_up

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

BASE = {
    "valkey_instances": [
        {"name": "cache", "role": "cache", "port": 6379, "maxmemory": "64mb"},
        {"name": "hosted", "role": "primary", "port": 6380, "maxmemory": "64mb"},
    ]
}


@pytest.fixture(scope="module")
def forky(lab_hosts):
    """A forky host added to the lab (after every other lab module but the teardown)."""
    releases = [h.release for h in lab_hosts.hosts]
    lab_hosts.state = lab_up(len(releases) + 1, [*releases, "forky"])
    return lab_hosts.host("forky")


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
