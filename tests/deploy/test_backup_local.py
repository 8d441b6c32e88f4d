"""Backups on this machine, deployed for real: restic, runner, idempotence, CLI round trip."""

from __future__ import annotations

import glob
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
import valkey

from tests.deploy.pyinfra_run import project_command, pyinfra
from valkey_plans.backup.settings import PASSWORD_FILE, STATE_DIR
from valkey_plans.plan.secrets import ACL_USERS, ENV_PREFIX, EXPORTER_USER

SUDO = [] if os.geteuid() == 0 else ["sudo", "-n"]
NAME = "vpt-primary"


@pytest.fixture
def backed_up(test_plan, tmp_path: Path):
    """vpt-primary (AOF) with ACLs and backups into a repository under tmp_path."""
    users = (*ACL_USERS, EXPORTER_USER, "backup")
    env = {f"{ENV_PREFIX}{u.upper()}": secrets.token_urlsafe(24) for u in users}
    repos = tmp_path / "repos"
    inventory = test_plan(
        valkey_acl=True,
        valkey_exporter={"enabled": False},
        valkey_backup={"enabled": True, "repository": str(repos)},
    )
    yield inventory, env, repos
    subprocess.call(
        [*SUDO, "rm", "-rf", f"{STATE_DIR}/{NAME}.env", f"{STATE_DIR}/staging-{NAME}"]
        + [PASSWORD_FILE, *glob.glob(f"/var/lib/valkey/aside-{NAME}-*")]
    )


def _backup_checks(inventory: Path, env: dict[str, str]) -> dict[str, dict]:
    """`valkey-plans verify --json`, the backup checks only: {check: row}."""
    args = ["valkey-plans", "verify", "--json", str(inventory), "--pytest-arg=-kbackup"]
    _, out = project_command(args, 300, env)
    start = out.find("[")
    assert start >= 0, f"no JSON from verify:\n{out[-3000:]}"
    rows = json.loads(out[start : out.rindex("]") + 1])
    return {row["check"]: row for row in rows}


def _client(env: dict[str, str], port: int) -> valkey.Valkey:
    return valkey.Valkey(port=port, username="admin", password=env[f"{ENV_PREFIX}ADMIN"])


def test_deploy_backup_restore_round_trip(backed_up, test_plan):
    inventory, env, repos = backed_up
    run = pyinfra(inventory, env=env)
    assert run.returncode == 0, run.output[-4000:]
    assert (repos / NAME / "config").exists(), "the repository was not initialised"
    mode = os.stat(PASSWORD_FILE).st_mode & 0o777
    assert mode == 0o600 and env[f"{ENV_PREFIX}BACKUP"] not in run.output
    again = pyinfra(inventory, env=env)
    assert again.returncode == 0 and again.changed == 0, again.output[-3000:]

    rows = _backup_checks(inventory, env)
    fresh = rows["test_backups_reachable_and_fresh"]
    assert fresh["status"] == "fail" and "holds no backup" in fresh["reason"], rows
    assert rows["test_backup_timers_active"]["status"] == "n/a"  # no systemd here
    assert rows["test_backups_leave_the_host"]["status"] == "advisory"

    client = _client(env, test_plan.ports[NAME])
    client.flushall()
    client.set("usr:1", "kept")
    client.hset("usr:2", mapping={"a": "1"})
    client.set("ses:1", "ttl", ex=3600)
    code, out = project_command(["valkey-plans", "backup", str(inventory)], 300, env)
    assert code == 0 and f"@local/{NAME}: ok" in out, out[-2000:]
    assert _backup_checks(inventory, env)["test_backups_reachable_and_fresh"]["status"] == "pass"

    client.flushall()
    client.set("written-after-the-backup", "1")
    args = ["valkey-plans", "restore", str(inventory), "--host", "@local", "--instance", NAME]
    code, out = project_command([*args, "--latest"], 300, env)
    assert code == 0, out[-3000:]
    assert f"/var/lib/valkey/aside-{NAME}-" in out and "restored" in out
    client = _client(env, test_plan.ports[NAME])
    assert client.get("usr:1") == b"kept" and client.hgetall("usr:2") == {b"a": b"1"}
    assert 3500 < client.ttl("ses:1") <= 3600
    assert client.get("written-after-the-backup") is None
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    (aside,) = glob.glob(f"/var/lib/valkey/aside-{NAME}-*")
    assert os.listdir(aside), "the previous data was not kept"


def test_verify_fails_on_a_stale_backup_and_an_unreadable_repository(backed_up):
    inventory, env, repos = backed_up
    assert pyinfra(inventory, env=env).returncode == 0
    repo = str(repos / NAME)
    old = ["restic", "-r", repo, "backup", "--quiet", "--stdin", "--stdin-filename", "dump.rdb"]
    # As the runner tags it: this inventory host's (verify reads only its own snapshots).
    old += ["--host", "@local", "--tag", f"instance={NAME}", "--time", "2020-01-01 00:00:00"]
    subprocess.run(
        [*SUDO, "env", f"RESTIC_PASSWORD_FILE={PASSWORD_FILE}", *old], input=b"x", check=True
    )
    stale = _backup_checks(inventory, env)["test_backups_reachable_and_fresh"]
    assert stale["status"] == "fail" and "more than two intervals" in stale["reason"], stale
    subprocess.run([*SUDO, "chmod", "000", f"{repo}/config"], check=True)
    subprocess.run([*SUDO, "mv", f"{repo}/keys", f"{repo}/keys.moved"], check=True)
    broken = _backup_checks(inventory, env)["test_backups_reachable_and_fresh"]
    assert broken["status"] == "fail" and "cannot be opened" in broken["reason"], broken
