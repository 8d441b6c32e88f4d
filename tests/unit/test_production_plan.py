"""inventories/production.py with group_data/production.py: the one-box production plan."""

from __future__ import annotations

from pathlib import Path

from valkey_plans.plan.backup import targets
from valkey_plans.plan.inventory import load_targets

ROOT = Path(__file__).resolve().parents[2]


def test_one_box_has_a_durable_primary_a_cache_acls_and_backups_of_the_primary():
    (target,) = load_targets(ROOT / "inventories" / "production.py", ROOT)
    plan = target.plan
    primary = plan.instance("primary")
    assert primary.appendonly and primary.appendfsync == "everysec" and primary.save
    assert primary.maxmemory_policy == "noeviction" and primary.databases == 1
    assert plan.instance("cache").role == "cache"
    assert plan.acl and not plan.secrets_generate
    assert plan.app.hosted_instance == "primary" and plan.app.cache_instance == "cache"
    assert [i.name for i in targets(plan, [plan])] == ["primary"]
    assert plan.backup.interval == "hourly"
    assert plan.backup.retention.keep_args() == ["--keep-hourly", "24", "--keep-daily", "30"]
