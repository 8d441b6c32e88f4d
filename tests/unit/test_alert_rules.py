"""The alert rules rendered from a plan, proven by Prometheus' own promtool.

`promtool check rules` validates the file; `promtool test rules` evaluates every rule
against synthetic series written here: for each rendered rule, series that must fire
it (with the exact labels and annotations the alert must carry) and series that must
leave it silent. promtool comes from Debian's `prometheus` package (`./vp setup`
installs it); a missing promtool fails these tests, it never skips them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from valkey_plans.plan import Plan, PlanError
from valkey_plans.plan.alerts import (
    BACKUP_METRIC,
    AlertRule,
    alert_rules,
    rule_groups,
    yaml_quoted,
)

ALL_ALERTS = {
    "ValkeyInstanceDown",
    "ValkeyReplicationBroken",
    "ValkeyReplicationLag",
    "ValkeySentinelNoQuorum",
    "ValkeyClusterStateNotOk",
    "ValkeyBackupTooOld",
    "ValkeyPrimaryNearMaxmemory",
    "ValkeyUserIndexEvicted",
    "ValkeyBoundDbAboveCap",
    "ValkeyHitRatioLow",
    "ValkeyRejectedConnections",
}
#: What Prometheus adds to every scraped series (the exporter's target).
SCRAPE = {"job": "valkey", "instance": "10.0.0.1:9121"}


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool missing: install Debian's prometheus package (./vp setup does)")
    return found


#: Plans in these tests run hourly backups: the backup rule is off by default.
WITH_BACKUPS = {"backup_max_age_s": 7200}


def every_role_plan(**alerts: object) -> Plan:
    """One host with every kind of instance, a Sentinel, and the given thresholds."""
    return Plan.from_host_data(
        "db-1",
        {
            "valkey_instances": [
                {"name": "cache", "role": "cache", "port": 6379},
                {"name": "hosted", "role": "primary", "port": 6380, "bind": ["10.0.0.1"]},
                {
                    "name": "copy",
                    "role": "replica",
                    "port": 6381,
                    "bind": ["10.0.0.1"],
                    "replicaof": "db-2/hosted",
                },
                {
                    "name": "n0",
                    "role": "cluster-node",
                    "cluster": "main",
                    "port": 7000,
                    "bind": ["10.0.0.1"],
                },
            ],
            "valkey_acl": True,
            "valkey_app": {"hosted_instance": "hosted", "cache_instance": "cache"},
            "valkey_sentinel": {"primary": "db-2/hosted", "bind": ["10.0.0.1"], "quorum": 2},
            "valkey_alerts": {**WITH_BACKUPS, **alerts},
        },
    )


def rules_of(plan: Plan) -> list[AlertRule]:
    return [rule for group in rule_groups(plan) for rule in group.rules]


# --- synthetic series per alert: (series, eval time, expected extra label sets) -------

Series = tuple[str, dict[str, str], str]  # metric, labels beyond the target's, values
Case = tuple[list[Series], str, list[dict[str, str]]]


def _target(rule: AlertRule) -> dict[str, str]:
    return {k: rule.labels[k] for k in ("valkey_host", "valkey_instance")}


def _down(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    fire = [
        ([("redis_up", SCRAPE, "0x10"), ("up", SCRAPE, "1x10")], "5m", [SCRAPE]),
        ([("up", SCRAPE, "0x10")], "5m", [SCRAPE]),  # the exporter itself is down
        ([], "5m", [{}]),  # no target carries the labels: absent(up{...})
    ]
    quiet = [([("redis_up", SCRAPE, "1x10"), ("up", SCRAPE, "1x10")], "5m", [])]
    return fire, quiet


def _rejected(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    # The test plan allows 5 per 5m: 2/min is 10 per 5m, 0.5/min is 2.5.
    metric = "redis_rejected_connections_total"
    return [([(metric, SCRAPE, "0+2x20")], "10m", [SCRAPE])], [
        ([(metric, SCRAPE, "0+0.5x20")], "10m", [])
    ]


def _link(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    master = {**SCRAPE, "master_host": "10.0.0.2", "master_port": "6380"}
    metric = "redis_master_link_up"
    return [([(metric, master, "0x10")], "5m", [master])], [([(metric, master, "1x10")], "5m", [])]


def _lag(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    # 10 MB/min written; the replica confirms 8 MB/min: 2 MB behind after a minute.
    replica = {**SCRAPE, "slave_ip": "10.0.0.2", "slave_port": "6381", "slave_state": "online"}
    offset = ("redis_master_repl_offset", SCRAPE, "0+10000000x20")
    behind = [offset, ("redis_connected_slave_offset_bytes", replica, "0+8000000x20")]
    even = [offset, ("redis_connected_slave_offset_bytes", replica, "0+10000000x20")]
    return [(behind, "5m", [replica])], [(even, "5m", [])]


def _cluster(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    metric = "redis_cluster_state"
    return [([(metric, SCRAPE, "0x10")], "5m", [SCRAPE])], [([(metric, SCRAPE, "1x10")], "5m", [])]


def _backup(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    # At 3h (10800 s): a backup at time 0 is 3 h old; one taken every minute is fresh.
    fire = [([(BACKUP_METRIC, SCRAPE, "0x200")], "3h", [SCRAPE]), ([], "3h", [{}])]
    return fire, [([(BACKUP_METRIC, SCRAPE, "0+60x200")], "3h", [])]


def _memory(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    limit = ("redis_memory_max_bytes", SCRAPE, "100x20")
    used = "redis_memory_used_bytes"
    fire = [([(used, SCRAPE, "95x20"), limit], "10m", [SCRAPE])]
    quiet = [
        ([(used, SCRAPE, "50x20"), limit], "10m", []),
        ([(used, SCRAPE, "95x20"), ("redis_memory_max_bytes", SCRAPE, "0x20")], "10m", []),
    ]
    return fire, quiet


def _index(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    evicted = ("redis_evicted_keys_total", SCRAPE, "0+10x20")
    db0 = {**SCRAPE, "db": "db0"}
    fire = [([evicted, ("redis_db_keys", db0, "1000-5x20")], "10m", [SCRAPE])]
    quiet = [([evicted, ("redis_db_keys", db0, "1000x20")], "10m", [])]
    return fire, quiet


def _bound(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    db = {**SCRAPE, "db": rule.expr.split('db="')[1].split('"')[0]}
    limit = int(rule.expr.rsplit(">", 1)[1])
    fire = [([("redis_db_keys", db, f"{limit + 1}x20")], "10m", [db])]
    return fire, [([("redis_db_keys", db, f"{limit}x20")], "10m", [])]


def _hit_ratio(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    hits, misses = "redis_keyspace_hits_total", "redis_keyspace_misses_total"
    half = [(hits, SCRAPE, "0+600x40"), (misses, SCRAPE, "0+600x40")]  # 50% at 20/s
    good = [(hits, SCRAPE, "0+5400x40"), (misses, SCRAPE, "0+600x40")]  # 90%
    idle = [(hits, SCRAPE, "0+6x40"), (misses, SCRAPE, "0+54x40")]  # 10%, at 1 lookup/s
    return [(half, "25m", [SCRAPE])], [(good, "25m", []), (idle, "25m", [])]


def _sentinel(rule: AlertRule) -> tuple[list[Case], list[Case]]:
    master = {**SCRAPE, "master_name": "main", "master_address": "10.0.0.2:6380"}
    ok = {**SCRAPE, "master_name": "main", "message": "OK 3 usable Sentinels"}
    no = {**SCRAPE, "master_name": "main", "message": "NOQUORUM 1 usable Sentinels"}
    sentinels, ckquorum = (
        "redis_sentinel_master_ok_sentinels",
        "redis_sentinel_master_ckquorum_status",
    )
    fire = [
        ([(sentinels, master, "1x10"), (ckquorum, ok, "1x10")], "5m", [master]),
        ([(sentinels, master, "3x10"), (ckquorum, no, "0x10")], "5m", [no]),
    ]
    return fire, [([(sentinels, master, "3x10"), (ckquorum, ok, "1x10")], "5m", [])]


SCENARIOS: dict[str, Callable[[AlertRule], tuple[list[Case], list[Case]]]] = {
    "ValkeyInstanceDown": _down,
    "ValkeyRejectedConnections": _rejected,
    "ValkeyReplicationBroken": _link,
    "ValkeyReplicationLag": _lag,
    "ValkeyClusterStateNotOk": _cluster,
    "ValkeyBackupTooOld": _backup,
    "ValkeyPrimaryNearMaxmemory": _memory,
    "ValkeyUserIndexEvicted": _index,
    "ValkeyBoundDbAboveCap": _bound,
    "ValkeyHitRatioLow": _hit_ratio,
    "ValkeySentinelNoQuorum": _sentinel,
}


def _series_text(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "}"


#: What every healthy target reports: the rules of one target are tested beside the
#: others up and backed up, or their absent() rules would fire in every test.
HEALTHY = [("up", "1x200"), ("redis_up", "1x200"), (BACKUP_METRIC, "0+60x200")]


def _healthy_others(rule: AlertRule, targets: list[dict[str, str]]) -> list[dict]:
    return [
        {"series": _series_text(metric, {**other, **SCRAPE}), "values": values}
        for other in targets
        if other != _target(rule)
        for metric, values in HEALTHY
    ]


def _test_group(rule: AlertRule, case: Case, name: str, targets: list[dict[str, str]]) -> dict:
    series, at, expected = case
    target = _target(rule)
    return {
        "name": name,
        "interval": "1m",
        "input_series": [
            {"series": _series_text(metric, {**target, **labels}), "values": values}
            for metric, labels, values in series
        ]
        + _healthy_others(rule, targets),
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": rule.alert,
                "exp_alerts": [
                    {
                        "exp_labels": {**target, **extra, **rule.all_labels},
                        "exp_annotations": {
                            "summary": rule.summary,
                            "description": rule.description,
                        },
                    }
                    for extra in expected
                ],
            }
        ],
    }


def promtool_tests(rules: list[AlertRule]) -> list[dict]:
    """Test groups for promtool: every rule with its firing and its silent cases."""
    targets = [dict(t) for t in {tuple(_target(rule).items()) for rule in rules}]
    groups = []
    for rule in rules:
        fire, quiet = SCENARIOS[rule.alert](rule)
        where = f"{rule.alert} {rule.labels['valkey_instance']} {rule.labels.get('db_name', '')}"
        for kind, cases in (("fires", fire), ("silent", quiet)):
            groups += [
                _test_group(rule, case, f"{where} {kind} #{i}", targets)
                for i, case in enumerate(cases)
            ]
    return groups


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[Plan, Path]:
    plan = every_role_plan(rejected_connections=5)
    path = tmp_path / "valkey-rules.yml"
    path.write_text(alert_rules(plan))
    return plan, path


def test_rules_file_passes_promtool_check(rendered):
    plan, path = rendered
    result = run_promtool("check", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules_of(plan))} rules found" in result.stdout


def test_every_alert_fires_on_its_series_and_stays_silent_otherwise(rendered):
    plan, path = rendered
    rules = rules_of(plan)
    assert {r.alert for r in rules} == ALL_ALERTS
    groups = promtool_tests(rules)
    tests = {"rule_files": [path.name], "evaluation_interval": "1m", "tests": groups}
    (path.parent / "tests.yml").write_text(json.dumps(tests, indent=1))  # JSON is YAML
    result = run_promtool("test", "rules", "tests.yml", cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    fired = sum(1 for g in groups if g["alert_rule_test"][0]["exp_alerts"])
    assert fired >= len(rules) and len(groups) - fired >= len(rules)


def test_promtool_catches_a_wrong_expectation(rendered):
    """The harness can fail: a firing case expected silent makes promtool exit non-zero."""
    plan, path = rendered
    (rule,) = [r for r in rules_of(plan) if r.alert == "ValkeyClusterStateNotOk"]
    fire, _ = SCENARIOS[rule.alert](rule)
    series, at, _ = fire[0]
    group = _test_group(rule, (series, at, []), "expected silent, but it fires", [])
    tests = {"rule_files": [path.name], "evaluation_interval": "1m", "tests": [group]}
    (path.parent / "wrong.yml").write_text(json.dumps(tests))
    result = run_promtool("test", "rules", "wrong.yml", cwd=path.parent)
    assert result.returncode != 0, result.stdout


def _alerts_by_instance(plan: Plan) -> dict[str, set[str]]:
    return {
        group.name.rsplit("/", 1)[1]: {r.alert for r in group.rules} for group in rule_groups(plan)
    }


def test_only_the_rules_that_apply_to_each_role_are_rendered():
    by_instance = _alerts_by_instance(every_role_plan())
    common = {"ValkeyInstanceDown", "ValkeyRejectedConnections"}
    assert by_instance["cache"] == common | {
        "ValkeyBackupTooOld",
        "ValkeyUserIndexEvicted",
        "ValkeyBoundDbAboveCap",
        "ValkeyHitRatioLow",
    }
    replication = {"ValkeyReplicationBroken", "ValkeyReplicationLag"}
    assert by_instance["hosted"] == common | replication | {
        "ValkeyBackupTooOld",
        "ValkeyPrimaryNearMaxmemory",
    }
    assert by_instance["copy"] == common | replication  # its primary is backed up
    assert by_instance["n0"] == common | replication | {
        "ValkeyClusterStateNotOk",
        "ValkeyPrimaryNearMaxmemory",
    }
    assert by_instance["sentinel:main"] == {"ValkeySentinelNoQuorum"}


def test_a_primary_only_plan_has_no_cache_rules():
    plan = Plan.from_host_data(
        "db-1",
        {
            "valkey_instances": [{"name": "hosted", "role": "primary", "port": 6380}],
            "valkey_app": {"hosted_instance": "hosted", "cache_instance": None},
            "valkey_alerts": WITH_BACKUPS,
        },
    )
    assert _alerts_by_instance(plan) == {
        "hosted": {"ValkeyInstanceDown", "ValkeyRejectedConnections", "ValkeyBackupTooOld",
                   "ValkeyPrimaryNearMaxmemory"}
    }  # fmt: skip


def test_a_dev_cache_has_no_replication_cluster_or_sentinel_rules():
    plan = Plan.from_host_data("@local", {"valkey_alerts": WITH_BACKUPS})
    assert _alerts_by_instance(plan) == {
        "cache": {"ValkeyInstanceDown", "ValkeyRejectedConnections", "ValkeyBackupTooOld",
                  "ValkeyUserIndexEvicted", "ValkeyBoundDbAboveCap", "ValkeyHitRatioLow"}
    }  # fmt: skip


def test_no_eviction_rule_without_eviction_and_no_memory_rule_without_a_limit():
    plan = Plan.from_host_data(
        "db-1",
        {
            "valkey_instances": [
                {"name": "cache", "role": "cache", "port": 6379, "maxmemory-policy": "noeviction"},
                {"name": "hosted", "role": "primary", "port": 6380, "maxmemory": 0, "save": [],
                 "appendonly": False},
            ],
            "valkey_app": {"hosted_instance": "hosted"},
        },
    )  # fmt: skip
    by_instance = _alerts_by_instance(plan)
    assert "ValkeyUserIndexEvicted" not in by_instance["cache"]
    assert "ValkeyPrimaryNearMaxmemory" in by_instance["cache"]  # noeviction: writes fail
    assert by_instance["hosted"] == {"ValkeyInstanceDown", "ValkeyRejectedConnections"}


def test_thresholds_and_caps_come_from_the_plan():
    plan = Plan.from_host_data(
        "db-1",
        {
            "valkey_instances": [
                {
                    "name": "cache",
                    "role": "cache",
                    "port": 6379,
                    "cache_dbs": {
                        "user_index": {"db": 0},
                        "user_cache": {"db": 5, "cap": 40, "ttl": 60},
                        "session_cache": {"db": 2, "ttl": 60, "sliding": True},
                        "message_queue": {"db": 3, "cap": 7, "ttl": 60},
                    },
                    "databases": 8,
                }
            ],
            "valkey_alerts": {"hit_ratio_min": 0.95, "backup_max_age_s": 600},
        },
    )
    exprs = {(r.alert, r.labels.get("db_name")): r.expr for r in rules_of(plan)}
    assert exprs[("ValkeyBoundDbAboveCap", "user_cache")].endswith('db="db5"} > 44')
    assert exprs[("ValkeyBoundDbAboveCap", "message_queue")].endswith('db="db3"} > 15')
    assert "< 0.95 and" in exprs[("ValkeyHitRatioLow", None)]
    assert "> 600 or absent(" in exprs[("ValkeyBackupTooOld", None)]
    assert "> 0" in exprs[("ValkeyRejectedConnections", None)]  # default: any rejection


def test_backup_alert_is_off_by_default_and_can_be_turned_off():
    for data in ({}, {"valkey_alerts": {"backup_max_age_s": None}}):
        plan = Plan.from_host_data("@local", data)
        assert "ValkeyBackupTooOld" not in _alerts_by_instance(plan)["cache"]


def test_the_file_carries_the_managed_header_and_its_label_contract():
    text = alert_rules(Plan.from_host_data("@local", {}))
    assert text.startswith("# Managed by valkey-plans")
    assert "valkey_host and" in text and "groups:\n" in text


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        (
            {"hit_ratio_min": 1.5},
            "valkey_alerts.hit_ratio_min = 1.5: allowed: less than or equal to 1",
        ),
        ({"hit_ratio_min": True}, "valkey_alerts.hit_ratio_min = True: allowed: a number"),
        ({"hit_ratio_min": "0.8"}, "valkey_alerts.hit_ratio_min = '0.8': allowed: a number"),
        ({"primary_memory_max_ratio": 0}, "primary_memory_max_ratio = 0: allowed: greater than 0"),
        (
            {"replication_lag_max_bytes": 0.5},
            "replication_lag_max_bytes = 0.5: allowed: an integer",
        ),
        ({"backup_max_age_s": 10}, "backup_max_age_s = 10: allowed: greater than or equal to 60"),
        (
            {"rejected_connections": -1},
            "rejected_connections = -1: allowed: greater than or equal to 0",
        ),
        ({"hit_ratio": 0.8}, "valkey_alerts.hit_ratio = 0.8: unknown setting"),
        ("high", "valkey_alerts = 'high': allowed: a mapping"),
    ],
)
def test_bad_alert_settings_are_refused_with_what_is_allowed(alerts, message):
    with pytest.raises(PlanError) as exc:
        Plan.from_host_data("db-1", {"valkey_alerts": alerts})
    assert message in str(exc.value)


def test_one_threshold_set_keeps_the_other_defaults():
    plan = Plan.from_host_data("db-1", {"valkey_alerts": {"hit_ratio_min": 0.5}})
    assert plan.alerts.hit_ratio_min == 0.5
    assert plan.alerts.primary_memory_max_ratio == 0.9
    assert plan.alerts.backup_max_age_s is None, "no backup rule until backups run"


def test_yaml_values_are_single_quoted_and_one_line():
    assert yaml_quoted('it\'s {a="b"}') == "'it''s {a=\"b\"}'"
    with pytest.raises(ValueError, match="one line"):
        yaml_quoted("a\nb")
