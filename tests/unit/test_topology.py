"""Scale-out rules across hosts: replicas, Valkey Cluster, Sentinel."""

from __future__ import annotations

import pytest

from valkey_plans.plan import Plan, PlanError
from valkey_plans.plan.topology import cluster_nodes, validate

ACL = {"valkey_acl": True}


def node(name: str, port: int, address: str, **extra) -> dict:
    return {
        "name": name,
        "role": "cluster-node",
        "cluster": "main",
        "port": port,
        "bind": ["127.0.0.1", address],
        **extra,
    }


def cluster_plans(hosts: int = 3, per_host: int = 2, replicas: int = 1) -> list[Plan]:
    return [
        Plan.from_host_data(
            f"h{h}",
            {
                **ACL,
                "valkey_cluster_replicas": replicas,
                "valkey_instances": [
                    node(f"n{i}", 7000 + i, f"10.9.0.{h + 1}") for i in range(per_host)
                ],
                "valkey_app": {"cache_instance": None},
            },
        )
        for h in range(hosts)
    ]


def problems(plans) -> str:
    with pytest.raises(PlanError) as info:
        validate(plans)
    return str(info.value)


def test_three_hosts_with_two_nodes_each_make_a_valid_cluster():
    plans = cluster_plans()
    validate(plans)
    assert [n.ref for n in cluster_nodes(plans, "main")] == [
        "h0/n0",
        "h0/n1",
        "h1/n0",
        "h1/n1",
        "h2/n0",
        "h2/n1",
    ]
    assert cluster_nodes(plans, "main")[0].address == "10.9.0.1:7000"


def test_cluster_needs_three_primaries():
    message = problems(cluster_plans(hosts=2, per_host=2))
    assert (
        "cluster main: 4 nodes with 1 replica(s) per primary; allowed: a multiple of 2" in message
    )


def test_cluster_replicas_need_other_hosts():
    message = problems(cluster_plans(hosts=1, per_host=6))
    assert "nodes on 1 host(s); allowed: at least 2" in message


def test_cluster_node_must_be_reachable_from_other_hosts():
    with pytest.raises(PlanError, match="must be reachable from other hosts"):
        Plan.from_host_data(
            "h",
            {
                **ACL,
                "valkey_instances": [
                    {"name": "n", "role": "cluster-node", "cluster": "main", "port": 7000}
                ],
            },
        )


def test_cluster_node_has_db_0_only():
    with pytest.raises(PlanError, match="has db 0 only"):
        Plan.from_host_data(
            "h", {**ACL, "valkey_instances": [node("n", 7000, "10.9.0.1", databases=4)]}
        )


def replication(replicaof: str, primary_role: str = "primary") -> list[Plan]:
    primary = {
        "name": "main",
        "role": primary_role,
        "port": 6380,
        "bind": ["127.0.0.1", "10.9.0.1"],
    }
    if primary_role == "cluster-node":
        primary["cluster"] = "c"
    return [
        Plan.from_host_data(
            "db-1", {**ACL, "valkey_instances": [primary], "valkey_app": {"cache_instance": None}}
        ),
        Plan.from_host_data(
            "db-2",
            {
                **ACL,
                "valkey_app": {"cache_instance": None},
                "valkey_instances": [
                    {
                        "name": "main",
                        "role": "replica",
                        "replicaof": replicaof,
                        "port": 6380,
                        "bind": ["127.0.0.1", "10.9.0.2"],
                    }
                ],
            },
        ),
    ]


def test_replica_of_an_existing_primary_on_another_host_is_valid():
    validate(replication("db-1/main"))


def test_replica_must_name_an_existing_primary():
    assert "replicaof = 'db-9/main': no such instance" in problems(replication("db-9/main"))


def test_replica_must_follow_a_primary():
    message = problems(replication("db-1/main", primary_role="cluster-node"))
    assert "is a cluster-node; allowed: an instance with role primary" in message


def test_replica_without_a_primary_reference_is_refused():
    with pytest.raises(PlanError, match="a replica names its primary"):
        Plan.from_host_data(
            "h",
            {
                **ACL,
                "valkey_instances": [
                    {"name": "r", "role": "replica", "port": 6380, "bind": ["10.9.0.2"]}
                ],
            },
        )


def sentinel_plans(count: int, quorum: int = 2) -> list[Plan]:
    plans = replication("db-1/main")
    data = [
        {"valkey_sentinel": {"primary": "db-1/main", "bind": [f"10.9.0.{i + 1}"], "quorum": quorum}}
        for i in range(count)
    ]
    hosts = ["db-1", "db-2", "db-3", "db-4"]
    out = []
    for i, host in enumerate(hosts[: max(count, 2)]):
        base = (
            plans[i].model_dump(by_alias=True)
            if i < 2
            else {"valkey_instances": [], "valkey_app": {"cache_instance": None}}
        )
        base.pop("host", None)
        if i < count:
            base.update(data[i])
        out.append(Plan.from_host_data(host, {**ACL, **base}))
    return out


def test_three_sentinels_watching_one_primary_are_valid():
    validate(sentinel_plans(3))


def test_two_sentinels_are_not_enough():
    assert "2 sentinel(s); allowed: 3 or more" in problems(sentinel_plans(2))


def test_quorum_cannot_exceed_the_sentinels():
    assert "quorum = 4 exceeds the 3 sentinels" in problems(sentinel_plans(3, quorum=4))


def test_exposed_sentinel_needs_acl():
    with pytest.raises(PlanError, match="bind beyond loopback without passwords"):
        Plan.from_host_data("h", {"valkey_sentinel": {"primary": "x/y", "bind": ["10.9.0.1"]}})
