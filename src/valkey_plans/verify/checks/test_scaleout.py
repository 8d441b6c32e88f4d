"""After a rollout: replication and Valkey Cluster are as the plan says.

For every cluster-node instance on the host, as that node sees the cluster: state ok,
all 16384 slots served, exactly the planned nodes are members, every primary has the
plan's number of replicas and they run on other hosts (announced addresses differ),
and the replicas are close behind their primary. For every replica: the link to its
primary is up. On hosts without scale-out roles these checks are N/A (verify says so),
never a pass that could not have failed.
"""

from __future__ import annotations

import pytest

from valkey_plans.deploy import cluster_nodes
from valkey_plans.deploy.cluster_nodes import Member
from valkey_plans.plan import topology
from valkey_plans.verify.report import not_applicable

SLOTS = 16384
#: How far behind its primary a replica may be and still count as "close": replicas
#: acknowledge their offset once a second, so on a quiet cluster the difference is
#: a few pings; a replica this far behind is not keeping up.
OFFSET_SLACK = 1024 * 1024
#: Seconds since a replica last acknowledged (primary side) or heard from its primary
#: (replica side): both happen every second or so while the link is healthy.
LAG_SECONDS = 10
SCALE_OUT = ("replica", "cluster-node")


def fields(text: str) -> dict[str, str]:
    """`key:value` lines (CLUSTER INFO, INFO) as a dict."""
    pairs = (line.strip().partition(":") for line in text.splitlines())
    return {key: value for key, sep, value in pairs if sep and not key.startswith("#")}


def replica_lines(info: dict[str, str]) -> list[dict[str, str]]:
    """The `slaveN:ip=...,port=...,state=...,offset=...,lag=...` entries of a primary."""
    found = []
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit():
            found.append(dict(part.split("=", 1) for part in value.split(",")))
    return found


@pytest.fixture
def cluster_view(valkey):
    """cluster_view(instance) -> (CLUSTER INFO as a dict, CLUSTER NODES as Members)."""

    def view(inst) -> tuple[dict[str, str], list[Member]]:
        live = valkey(inst)
        info = fields(live.cli("CLUSTER", "INFO"))
        assert "cluster_state" in info, (
            f"{inst.name}: CLUSTER INFO gave no cluster_state: is cluster-enabled on?"
        )
        members = cluster_nodes.parse(live.cli("CLUSTER", "NODES"))
        return info, members

    return view


@pytest.fixture
def planned_plans(targets):
    """Every plan of the inventory: cluster membership spans hosts."""
    return [t.plan for t in targets.values()]


def cluster_nodes_of(plan):
    """The host's cluster-node instances: the cluster checks do not apply without one."""
    nodes = [i for i in plan.instances if i.role == "cluster-node"]
    if not nodes:
        not_applicable("no cluster-node instance on this host")
    return nodes


def test_cluster_state_ok_and_every_slot_served(plan, cluster_view):
    for inst in cluster_nodes_of(plan):
        info, _ = cluster_view(inst)
        state = info["cluster_state"]
        assert state == "ok", f"{inst.name}: cluster {inst.cluster} state is {state!r}, want ok"
        for counter in ("cluster_slots_assigned", "cluster_slots_ok"):
            got = int(info.get(counter, 0))
            assert got == SLOTS, (
                f"{inst.name}: {counter} = {got}, want {SLOTS}: run"
                f" `valkey-cli --cluster check {inst.peer_address}:{inst.port}`"
            )


def test_cluster_members_are_the_planned_nodes(plan, planned_plans, cluster_view):
    for inst in cluster_nodes_of(plan):
        _, members = cluster_view(inst)
        planned = {n.address for n in topology.cluster_nodes(planned_plans, inst.cluster)}
        live = {m.address for m in members if not m.failing}
        missing, stray = sorted(planned - live), sorted(live - planned)
        assert not missing, f"{inst.name}: planned nodes not (healthy) in the cluster: {missing}"
        assert not stray, f"{inst.name}: cluster members the plan does not name: {stray}"


def test_every_primary_has_its_replicas_on_other_hosts(plan, cluster_view):
    for inst in cluster_nodes_of(plan):
        _, members = cluster_view(inst)
        primaries = [m for m in members if m.primary and not m.failing]
        assert primaries, f"{inst.name}: no healthy primary in CLUSTER NODES"
        for primary in primaries:
            assert primary.slots, f"{inst.name}: primary {primary.address} serves no slots"
            replicas = [m for m in members if m.primary_id == primary.id and not m.failing]
            assert len(replicas) == plan.cluster_replicas, (
                f"{inst.name}: primary {primary.address} has {len(replicas)} healthy"
                f" replica(s) {[r.address for r in replicas]}, the plan wants"
                f" {plan.cluster_replicas}"
            )
            beside = [r.address for r in replicas if r.ip == primary.ip]
            assert not beside, (
                f"{inst.name}: replica(s) {beside} run on the same host as their primary"
                f" {primary.address}: losing that host loses the shard"
            )


def test_replicas_linked_and_close_behind_their_primary(plan, valkey):
    linked = [
        inst
        for inst in plan.instances
        if inst.role in SCALE_OUT or (inst.role == "primary" and inst.peer_address)
    ]
    if not linked:
        not_applicable("no replica, cluster node or primary reachable by replicas on this host")
    for inst in linked:
        info = fields(valkey(inst).cli("INFO", "replication"))
        role = info.get("role")
        if role == "slave":
            link = info.get("master_link_status")
            assert link == "up", (
                f"{inst.name}: replica of {info.get('master_host')}:{info.get('master_port')}"
                f" has master_link_status {link!r}, want up"
            )
            silent = int(info.get("master_last_io_seconds_ago", -1))
            assert 0 <= silent <= LAG_SECONDS, (
                f"{inst.name}: last heard from its primary {silent} s ago, want 0..{LAG_SECONDS}"
            )
            continue
        assert role == "master", f"{inst.name}: INFO replication role {role!r}"
        if inst.role == "replica" and not plan.sentinel:
            pytest.fail(f"{inst.name}: planned as a replica of {inst.replicaof}, runs as a primary")
        offset = int(info["master_repl_offset"])
        for replica in replica_lines(info):
            where = f"{replica['ip']}:{replica['port']}"
            assert replica["state"] == "online", (
                f"{inst.name}: replica {where} is {replica['state']!r}, want online"
            )
            behind = offset - int(replica["offset"])
            assert behind <= OFFSET_SLACK, (
                f"{inst.name}: replica {where} is {behind} bytes behind (allowed {OFFSET_SLACK})"
            )
            lag = int(replica["lag"])
            assert lag <= LAG_SECONDS, (
                f"{inst.name}: replica {where} last acknowledged {lag} s ago, want <= {LAG_SECONDS}"
            )
