"""The commands the deploy plans for an adoption, given the facts a Linux host reports."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import DeployError

from tests.unit.pyinfra_commands import linux_facts, planned_commands
from valkey_plans.deploy import valkey_plan

SECRET = "redis-pass-not-in-any-command"
REDIS_ON_6379 = {"ListeningPrograms": {6379: ["redis-server"]}}


def plan(**adopt: object) -> dict:
    inst = {"name": "cache", "role": "cache", "port": 6379, "adopt": {"from": "redis", **adopt}}
    return {"valkey_instances": [inst], "valkey_exporter": {"enabled": False}}


def test_a_pending_adoption_runs_valkey_on_the_spare_port_then_adopts(monkeypatch):
    monkeypatch.setenv("VALKEY_PLANS_SECRET_REDIS", SECRET)
    data = plan(password_secret="redis") | {"valkey_acl": False}
    data["valkey_secrets_file"] = None
    planned = planned_commands(valkey_plan, linux_facts(**REDIS_ON_6379), data)
    names = [name for name, _ in planned]
    text = "\n".join(c for _, commands in planned for c in commands)
    adopt_at = next(i for i, n in enumerate(names) if "Adopt Redis on port 6379" in n)
    assert "cd /usr/local/lib/valkey-plans && python3 -m vp_adopt" in text
    final = next(i for i, n in enumerate(names) if "Final config of cache" in n)
    assert final < adopt_at
    assert SECRET not in text, "Redis's password must never reach a command line"
    assert not any("Config of cache" in n for n in names[adopt_at:])


def test_a_finished_adoption_is_not_run_again():
    facts = linux_facts(File=lambda path: {"size": 1} if path.endswith(".done.json") else None)
    planned = planned_commands(valkey_plan, facts, plan())
    assert not any("Adopt Redis" in n for n, _ in planned)


def test_adopt_without_a_running_redis_nor_a_record_is_refused():
    with pytest.raises(DeployError, match="no redis-server listens on port 6379"):
        planned_commands(valkey_plan, linux_facts(), plan())


def test_a_running_redis_without_adopt_is_refused_before_any_operation():
    data = {"valkey_instances": [{"name": "cache", "role": "cache", "port": 6379}]}
    with pytest.raises(DeployError, match=r'add "adopt": \{"from": "redis"\}'):
        planned_commands(valkey_plan, linux_facts(**REDIS_ON_6379), data)


def test_with_acls_the_adoption_logs_in_as_admin_from_a_root_only_file(monkeypatch):
    for user in ("api", "queue", "subscriber", "background", "checks", "admin"):
        monkeypatch.setenv(f"VALKEY_PLANS_SECRET_{user.upper()}", f"{user}-password-0123456789")
    data = plan() | {"valkey_acl": True}
    planned = planned_commands(valkey_plan, linux_facts(**REDIS_ON_6379), data)
    names = [name for name, _ in planned]
    text = "\n".join(c for _, commands in planned for c in commands)
    login = next(i for i, n in enumerate(names) if "admin for the adoption into cache" in n)
    assert login < next(i for i, n in enumerate(names) if "Adopt Redis on port 6379" in n)
    assert "password-0123456789" not in text
