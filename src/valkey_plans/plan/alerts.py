"""Prometheus alert rules for one host, rendered from its plan.

The plan already knows what is normal for each instance: its role, its eviction policy,
its cache dbs' caps, and (`valkey_alerts`) the thresholds the operator chose. The rules
are derived from it, so an LRU cache near maxmemory never alerts while a noeviction
primary near maxmemory does, and a bound db alerts above its own cap. Only the rules
that apply to the plan's instances are rendered (no cache rules for a primary).

Metric names are those of oliver006/redis_exporter 1.45 (Debian bookworm's
prometheus-redis-exporter; later versions keep them): `redis_up`, `redis_memory_*`,
`redis_*_total` counters from INFO stats, `redis_db_keys{db="dbN"}`,
`redis_master_link_up`, `redis_connected_slave_offset_bytes`, `redis_cluster_state`,
`redis_sentinel_master_*`. Prometheus' own `up` says whether the exporter was scraped.

Label contract with the exporter's scrape configuration (the exporter deployment sets
it): every exporter target carries `valkey_host` (the inventory host name) and
`valkey_instance` (the instance name, or `sentinel:NAME` for the exporter of the
Sentinel called NAME) - `target_labels()` gives them. Each rule selects by them and each
alert carries them with `valkey_role` and `severity`.

The backup runner (plan/backup.py, `valkey_backup`) publishes `BACKUP_METRIC`, the Unix
time of the last backup that completed and verified, with the same two labels, as a
node exporter textfile (`BACKUP_TEXTFILE_DIR`); an outside backup job may publish it
the same way (or through a pushgateway) with `backup_max_age_s` set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from valkey_plans.client.schema import STRUCTURAL_KEYS
from valkey_plans.plan.backup import targets as backup_targets
from valkey_plans.plan.model import Instance, Plan
from valkey_plans.plan.render import render

TEMPLATE = "valkey-alerts.rules.yml.j2"
#: Unix time of the last good backup of an instance (written by the backup job).
BACKUP_METRIC = "valkey_plans_backup_last_success_timestamp_seconds"
#: Window of the counter rates (evictions, rejected connections).
RATE_WINDOW = "5m"
#: Window of the hit ratio: long enough that a burst of cold reads does not alert.
HIT_WINDOW = "10m"
#: Below this many lookups per second the hit ratio is noise, not a signal.
MIN_LOOKUPS_PER_S = 1
SEVERITIES = ("critical", "warning")


def target_labels(host: str, instance: str) -> dict[str, str]:
    """The labels the scrape config gives the exporter of `instance` on `host`."""
    return {"valkey_host": host, "valkey_instance": instance}


def sentinel_instance(name: str) -> str:
    """`valkey_instance` of a Sentinel's exporter: a ':' no instance name may hold."""
    return f"sentinel:{name}"


def selector(labels: dict[str, str]) -> str:
    """A PromQL label selector matching `labels` exactly (values quoted as PromQL strings)."""
    return "{" + ",".join(f"{key}={json.dumps(value)}" for key, value in labels.items()) + "}"


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule as the rules file holds it."""

    alert: str
    expr: str
    #: How long the expression must hold before the alert fires ("" = at once).
    for_: str
    severity: str
    labels: dict[str, str]
    summary: str
    description: str

    @property
    def all_labels(self) -> dict[str, str]:
        return {**self.labels, "severity": self.severity}


@dataclass(frozen=True)
class RuleGroup:
    name: str
    rules: list[AlertRule] = field(default_factory=list)


@dataclass(frozen=True)
class _Ctx:
    """What every rule builder needs: the plan, the instance and its selector."""

    plan: Plan
    inst: Instance
    #: With `valkey_backup` on: whether this host's runner backs the instance up.
    backed_up: bool = False

    @property
    def labels(self) -> dict[str, str]:
        return {**target_labels(self.plan.host, self.inst.name), "valkey_role": self.inst.role}

    def sel(self, **extra: str) -> str:
        return selector({**target_labels(self.plan.host, self.inst.name), **extra})

    @property
    def who(self) -> str:
        return f"Valkey {self.plan.host}/{self.inst.name} ({self.inst.role})"

    def rule(
        self, alert: str, expr: str, for_: str, severity: str, summary: str, why: str, **labels: str
    ) -> AlertRule:
        return AlertRule(
            alert, expr, for_, severity, {**self.labels, **labels}, f"{self.who}: {summary}", why
        )


def _down(c: _Ctx) -> list[AlertRule]:
    s = c.sel()
    return [
        c.rule(
            "ValkeyInstanceDown",
            f"redis_up{s} == 0 or up{s} == 0 or absent(up{s})",
            "1m",
            "critical",
            "down or not scraped",
            "The exporter cannot reach the instance (redis_up 0), Prometheus cannot"
            " scrape the exporter (up 0), or no target has these labels at all.",
        )
    ]


def _rejected(c: _Ctx) -> list[AlertRule]:
    limit = c.plan.alerts.rejected_connections
    return [
        c.rule(
            "ValkeyRejectedConnections",
            f"increase(redis_rejected_connections_total{c.sel()}[{RATE_WINDOW}]) > {limit}",
            "",
            "warning",
            "rejecting connections",
            f"More than {limit} connections rejected within {RATE_WINDOW} (maxclients"
            " reached): clients fail to connect; look for a connection leak.",
        )
    ]


def _replication(c: _Ctx) -> list[AlertRule]:
    """Link down on a replica; lag measured on the primary against each replica's offset."""
    limit = c.plan.alerts.replication_lag_max_bytes
    lag = (
        f"redis_master_repl_offset{c.sel()} - ignoring(slave_ip, slave_port, slave_state)"
        f" group_right redis_connected_slave_offset_bytes{c.sel()}"
    )
    return [
        c.rule(
            "ValkeyReplicationBroken",
            f"redis_master_link_up{c.sel()} == 0",
            "1m",
            "critical",
            "replication link to its primary is down",
            "master_link_status is down: the replica serves stale data and will need a"
            " resync; check the primary, the network and the replica user's password.",
        ),
        c.rule(
            "ValkeyReplicationLag",
            f"({lag}) > {limit}",
            "2m",
            "warning",
            "a replica lags behind",
            f"A replica's offset is more than {limit} bytes behind master_repl_offset"
            " for 2 minutes (labels slave_ip, slave_port name it).",
        ),
    ]


def _cluster(c: _Ctx) -> list[AlertRule]:
    return [
        c.rule(
            "ValkeyClusterStateNotOk",
            f"redis_cluster_state{c.sel()} == 0",
            "1m",
            "critical",
            "cluster_state is not ok",
            "CLUSTER INFO reports cluster_state:fail: slots are uncovered or the node"
            " cannot reach a majority of primaries; clients get CLUSTERDOWN errors.",
        )
    ]


def _backup(c: _Ctx) -> list[AlertRule]:
    """With `valkey_backup` on, for the instances this host backs up, at two intervals
    unless `backup_max_age_s` says otherwise; with it off, for an outside backup job."""
    age = c.plan.alerts.backup_max_age_s
    if c.plan.backup.enabled:
        if not c.backed_up:
            return []
        age = age or 2 * c.plan.backup.interval_s
    if age is None:
        return []
    metric = f"{BACKUP_METRIC}{c.sel()}"
    return [
        c.rule(
            "ValkeyBackupTooOld",
            f"time() - {metric} > {age} or absent({metric})",
            "",
            "warning",
            "no good backup",
            f"No backup completed and verified within {age} s (two backup intervals), or"
            f" none ever ({BACKUP_METRIC} is absent).",
        )
    ]


def _near_maxmemory(c: _Ctx) -> list[AlertRule]:
    ratio = c.plan.alerts.primary_memory_max_ratio
    used, limit = f"redis_memory_used_bytes{c.sel()}", f"redis_memory_max_bytes{c.sel()}"
    return [
        c.rule(
            "ValkeyPrimaryNearMaxmemory",
            f"{used} / {limit} > {ratio} and {limit} > 0",
            "5m",
            "critical",
            "memory near maxmemory with noeviction",
            f"used_memory is above {ratio:.0%} of maxmemory and the policy is noeviction:"
            " at maxmemory every write fails with OOM. Raise maxmemory or shed data.",
        )
    ]


def _index_evicted(c: _Ctx) -> list[AlertRule]:
    index = f"db{c.inst.db('user_index').db}"
    expr = (
        f"increase(redis_evicted_keys_total{c.sel()}[{RATE_WINDOW}]) > 0"
        " and on(valkey_host, valkey_instance)"
        f" delta(redis_db_keys{c.sel(db=index)}[{RATE_WINDOW}]) < 0"
    )
    return [
        c.rule(
            "ValkeyUserIndexEvicted",
            expr,
            "",
            "critical",
            "keys evicted while the user index shrinks",
            f"Keys were evicted within {RATE_WINDOW} while {index} (user_index, never"
            " evicted by plan) lost keys: index entries carry a TTL or the policy is"
            " not volatile-*. Run valkey-plans audit.",
        )
    ]


def bound_limit(inst: Instance, name: str) -> int | None:
    """Most keys the bound db `name` may hold: its cap plus its structural keys.

    None where the db has no cap, or keeps structural keys under a prefix (their number
    is not bounded, so no exact key count exists to compare with).
    """
    spec = inst.db(name)
    structural = STRUCTURAL_KEYS.get(name, ())
    if spec.cap is None or any(s.prefix for s in structural):
        return None
    return spec.cap + len(structural)


def _bound_dbs(c: _Ctx) -> list[AlertRule]:
    rules = []
    for name in c.inst.cache_dbs:
        limit = bound_limit(c.inst, name)
        if limit is None:
            continue
        db = f"db{c.inst.db(name).db}"
        rules.append(
            c.rule(
                "ValkeyBoundDbAboveCap",
                f"redis_db_keys{c.sel(db=db)} > {limit}",
                "5m",
                "warning",
                f"{name} above its cap",
                f"{db} ({name}) holds more than its cap {c.inst.db(name).cap} plus its"
                f" {limit - c.inst.db(name).cap} structural keys: writes bypass the"
                " cache library's exact LRU. Run valkey-plans audit.",
                db_name=name,
            )
        )
    return rules


def _hit_ratio(c: _Ctx) -> list[AlertRule]:
    low = c.plan.alerts.hit_ratio_min
    hits = f"rate(redis_keyspace_hits_total{c.sel()}[{HIT_WINDOW}])"
    misses = f"rate(redis_keyspace_misses_total{c.sel()}[{HIT_WINDOW}])"
    expr = f"{hits} / ({hits} + {misses}) < {low} and ({hits} + {misses}) > {MIN_LOOKUPS_PER_S}"
    return [
        c.rule(
            "ValkeyHitRatioLow",
            expr,
            HIT_WINDOW,
            "warning",
            "cache hit ratio low",
            f"keyspace hits / (hits + misses) over {HIT_WINDOW} is below {low} (at more"
            f" than {MIN_LOOKUPS_PER_S} lookup/s): the cache is too small or cold.",
        )
    ]


def _replicates(plan: Plan, inst: Instance) -> bool:
    """Replication series can exist: a replica, a cluster node, a primary others reach."""
    return inst.role in ("replica", "cluster-node") or (inst.role == "primary" and plan.replication)


def _backed_up(plan: Plan, inst: Instance) -> bool:
    """The instances a backup holds the data of: persisting caches and primaries (with
    `valkey_backup` on, `_backup` narrows them to what this host's runner backs up)."""
    if plan.backup.enabled:
        return True
    return inst.role in ("cache", "primary") and bool(inst.save or inst.appendonly)


def _noeviction_writable(plan: Plan, inst: Instance) -> bool:
    # Replicas ignore maxmemory (replica-ignore-maxmemory yes): their primary alerts.
    return (
        inst.maxmemory_policy == "noeviction"
        and inst.role != "replica"
        and inst.maxmemory_bytes > 0
    )


def _evicting_cache(plan: Plan, inst: Instance) -> bool:
    return inst.role == "cache" and inst.maxmemory_policy != "noeviction"


def _is_cache(plan: Plan, inst: Instance) -> bool:
    return inst.role == "cache"


def _always(plan: Plan, inst: Instance) -> bool:
    return True


def _is_cluster_node(plan: Plan, inst: Instance) -> bool:
    return inst.role == "cluster-node"


Applies = Callable[[Plan, Instance], bool]
Builder = Callable[[_Ctx], list[AlertRule]]

#: Every instance rule: when it applies, and how it is built. Order = order in the file.
INSTANCE_RULES: tuple[tuple[Applies, Builder], ...] = (
    (_always, _down),
    (_replicates, _replication),
    (_is_cluster_node, _cluster),
    (_backed_up, _backup),
    (_noeviction_writable, _near_maxmemory),
    (_evicting_cache, _index_evicted),
    (_is_cache, _bound_dbs),
    (_is_cache, _hit_ratio),
    (_always, _rejected),
)


def _sentinel_rules(plan: Plan) -> list[AlertRule]:
    """CKQUORUM failing, or fewer reachable sentinels (itself included) than the quorum."""
    sentinel = plan.sentinel
    assert sentinel is not None
    name = sentinel_instance(sentinel.name)
    sel = selector({**target_labels(plan.host, name), "master_name": sentinel.name})
    expr = (
        f"redis_sentinel_master_ckquorum_status{sel} == 0"
        f" or redis_sentinel_master_ok_sentinels{sel} < {sentinel.quorum}"
    )
    labels = {**target_labels(plan.host, name), "valkey_role": "sentinel"}
    return [
        AlertRule(
            "ValkeySentinelNoQuorum",
            expr,
            "1m",
            "critical",
            labels,
            f"Valkey {plan.host}/{name} (sentinel): no quorum",
            f"SENTINEL CKQUORUM {sentinel.name} fails or fewer than {sentinel.quorum}"
            " sentinels are reachable: a failover could not be authorised.",
        )
    ]


def rule_groups(plan: Plan, plans: Iterable[Plan] = ()) -> list[RuleGroup]:
    """One group per instance (and one for the Sentinel), holding the rules that apply.

    `plans` (the whole inventory) tells which host backs a primary up: its replica's.
    """
    groups = []
    backed = {i.name for i in backup_targets(plan, plans)}
    for inst in plan.instances:
        ctx = _Ctx(plan, inst, backed_up=inst.name in backed)
        rules = [r for applies, build in INSTANCE_RULES if applies(plan, inst) for r in build(ctx)]
        groups.append(RuleGroup(f"valkey-plans/{plan.host}/{inst.name}", rules))
    if plan.sentinel:
        name = sentinel_instance(plan.sentinel.name)
        groups.append(RuleGroup(f"valkey-plans/{plan.host}/{name}", _sentinel_rules(plan)))
    return groups


def yaml_quoted(value: str) -> str:
    """`value` as a YAML single-quoted scalar: PromQL's double quotes stay readable.

    Only `'` needs doubling there; a line break or a control character has no place in
    a rule and is refused rather than escaped.
    """
    if not value.isprintable():
        raise ValueError(f"{value!r}: a rules file value must be printable on one line")
    return "'" + value.replace("'", "''") + "'"


def alert_rules(plan: Plan, plans: Iterable[Plan] = ()) -> str:
    """The Prometheus rules file (YAML) of `plan`'s host, for the user's Prometheus."""
    return render(TEMPLATE, plan=plan, groups=rule_groups(plan, plans), q=yaml_quoted)
