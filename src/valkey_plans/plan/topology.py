"""Scale-out across hosts: the rules one host's plan cannot check alone.

A replica names a primary on another host; a Valkey Cluster spans hosts; Sentinels
watch one primary from several hosts. These rules need every plan of the inventory,
so the CLI and the deploy check them over the whole inventory before any change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from valkey_plans.plan.backup import backup_host_problems
from valkey_plans.plan.model import Instance, Plan, PlanError

MIN_CLUSTER_PRIMARIES = 3


@dataclass(frozen=True)
class Node:
    """One instance with the inventory host it runs on."""

    host: str
    instance: Instance

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.instance.name}"

    @property
    def address(self) -> str:
        return f"{self.instance.peer_address}:{self.instance.port}"


def nodes(plans: Iterable[Plan]) -> dict[str, Node]:
    """Every instance of the inventory by its "HOST/INSTANCE" reference."""
    return {f"{p.host}/{i.name}": Node(p.host, i) for p in plans for i in p.instances}


def replicaof(plans: Iterable[Plan], instance: Instance) -> str | None:
    """ "ADDRESS PORT" of the primary a replica follows (None for other roles)."""
    if instance.role != "replica" or not instance.replicaof:
        return None
    primary = nodes(plans)[instance.replicaof].instance
    return f"{primary.peer_address} {primary.port}"


def primary_address(plans: Iterable[Plan], ref: str) -> str:
    """ "ADDRESS PORT" of the instance `ref` ("HOST/INSTANCE") as other hosts reach it."""
    inst = nodes(plans)[ref].instance
    return f"{inst.peer_address} {inst.port}"


def sentinel_watched(plans: Iterable[Plan]) -> set[str]:
    """References of the instances Sentinel manages: its primary and that one's replicas.

    Sentinel rewrites their configs after a failover, so the deploy compares those
    against what it last installed, not against the live file.
    """
    plans = list(plans)
    primaries = {p.sentinel.primary for p in plans if p.sentinel}
    replicas = {ref for ref, node in nodes(plans).items() if node.instance.replicaof in primaries}
    return primaries | replicas


def cluster_nodes(plans: Iterable[Plan], cluster: str) -> list[Node]:
    """The nodes of one cluster in a stable order (host, then instance name)."""
    found = [n for n in nodes(plans).values() if n.instance.cluster == cluster]
    return sorted(found, key=lambda n: (n.host, n.instance.name))


def _replica_problems(plans: list[Plan], by_ref: dict[str, Node]) -> list[str]:
    problems = []
    for node in by_ref.values():
        inst = node.instance
        if inst.role != "replica":
            continue
        primary = by_ref.get(inst.replicaof or "")
        if primary is None:
            problems.append(
                f"host {node.host}: valkey_instances[{inst.name}].replicaof = {inst.replicaof!r}:"
                f" no such instance; allowed: one of {sorted(by_ref)} with role primary"
            )
        elif primary.instance.role != "primary":
            problems.append(
                f"host {node.host}: valkey_instances[{inst.name}].replicaof = {inst.replicaof!r}"
                f" is a {primary.instance.role}; allowed: an instance with role primary"
            )
        elif primary.host == node.host:
            problems.append(
                f"host {node.host}: valkey_instances[{inst.name}].replicaof = {inst.replicaof!r}"
                " is on the same host; allowed: a primary on another host"
            )
        elif not primary.instance.peer_address:
            problems.append(
                f"host {primary.host}: valkey_instances[{primary.instance.name}] has replicas"
                " but binds loopback only; allowed: a non-loopback address in bind"
            )
    return problems


def _cluster_problems(plans: list[Plan]) -> list[str]:
    problems = []
    clusters: dict[str, list[Node]] = defaultdict(list)
    replicas: dict[str, set[int]] = defaultdict(set)
    for plan in plans:
        for inst in plan.instances:
            if inst.cluster:
                clusters[inst.cluster].append(Node(plan.host, inst))
                replicas[inst.cluster].add(plan.cluster_replicas)
    for name, members in clusters.items():
        if len(replicas[name]) > 1:
            problems.append(
                f"cluster {name}: hosts disagree on valkey_cluster_replicas"
                f" ({sorted(replicas[name])}); allowed: one value for the whole cluster"
            )
            continue
        (per_primary,) = replicas[name]
        group = per_primary + 1
        primaries = len(members) // group
        if len(members) % group or primaries < MIN_CLUSTER_PRIMARIES:
            problems.append(
                f"cluster {name}: {len(members)} nodes with {per_primary} replica(s) per primary;"
                f" allowed: a multiple of {group} giving at least {MIN_CLUSTER_PRIMARIES}"
                f" primaries ({MIN_CLUSTER_PRIMARIES * group} nodes or more)"
            )
        hosts = {n.host for n in members}
        if len(hosts) < group:
            problems.append(
                f"cluster {name}: nodes on {len(hosts)} host(s); allowed: at least {group}, so"
                " that every primary's replicas run on other hosts"
            )
    return problems


def _sentinel_problems(plans: list[Plan], by_ref: dict[str, Node]) -> list[str]:
    watchers = [p for p in plans if p.sentinel]
    if not watchers:
        return []
    problems = []
    groups = {(p.sentinel.name, p.sentinel.primary) for p in watchers if p.sentinel}
    if len(groups) > 1:
        problems.append(
            f"valkey_sentinel: hosts watch different primaries {sorted(groups)}; allowed: one"
            " group (name, primary) per inventory"
        )
    for plan in watchers:
        assert plan.sentinel is not None
        target = by_ref.get(plan.sentinel.primary)
        if target is None or target.instance.role != "primary":
            problems.append(
                f"host {plan.host}: valkey_sentinel.primary = {plan.sentinel.primary!r}; allowed:"
                f" an instance with role primary ({sorted(by_ref)})"
            )
        if plan.sentinel.quorum > len(watchers):
            problems.append(
                f"host {plan.host}: valkey_sentinel.quorum = {plan.sentinel.quorum} exceeds the"
                f" {len(watchers)} sentinels; allowed: 1..{len(watchers)}"
            )
    if len(watchers) < 3:
        problems.append(
            f"valkey_sentinel: {len(watchers)} sentinel(s); allowed: 3 or more on different"
            " hosts, so that a majority survives the loss of one host"
        )
    return problems


def validate(plans: Iterable[Plan]) -> None:
    """Raise PlanError listing every cross-host problem of the inventory's plans."""
    plans = list(plans)
    by_ref = nodes(plans)
    problems = [
        *_replica_problems(plans, by_ref),
        *_cluster_problems(plans),
        *_sentinel_problems(plans, by_ref),
        *backup_host_problems(plans),
    ]
    if problems:
        raise PlanError("invalid plan\n" + "\n".join(problems))
