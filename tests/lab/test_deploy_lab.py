"""The deploy, end to end, on real systemd hosts over SSH: Debian 12, 13 and 14 at once.

Debian 14 "forky" is Debian testing today: its os-release names no VERSION_ID, so the
deploy knows it by its codename, and its Valkey is 9.1.

Every run is the user's command, `pyinfra -y inventories/lab.py deploy.py`; the plan comes
from group_data/ plus the JSON the lab inventory reads from the environment (see
inventories/lab.py), so the checks see exactly the plan the deploy applied.
"""

from __future__ import annotations

import shlex

import pytest

from tests.lab.pyinfra_lab import Run, checks, deploy, plan_env
from valkey_plans.keys import new_key
from valkey_plans.lab import ssh

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

#: Two instances per host, so "restarts only that instance" has a bystander to watch.
INSTANCES = [
    {"name": "cache", "role": "cache", "port": 6379, "maxmemory": "64mb"},
    {"name": "hosted", "role": "primary", "port": 6380, "maxmemory": "64mb"},
]
BASE = {"valkey_instances": INSTANCES}
VERSIONS = {
    "bookworm": ("8.0.", "bookworm-backports"),
    "trixie": ("8.1.", "trixie"),
    "forky": ("9.1.", "forky"),
}


def with_cache(**changes: object) -> dict:
    """The base plan with the cache instance's settings changed."""
    instances = [{**i, **changes} if i["name"] == "cache" else i for i in INSTANCES]
    return {"valkey_instances": instances}


PORTS = {i["name"]: i["port"] for i in INSTANCES}


class Valkey:
    """valkey-cli on a lab host over SSH, talking to one instance on its planned port."""

    def __init__(self, lab, host) -> None:
        self.lab, self.host = lab, host

    def cli(self, instance: str, *args: str, db: int = 0) -> str:
        command = ["valkey-cli", "-p", str(PORTS[instance]), "-n", str(db), *args]
        return self.lab.check(self.host, shlex.join(command)).strip()

    def config(self, instance: str, name: str) -> str:
        return self.cli(instance, "CONFIG", "GET", name).splitlines()[1]

    def remember(self, email: str) -> str:
        """Write data the plan allows: a user record on `hosted`, its index entry on `cache`.

        Both live without a TTL (db 0 of each instance), so nothing but loss removes them.
        """
        key = new_key("usr")
        self.cli("hosted", "SET", key, f"record of {email}")
        self.cli("cache", "SET", email, key, db=0)
        return key

    def recall(self, email: str, key: str) -> tuple[str, str]:
        """(index entry on cache, record on hosted) as written by `remember`."""
        return self.cli("cache", "GET", email, db=0), self.cli("hosted", "GET", key)

    def pid(self, instance: str) -> int:
        unit = f"valkey-server@{instance}"
        return int(self.lab.check(self.host, f"systemctl show -p MainPID --value {unit}"))


@pytest.fixture(scope="module")
def first_deploy(lab_hosts) -> Run:
    """The first deploy of the base plan on both fresh hosts, in one parallel pyinfra run."""
    run = deploy(plan_env(BASE))
    assert run.returncode == 0, run.tail()
    return run


@pytest.fixture
def restore(lab_hosts, first_deploy):
    """After a test that changes or breaks the plan, converge back to the base plan."""
    yield
    run = deploy(plan_env(BASE))
    assert run.returncode == 0, f"could not converge back to the base plan:\n{run.tail()}"


def hosts_url(lab) -> str:
    return ssh.testinfra_hosts(lab.state)


def test_first_deploy_installs_each_release_s_valkey_and_runs_the_instances(
    lab_hosts, first_deploy
):
    for host in lab_hosts.hosts:
        assert first_deploy.changed(host.name) > 0, f"{host.name}: nothing deployed"
        assert first_deploy.count(host.name, "Error") == 0
        prefix, archive = VERSIONS[host.release]
        version = lab_hosts.check(host, "dpkg-query -W -f '${Version}' valkey-server")
        assert version.split(":")[-1].startswith(prefix), f"{host.name}: valkey {version}"
        policy = lab_hosts.check(host, "apt-cache policy valkey-server")
        installed_from = policy.split("***", 1)[1].splitlines()[1]
        assert archive in installed_from, f"{host.name}: installed from {installed_from!r}"
        for instance in ("cache", "hosted"):
            unit = f"valkey-server@{instance}"
            assert lab_hosts.check(host, f"systemctl is-active {unit}").strip() == "active"
            assert lab_hosts.check(host, f"systemctl is-enabled {unit}").strip() == "enabled"
        default = lab_hosts.run(host, "systemctl is-enabled valkey-server.service").stdout
        assert default.strip() in ("disabled", "masked"), f"{host.name}: default unit {default}"
        active = lab_hosts.run(host, "systemctl is-active valkey-server.service").stdout
        assert active.strip() == "inactive", f"{host.name}: default unit is {active.strip()}"
        held = lab_hosts.check(host, "apt-mark showhold").split()
        assert {"valkey-server", "valkey-tools"} <= set(held), f"{host.name}: held {held}"


def test_what_a_boot_runs_leaves_the_config_modes_and_the_next_deploy_has_nothing_to_do(
    lab_hosts, first_deploy
):
    """systemd-tmpfiles runs at every boot; Valkey 9.1's own rule (`Z /etc/valkey 2770`)
    would make every file there group-writable but for the deploy's replacement. The run
    is limited to /etc/valkey: a container's other rules (/proc, /sys) fail on their own."""
    for host in lab_hosts.hosts:
        lab_hosts.check(host, "systemd-tmpfiles --create --prefix /etc/valkey")
        modes = lab_hosts.check(host, "stat -c '%n %a' /etc/valkey/valkey-*.conf").split()
        assert "/etc/valkey/valkey-cache.conf" in modes, f"{host.name}: {modes}"
        assert set(modes[1::2]) == {"640"}, f"{host.name}: {modes}"


def test_second_run_changes_nothing_on_any_host(lab_hosts, first_deploy):
    again = deploy(plan_env(BASE))
    assert again.returncode == 0, again.tail()
    for host in lab_hosts.hosts:
        changed = again.changed_operations(host.name)
        assert not changed, f"{host.name} changed on rerun: {changed}"
        assert again.count(host.name, "No changes") > 0, again.tail()


def test_checks_pass_on_every_host_over_ssh(lab_hosts, first_deploy):
    result = checks(plan_env(BASE), hosts_url(lab_hosts))
    assert result.returncode == 0, result.tail()
    assert "failed" not in result.output, result.tail()
    for host in lab_hosts.hosts:
        passed = [line for line in result.output.splitlines() if "PASSED" in line]
        assert any(f"{host.address}]" in line for line in passed), f"{host.name} not checked"


def test_changed_maxmemory_restarts_only_that_instance_and_keeps_data(
    lab_hosts, first_deploy, restore
):
    target = lab_hosts.host("bookworm")
    bystander = lab_hosts.host("trixie")
    valkeys = {h.name: Valkey(lab_hosts, h) for h in lab_hosts.hosts}
    written = {name: v.remember("restart@example.org") for name, v in valkeys.items()}
    before = {(h, i): v.pid(i) for h, v in valkeys.items() for i in ("cache", "hosted")}

    changed = deploy(plan_env(BASE, {target.name: with_cache(maxmemory="48mb")}))

    assert changed.returncode == 0, changed.tail()
    assert changed.changed(target.name) > 0
    assert changed.changed(bystander.name) == 0, changed.changed_operations(bystander.name)
    after = {(h, i): v.pid(i) for h, v in valkeys.items() for i in ("cache", "hosted")}
    assert after[(target.name, "cache")] != before[(target.name, "cache")], "cache not restarted"
    unchanged = {k: pid for k, pid in after.items() if k != (target.name, "cache")}
    assert unchanged == {k: before[k] for k in unchanged}, "an unchanged instance restarted"
    assert valkeys[target.name].config("cache", "maxmemory") == str(48 * 1024 * 1024)
    assert valkeys[bystander.name].config("cache", "maxmemory") == str(64 * 1024 * 1024)
    for name, v in valkeys.items():
        want = (written[name], "record of restart@example.org")
        assert v.recall("restart@example.org", written[name]) == want, f"{name}: data lost"


def test_value_valkey_rejects_leaves_the_old_instance_running_with_its_data(
    lab_hosts, first_deploy, restore
):
    target = lab_hosts.host("trixie")
    v = Valkey(lab_hosts, target)
    key = v.remember("rejected@example.org")
    pid = v.pid("cache")
    conf = "/etc/valkey/valkey-cache.conf"
    config_before = lab_hosts.check(target, f"cat {conf}")

    rejected = deploy(
        plan_env(BASE, {target.name: with_cache(extra_config={"activedefrag": "maybe"})})
    )

    assert rejected.returncode != 0, f"a config Valkey rejects was deployed:\n{rejected.tail()}"
    assert rejected.count(target.name, "Error") > 0, rejected.tail()
    assert "activedefrag" in rejected.output, "the failure does not name the rejected setting"
    assert v.pid("cache") == pid, "the old instance was stopped or restarted"
    assert lab_hosts.check(target, "systemctl is-active valkey-server@cache").strip() == "active"
    assert lab_hosts.check(target, f"cat {conf}") == config_before, "config file was replaced"
    want = (key, "record of rejected@example.org")
    assert v.recall("rejected@example.org", key) == want, "data lost"


def test_checks_name_the_failing_check_on_a_host_edited_behind_the_deploys_back(
    lab_hosts, first_deploy, restore
):
    broken = lab_hosts.host("trixie")
    healthy = lab_hosts.host("bookworm")
    conf = "/etc/valkey/valkey-cache.conf"
    lab_hosts.check(
        broken,
        f"sed -i 's/^maxmemory-policy .*/maxmemory-policy allkeys-lru/' {conf}"
        " && systemctl restart valkey-server@cache",
    )

    result = checks(plan_env(BASE), hosts_url(lab_hosts))

    assert result.returncode != 0, f"checks passed on an edited host:\n{result.tail()}"
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED checks/")]
    assert failed, result.tail()
    assert all(f"{broken.address}]" in line for line in failed), failed
    assert not any(f"{healthy.address}]" in line for line in failed), failed
    assert "maxmemory-policy" in result.output, "the failure does not say what differs"

    repaired = deploy(plan_env(BASE))
    assert repaired.returncode == 0, repaired.tail()
    assert repaired.changed(broken.name) > 0, repaired.tail()
    assert repaired.changed(healthy.name) == 0, repaired.changed_operations(healthy.name)
    again = checks(plan_env(BASE), hosts_url(lab_hosts))
    assert again.returncode == 0, again.tail()


def test_data_written_before_a_redeploy_is_there_after_it(lab_hosts, first_deploy, restore):
    valkeys = [Valkey(lab_hosts, h) for h in lab_hosts.hosts]
    written = [v.remember("redeploy@example.org") for v in valkeys]

    # A redeploy that restarts every instance (a changed value on both hosts), then another
    # back to the base plan: two restarts that must keep everything.
    assert deploy(plan_env(with_cache(maxmemory="40mb"))).returncode == 0
    assert deploy(plan_env(BASE)).returncode == 0

    for v, key in zip(valkeys, written, strict=True):
        want = (key, "record of redeploy@example.org")
        assert v.recall("redeploy@example.org", key) == want, f"{v.host.name}: data lost"
