"""The Prometheus exporters on real systemd hosts (Debian 12, 13 and 14), and verify's check.

After a deploy with ACLs on, each instance's exporter (`valkey-plans-exporter@NAME`, as
`prometheus`, settings in a root-only env file) answers on its planned address with
`redis_up 1` and its instance's keyspace; a wrong exporter password, written behind the
deploy's back, makes verify fail on exactly the exporter check; with exporters off they
are stopped, disabled and their env files gone, and verify says N/A.
"""

from __future__ import annotations

import json
import shlex

import pytest

from tests.deploy.pyinfra_run import project_command
from tests.lab.pyinfra_lab import INVENTORY, deploy, plan_env
from tests.lab.test_deploy_lab import BASE, PORTS
from valkey_plans.lab.inventory import secrets_file
from valkey_plans.plan.layout import DEBIAN, exporter_paths
from valkey_plans.verify.checks.test_exporter import FETCH, samples

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

CHECK = "test_exporters_up_and_serving_their_instance"
OFFSET = 3000


@pytest.fixture(scope="module")
def acl_plan(lab_hosts) -> dict:
    """The lab's base plan with ACL users (passwords generated into the lab dir)."""
    secrets = secrets_file(lab_hosts.state, "exporter")
    return {**BASE, "valkey_acl": True, "valkey_secrets_file": secrets}


@pytest.fixture(scope="module")
def deployed(lab_hosts, acl_plan):
    """The ACL plan deployed on every lab host; the base plan again afterwards."""
    run = deploy(plan_env({**acl_plan, "valkey_secrets_generate": True}))
    assert run.returncode == 0, run.tail()
    yield acl_plan
    back = deploy(plan_env(BASE))
    assert back.returncode == 0, f"could not converge back to the base plan:\n{back.tail()}"


def metrics(lab, host, instance: str) -> dict[str, str]:
    """The exporter page of `instance` on `host`, read on the host (as verify reads it)."""
    url = f"http://127.0.0.1:{PORTS[instance] + OFFSET}/metrics"
    return samples(lab.check(host, f"python3 -c {shlex.quote(FETCH)} {url}"))


def admin_cli(instance: str, *args: str) -> str:
    """valkey-cli as admin on the host, its password read there from the deploy's file."""
    auth = DEBIAN.paths(instance).auth_file("admin")
    command = shlex.join(["valkey-cli", "--no-auth-warning", "--user", "admin"])
    command += f" -p {PORTS[instance]} {shlex.join(args)}"
    return f"REDISCLI_AUTH=$(cat {auth}) {command}"


def verify(plan: dict) -> dict[tuple[str, str], dict]:
    """`valkey-plans verify --json` over the lab: rows by (host, check)."""
    args = ["valkey-plans", "verify", INVENTORY, "--json"]
    code, output = project_command(args, 900, plan_env(plan))
    start = output.find("[")
    assert start >= 0, f"no JSON from verify (exit {code}):\n{output[-3000:]}"
    rows, _ = json.JSONDecoder().raw_decode(output[start:])
    return {(row["host"], row["check"]): row for row in rows}


def test_each_exporter_serves_its_instance_on_the_planned_address(lab_hosts, deployed):
    with open(deployed["valkey_secrets_file"]) as file:
        password = json.load(file)["exporter"]
    for host in lab_hosts.hosts:
        lab_hosts.check(host, admin_cli("cache", "SET", "exporter@example.org", "usr:x"))
        for instance in PORTS:
            unit = f"valkey-plans-exporter@{instance}"
            assert lab_hosts.check(host, f"systemctl is-active {unit}").strip() == "active"
            assert lab_hosts.check(host, f"systemctl is-enabled {unit}").strip() == "enabled"
            found = metrics(lab_hosts, host, instance)
            assert found.get("redis_up") == "1", f"{host.name}/{instance}: {found.get('redis_up')}"
            keys = found.get('redis_db_keys{db="db0"}')
            assert keys is not None, f"{host.name}/{instance}: no db0 keyspace"
            if instance == "cache":
                assert int(keys) >= 1, f"{host.name}: cache db0 has {keys} keys"
            env = exporter_paths(DEBIAN, instance).env_file
            owner = lab_hosts.check(host, f"stat -c '%U:%G %a' {env}").strip()
            assert owner == "root:root 600", f"{host.name}: {env} is {owner}"
        users = lab_hosts.check(host, "ps -o user= -C prometheus-redis-exporter").split()
        assert users and set(users) == {"prometheus"}, f"{host.name}: exporters run as {users}"
        args = lab_hosts.check(host, "ps -eo args")
        assert password not in args and "REDIS_PASSWORD" not in args, f"{host.name}: ps shows it"
        default = lab_hosts.run(host, "systemctl is-active prometheus-redis-exporter").stdout
        assert default.strip() == "inactive", f"{host.name}: the package's exporter runs"
        lab_hosts.check(host, admin_cli("cache", "DEL", "exporter@example.org"))


def test_verify_passes_the_exporter_check_on_every_host(lab_hosts, deployed):
    rows = verify(deployed)
    for host in lab_hosts.hosts:
        row = rows[(host.name, CHECK)]
        assert row["status"] == "pass", row


def test_a_wrong_exporter_password_fails_exactly_that_check(lab_hosts, deployed):
    target = lab_hosts.host("trixie")
    env = exporter_paths(DEBIAN, "cache").env_file
    lab_hosts.check(
        target,
        f"sed -i \"s/^REDIS_PASSWORD=.*/REDIS_PASSWORD='wrong-password-0123456789'/\" {env}"
        " && systemctl restart valkey-plans-exporter@cache",
    )
    try:
        rows = verify(deployed)
    finally:
        again = deploy(plan_env(deployed))
    failed = {key: row for key, row in rows.items() if row["status"] in ("fail", "error")}
    assert set(failed) == {(target.name, CHECK)}, failed
    assert "redis_up 0" in failed[(target.name, CHECK)]["reason"], failed
    assert again.returncode == 0, again.tail()
    assert metrics(lab_hosts, target, "cache").get("redis_up") == "1"


def test_exporters_off_are_stopped_disabled_and_verify_says_na(lab_hosts, deployed):
    off = {**deployed, "valkey_exporter": {"enabled": False}}
    try:
        run = deploy(plan_env(off))
        assert run.returncode == 0, run.tail()
        for host in lab_hosts.hosts:
            for instance in PORTS:
                unit = f"valkey-plans-exporter@{instance}"
                state = lab_hosts.run(host, f"systemctl is-active {unit}").stdout.strip()
                assert state == "inactive", f"{host.name}: {unit} is {state}"
                env = exporter_paths(DEBIAN, instance).env_file
                assert lab_hosts.run(host, f"test -e {env}").returncode == 1, env
        rows = verify(off)
        for host in lab_hosts.hosts:
            assert rows[(host.name, CHECK)]["status"] == "n/a", rows[(host.name, CHECK)]
    finally:
        back = deploy(plan_env(deployed))
        assert back.returncode == 0, back.tail()
