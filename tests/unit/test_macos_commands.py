"""macOS laptops: the commands pyinfra would run, given the facts a Mac reports.

No Mac runs here, so this is tested the way pyinfra tests its own operations:
facts in, commands out. Every Linux path of the deploy runs for real elsewhere.
"""

from __future__ import annotations

import hashlib

import pytest
from pyinfra.facts.brew import BrewPackages
from pyinfra.facts.files import Directory, File, Md5File, Sha1File, Sha256File
from pyinfra.facts.server import Os, TmpDir, User

from tests.unit.pyinfra_commands import planned_commands
from valkey_plans.deploy import valkey_plan
from valkey_plans.deploy.facts import BrewServiceRunning, RunningPid
from valkey_plans.deploy.macos import BrewPrefix, brew_service_config
from valkey_plans.plan import Plan
from valkey_plans.plan.layout import homebrew
from valkey_plans.plan.render import instance_config

PLAN = {
    "valkey_instances": [
        {"name": "cache", "role": "cache", "port": 6379},
        {"name": "hosted", "role": "primary", "port": 6380},
    ],
    "valkey_app": {"hosted_instance": "hosted"},
}


def mac_facts(**overrides):
    facts = {
        Os: "Darwin",
        BrewPrefix: "/opt/homebrew",
        User: "dev",
        TmpDir: "/tmp",
        BrewPackages: {},
        Directory: lambda path: None,
        File: lambda path: None,
        Sha1File: lambda path: None,
        Md5File: lambda path: None,
        Sha256File: lambda path: None,
        BrewServiceRunning: lambda formula: False,
        RunningPid: lambda pidfile: None,
    }
    by_name = {cls.__name__: cls for cls in facts}
    for name, value in overrides.items():
        facts[by_name[name]] = value
    return facts


def flat(planned):
    return [cmd for _, cmds in planned for cmd in cmds]


def test_first_run_installs_valkey_with_homebrew_and_starts_the_cache_with_brew_services():
    commands = flat(planned_commands(valkey_plan, mac_facts(), PLAN))
    assert any(c.startswith("brew install") and "valkey" in c for c in commands), commands
    assert "brew services start valkey" in commands
    assert not any("apt" in c or "systemctl" in c for c in commands), commands
    checks = [c for c in commands if "check-config" in c]
    assert any("/opt/homebrew/etc/valkey/.valkey-cache.conf.candidate" in c for c in checks)
    assert any(
        c.startswith("/opt/homebrew/bin/valkey-server /opt/homebrew/etc/valkey/valkey-hosted.conf")
        and c.endswith("--daemonize yes")
        for c in commands
    ), commands


def test_brew_services_config_includes_the_cache_instance_config():
    planned = planned_commands(valkey_plan, mac_facts(), PLAN)
    names = [name for name, _ in planned]
    assert any("Homebrew's valkey.conf includes cache" in n for n in names), names


def test_first_run_starts_each_instance_once():
    commands = flat(planned_commands(valkey_plan, mac_facts(), PLAN))
    assert commands.count("brew services start valkey") == 1
    assert "brew services restart valkey" not in commands
    starts = [c for c in commands if "valkey-hosted.conf --daemonize yes" in c]
    assert len(starts) == 1, starts


LAYOUT = homebrew("/opt/homebrew")


def deployed_config_hashes(except_instance: str | None = None) -> dict[str, str]:
    """sha256 of each instance config as a Mac that already ran the deploy reports it."""
    plan = Plan.from_host_data("laptop.local", PLAN)
    return {
        LAYOUT.paths(i.name).config: hashlib.sha256(
            instance_config(plan, i, LAYOUT).encode()
        ).hexdigest()
        for i in plan.instances
        if i.name != except_instance
    }


def test_rerun_with_everything_in_place_changes_nothing():
    hashes = deployed_config_hashes()
    facts = mac_facts(
        BrewPackages={"valkey": {"8.1.1"}},
        Sha256File=lambda path: hashes.get(path),
        File=lambda path: {"user": "dev", "group": "staff", "mode": 600},
        Directory=lambda path: {"user": "dev", "group": "staff", "mode": 750},
        BrewServiceRunning=lambda formula: True,
        RunningPid=lambda pidfile: 4242,
    )
    planned = planned_commands(valkey_plan, facts, PLAN)
    config_ops = [cmds for name, cmds in planned if name.startswith("valkey-plans | Config of")]
    assert config_ops and all(cmds == [] for cmds in config_ops), config_ops
    service_ops = [cmds for name, cmds in planned if "brew services" in name or "running" in name]
    assert all(cmds == [] for cmds in service_ops), service_ops


@pytest.mark.parametrize("changed", ["cache", "hosted"])
def test_changed_config_restarts_only_its_instance(changed):
    hashes = deployed_config_hashes(except_instance=changed)
    include = brew_service_config(LAYOUT.paths("cache").config).encode()
    facts = mac_facts(
        BrewPackages={"valkey": {"8.1.1"}},
        Sha1File=lambda path: (
            hashlib.sha1(include).hexdigest() if path.endswith("etc/valkey.conf") else None
        ),
        Sha256File=lambda path: hashes.get(path, "0" * 64),
        File=lambda path: {"user": "dev", "group": "staff", "mode": 600},
        Directory=lambda path: {"user": "dev", "group": "staff", "mode": 750},
        BrewServiceRunning=lambda formula: True,
        RunningPid=lambda pidfile: 4242,
    )
    commands = flat(planned_commands(valkey_plan, facts, PLAN))
    restarted_cache = "brew services restart valkey" in commands
    restarted_hosted = any(c.startswith("kill 4242") for c in commands)
    assert (restarted_cache, restarted_hosted) == (changed == "cache", changed == "hosted")
