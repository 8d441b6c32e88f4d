"""The real deploy on this machine (@local): converge, stay put on rerun, never break data."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import valkey

from tests.deploy.pyinfra_run import pyinfra, valkey_plans
from valkey_plans.plan.inventory import load_targets
from valkey_plans.plan.secrets import load_secrets

SUDO = [] if os.geteuid() == 0 else ["sudo", "-n"]


def pid_of(name: str) -> int:
    out = subprocess.run(
        [*SUDO, "cat", f"/run/valkey-{name}/valkey-server.pid"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())


def dev_password(user: str) -> str:
    """A password from the dev plan's generated secrets file (see group_data/dev.py)."""
    (target,) = load_targets("inventories/dev.py")
    plan = target.plan
    return load_secrets(plan.secrets_file, plan.secrets_generate)[user].get_secret_value()


def root_output(*command: str) -> str:
    """Output of a command run as root (through sudo on a laptop): the files are root's."""
    return subprocess.run([*SUDO, *command], capture_output=True, text=True, check=True).stdout


def read_root_file(path: str) -> str:
    return root_output("cat", path)


def test_readme_main_command_provisions_and_verifies_the_dev_plan():
    first = valkey_plans("up", "inventories/dev.py")
    assert first.returncode == 0, first.output[-4000:]
    assert first.errors == 0
    verdict = re.search(r"(\d+) results: 0 failed", first.output)
    assert verdict and int(verdict.group(1)) >= 10, first.output[-2000:]
    checks = dev_password("checks")
    cache = valkey.Valkey(port=6379, username="checks", password=checks)
    assert cache.config_get("databases") == {"databases": "4"}
    assert cache.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
    hosted = valkey.Valkey(port=6380, username="checks", password=checks)
    assert hosted.config_get("databases") == {"databases": "1"}
    assert hosted.config_get("appendonly") == {"appendonly": "yes"}

    again = pyinfra("inventories/dev.py")
    assert again.returncode == 0, again.output[-4000:]
    assert again.changed == 0, f"second run changed something:\n{again.output[-4000:]}"
    assert again.unchanged > 0


def test_changed_value_restarts_only_that_instance_and_keeps_data(test_plan):
    inventory = test_plan()
    first = pyinfra(inventory)
    assert first.returncode == 0, first.output[-4000:]
    ports = test_plan.ports
    cache = valkey.Valkey(port=ports["vpt-cache"], db=2)
    primary = valkey.Valkey(port=ports["vpt-primary"])
    cache.set("ses:kept-across-restart", "1")
    primary.set("usr:kept", "1")
    before = {name: pid_of(name) for name in ports}

    changed = pyinfra(test_plan(cache={"maxmemory": "48mb"}))
    assert changed.returncode == 0, changed.output[-4000:]
    after = {name: pid_of(name) for name in ports}
    assert after["vpt-cache"] != before["vpt-cache"], "vpt-cache was not restarted"
    assert after["vpt-primary"] == before["vpt-primary"], "vpt-primary restarted for nothing"
    assert cache.config_get("maxmemory") == {"maxmemory": str(48 * 1024 * 1024)}
    assert cache.get("ses:kept-across-restart") == b"1", "cache data lost across the restart"
    assert primary.get("usr:kept") == b"1"

    rerun = pyinfra(test_plan(cache={"maxmemory": "48mb"}))
    assert rerun.changed == 0, rerun.output[-4000:]


def test_value_valkey_rejects_leaves_old_instance_running_with_its_data(test_plan):
    assert pyinfra(test_plan()).returncode == 0
    port = test_plan.ports["vpt-cache"]
    live = valkey.Valkey(port=port, db=1)
    live.set("usr:still-here", "1")
    pid = pid_of("vpt-cache")
    config_before = read_root_file("/etc/valkey/valkey-vpt-cache.conf")

    rejected = pyinfra(test_plan(cache={"extra_config": {"activedefrag": "maybe"}}))
    assert rejected.returncode != 0, "a config Valkey rejects was accepted"
    assert "activedefrag maybe" in rejected.output and "rejected" in rejected.output
    assert pid_of("vpt-cache") == pid, "the running instance was touched"
    assert read_root_file("/etc/valkey/valkey-vpt-cache.conf") == config_before
    assert live.get("usr:still-here") == b"1"
    assert live.config_get("activedefrag") == {"activedefrag": "no"}


def test_bad_plan_stops_before_the_first_operation(test_plan):
    assert pyinfra(test_plan()).returncode == 0
    config_before = read_root_file("/etc/valkey/valkey-vpt-cache.conf")
    bad = pyinfra(test_plan(cache={"maxmemory": "lots"}))
    assert bad.returncode != 0
    assert "host @local: valkey_instances[vpt-cache].maxmemory = 'lots': allowed:" in bad.output
    assert "Starting operation" not in bad.output
    assert read_root_file("/etc/valkey/valkey-vpt-cache.conf") == config_before

    cli = valkey_plans("up", str(test_plan(cache={"maxmemory": "lots"})))
    assert cli.returncode != 0
    assert "maxmemory = 'lots'" in cli.output and "$ " not in cli.output, "pyinfra was started"


def test_checks_fail_and_name_the_check_when_config_is_edited_behind_the_deploy(test_plan):
    inventory = test_plan()
    assert pyinfra(inventory).returncode == 0
    assert valkey_plans("verify", str(inventory)).returncode == 0
    config = "/etc/valkey/valkey-vpt-cache.conf"
    subprocess.run([*SUDO, "sh", "-c", f"echo 'maxmemory 1mb' >> {config}"], check=True)
    broken = valkey_plans("verify", str(inventory))
    assert broken.returncode != 0
    assert "test_config_files_are_the_deployed_ones" in broken.output
    assert "edited behind the deploy's back" in broken.output
    repaired = pyinfra(inventory)
    assert repaired.changed > 0 and repaired.returncode == 0
    assert valkey_plans("verify", str(inventory)).returncode == 0


def test_app_settings_files_describe_both_tiers(test_plan):
    inventory = test_plan()
    assert pyinfra(inventory).returncode == 0
    env_dir = Path(inventory).parent / "app-settings"
    env = dict(
        line.split("=", 1)
        for line in read_root_file(str(env_dir / "vptest.env")).splitlines()
        if line and not line.startswith("#")
    )
    assert env["VALKEY_PORT"] == str(test_plan.ports["vpt-primary"])
    assert env["VALKEY_DB"] == "0"
    assert env["VALKEY_CACHE_PORT"] == str(test_plan.ports["vpt-cache"])
    assert env["VALKEY_CACHE_DB_USER_CACHE"] == "1"
    assert root_output("stat", "-c", "%a", str(env_dir / "vptest.env")).strip() == "640"


def test_hurried_plans_stop_before_the_first_operation(test_plan):
    """A typo'd setting and a managed directive in extra_config never reach the host."""
    for data, expected in [
        (
            {"valkey_instance": []},
            "valkey_instance: unknown setting (did you mean valkey_instances?)",
        ),
        (
            {"cache": {"extra_config": {"bind": "0.0.0.0", "protected-mode": "no"}}},
            "extra_config['bind'] is managed by the deploy",
        ),
        ({"cache": {"port": True}}, "valkey_instances[vpt-cache].port = True: allowed: an integer"),
    ]:
        cache = data.pop("cache", None)
        bad = pyinfra(test_plan(cache=cache, **data))
        assert bad.returncode != 0, bad.output
        assert expected in bad.output, bad.output
        assert "Starting operation" not in bad.output
