"""`valkey_backup`: defaults, intervals as timers, retention as restic arguments, targets."""

from __future__ import annotations

import pytest

from valkey_plans.plan import Plan, topology
from valkey_plans.plan.alerts import rule_groups
from valkey_plans.plan.backup import interval_seconds, on_calendar, targets

PRIMARY = {"name": "main", "role": "primary", "port": 6380}
CACHE = {"name": "cache", "role": "cache", "port": 6379}
ON = {"enabled": True}


def plan(host: str = "db-1", *instances: dict, **backup: object) -> Plan:
    data = {"valkey_instances": list(instances) or [CACHE, PRIMARY], "valkey_backup": backup}
    if any(i.get("bind") for i in instances):
        data["valkey_acl"] = True
    if not any(i["role"] == "cache" for i in data["valkey_instances"]):
        data["valkey_app"] = {"cache_instance": None}
    return Plan.from_host_data(host, data)


def test_defaults_are_off_hourly_24_hourly_30_daily_local():
    b = plan().backup
    assert not b.enabled and b.interval == "hourly" and b.interval_s == 3600
    assert b.retention.keep_args() == ["--keep-hourly", "24", "--keep-daily", "30"]
    assert b.local_repository("main") == "/var/backups/valkey-plans/main"
    assert b.offsite_repository("main") is None
    assert targets(plan()) == []


@pytest.mark.parametrize(
    ("interval", "calendar", "seconds"),
    [
        ("hourly", "hourly", 3600),
        ("daily", "daily", 86400),
        ("5min", "*-*-* *:00/05:00", 300),
        ("30min", "*-*-* *:00/30:00", 1800),
        ("6h", "*-*-* 00/06:00:00", 21600),
        ("24h", "daily", 86400),
    ],
)
def test_each_interval_becomes_an_even_calendar(interval: str, calendar: str, seconds: int):
    assert on_calendar(interval) == calendar
    assert interval_seconds(interval) == seconds


def test_the_timer_delay_never_exceeds_a_quarter_interval():
    assert plan(**ON, interval="5min").backup.timer_delay_s == 75
    assert plan(**ON).backup.timer_delay_s == 300


def test_by_default_every_primary_is_backed_up_not_the_cache():
    assert [i.name for i in targets(plan(**ON))] == ["main"]


def test_a_primary_with_a_replica_is_backed_up_from_its_first_replica_only():
    bind = {"bind": ["10.0.0.1"]}
    primary = plan("db-1", {**PRIMARY, **bind}, **ON)
    replicas = [
        plan(host, {**PRIMARY, "role": "replica", "replicaof": "db-1/main", **bind}, **ON)
        for host in ("db-2", "db-3")
    ]
    plans = [primary, *replicas]
    topology.validate(plans)
    assert targets(primary, plans) == []
    assert [i.name for i in targets(replicas[0], plans)] == ["main"]
    assert targets(replicas[1], plans) == []


def test_named_instances_are_exactly_those():
    assert [i.name for i in targets(plan(**ON, instances=["cache"]))] == ["cache"]


def _backup_alerts(p: Plan, plans: list[Plan]) -> dict[str, str]:
    """Instance name -> the ValkeyBackupTooOld expression on that host (if any)."""
    return {
        group.name.rsplit("/", 1)[1]: rule.expr
        for group in rule_groups(p, plans)
        for rule in group.rules
        if rule.alert == "ValkeyBackupTooOld"
    }


def test_the_backup_alert_watches_exactly_what_this_host_backs_up_at_two_intervals():
    """With backups on, the alert follows `targets`: the replica's host alerts, the
    primary's does not (its runner never writes the metric), after 2 x the interval."""
    bind = {"bind": ["127.0.0.1", "10.0.0.1"]}
    primary = plan("db-1", {**PRIMARY, **bind}, interval="30min", **ON)
    replica = plan(
        "db-2",
        {**PRIMARY, "role": "replica", "replicaof": "db-1/main", **bind},
        interval="30min",
        **ON,
    )
    plans = [primary, replica]
    assert _backup_alerts(primary, plans) == {}
    (expr,) = _backup_alerts(replica, plans).values()
    assert expr.startswith("time() - valkey_plans_backup_last_success_timestamp_seconds{")
    assert 'valkey_host="db-2"' in expr and "> 3600 or absent(" in expr, expr
    alone = plan("db-1", CACHE, {**PRIMARY}, **ON)
    assert set(_backup_alerts(alone, [alone])) == {"main"}  # the cache is not backed up
