"""status' parsing and arithmetic on raw replies, without a server (tests/server/ has one)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from rich.console import Console

from valkey_plans.plan import Plan
from valkey_plans.verify.status import (
    CLIENT_NAME,
    InstanceStatus,
    Replica,
    Sample,
    Snapshot,
    count_connections,
    instance_status,
    link_replicas,
    parse_cluster_state,
    parse_info,
    parse_replicas,
    table,
)

PRIMARY_INFO = """# Memory\r
used_memory:1048576\r
maxmemory:4194304\r
maxmemory_policy:noeviction\r
\r
# Stats\r
total_commands_processed:{commands}\r
expired_keys:{expired}\r
evicted_keys:{evicted}\r
keyspace_hits:{hits}\r
keyspace_misses:{misses}\r
\r
# Replication\r
role:master\r
connected_slaves:2\r
slave0:ip=10.0.0.2,port=6380,state=online,offset=900,lag=0\r
slave1:ip=10.0.0.3,port=6380,state=wait_bgsave,offset=0,lag=1\r
master_repl_offset:1000\r
\r
# Cluster\r
cluster_enabled:0\r
"""

REPLICA_INFO = """# Replication
role:slave
master_host:10.0.0.1
master_port:6380
master_link_status:up
slave_repl_offset:900
connected_slaves:0
master_repl_offset:900
"""


def info(commands=100, expired=0, evicted=0, hits=0, misses=0) -> str:
    return PRIMARY_INFO.format(
        commands=commands, expired=expired, evicted=evicted, hits=hits, misses=misses
    )


def client_line(name: str, n: int = 1) -> str:
    return (
        f"id={n} addr=127.0.0.1:5{n:04d} laddr=127.0.0.1:6379 fd=9 name={name} age=0 idle=0"
        " flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=10"
        " cmd=get user=default redir=-1 resp=2 lib-name=valkey-py lib-ver=6.2.0"
    )


PLAN = Plan.from_host_data(
    "db-1",
    {
        "valkey_instances": [
            {"name": "hosted", "role": "primary", "port": 6380, "bind": ["10.0.0.1"]}
        ],
        "valkey_acl": True,
        "valkey_app": {"hosted_instance": "hosted", "cache_instance": None},
    },
)
HOSTED = PLAN.instance("hosted")


def test_info_is_flat_and_keeps_colons_in_values():
    fields = parse_info("# Server\r\nexecutable:/usr/bin/valkey-server\r\nconfig_file:\r\n"
                        "\r\n# Replication\r\nmaster_host:::1\r\nrole:slave\r\n")  # fmt: skip
    assert fields == {
        "executable": "/usr/bin/valkey-server",
        "config_file": "",
        "master_host": "::1",
        "role": "slave",
    }


def test_replicas_lag_is_the_primary_offset_minus_theirs():
    assert parse_replicas(parse_info(info())) == [
        Replica("10.0.0.2:6380", "online", 900, 100),
        Replica("10.0.0.3:6380", "wait_bgsave", 0, 1000),
    ]
    assert parse_replicas(parse_info(REPLICA_INFO)) == []


def test_connections_count_by_workload_name_of_this_app():
    lines = [
        client_line("app:api", 1),
        client_line("app:api", 2),
        client_line("app:background", 3),
        client_line("app:subscriber", 4),
        client_line("app:nonsense", 5),  # not a workload: other
        client_line("shop:api", 6),  # another app's: other
        client_line("", 7),  # unnamed: other
        client_line(CLIENT_NAME, 8),  # status itself: not counted
        "",
    ]
    assert count_connections("\n".join(lines), "app") == {
        "api": 2,
        "blocking": 0,
        "subscriber": 1,
        "background": 1,
        "other": 3,
    }
    assert count_connections("\n".join(lines), "shop")["api"] == 1


def test_cluster_state():
    assert parse_cluster_state("cluster_state:ok\r\ncluster_slots_assigned:16384\r\n") == "ok"
    assert parse_cluster_state("cluster_state:fail\r\n") == "fail"


def test_rates_are_taken_between_the_two_samples():
    before = Sample(10.0, info(commands=1000, expired=5, evicted=10, hits=100, misses=100), sent=1)
    after = Sample(12.0, info(commands=3001, expired=25, evicted=50, hits=400, misses=200), sent=2,
                   client_list=client_line("app:api"))  # fmt: skip
    got = instance_status("db-1", HOSTED, "app", before, after)
    assert got.ops_per_s == 1000.0  # (3001 - 1000 - status' own first INFO) / 2 s
    assert got.hit_ratio == 0.75  # 300 hits, 100 misses in between, not 400/600 since start
    assert (got.evictions_per_s, got.expirations_per_s) == (20.0, 10.0)
    assert (got.memory_used_bytes, got.maxmemory_bytes, got.memory_ratio) == (
        1048576,
        4194304,
        0.25,
    )
    assert got.connections["api"] == 1
    assert got.replication.role == "master" and got.replication.lag_bytes == 1000
    assert got.address == "10.0.0.1:6380" and got.cluster_state is None
    assert got.backup_age_s is None


def test_no_lookups_no_limit_and_a_restart_give_none_not_zero():
    before = Sample(0.0, info(commands=5000, evicted=10, hits=7))
    after = Sample(1.0, info(commands=20, evicted=0, hits=7).replace("maxmemory:4194304",
                                                                     "maxmemory:0"))  # fmt: skip
    got = instance_status("db-1", HOSTED, "app", before, after)
    assert got.hit_ratio is None  # no lookup in the interval
    assert got.memory_ratio is None  # maxmemory 0: no limit
    assert got.ops_per_s is None and got.evictions_per_s is None  # counters went back
    assert got.connections is None  # the sample took no CLIENT LIST


def test_a_replica_gets_its_lag_from_its_primary_in_the_same_snapshot():
    primary = instance_status("db-1", HOSTED, "app", Sample(0, info()), Sample(1, info()))
    replica_plan = Plan.from_host_data(
        "db-2",
        {
            "valkey_instances": [{"name": "copy", "role": "replica", "port": 6380,
                                  "bind": ["10.0.0.2"], "replicaof": "db-1/hosted"}],
            "valkey_acl": True,
            "valkey_app": {"cache_instance": None},
        },
    )  # fmt: skip
    copy = replica_plan.instance("copy")
    replica = instance_status("db-2", copy, "app", Sample(0, REPLICA_INFO), Sample(1, REPLICA_INFO))
    alone = instance_status("db-2", copy, "app", Sample(0, REPLICA_INFO), Sample(1, REPLICA_INFO))
    link_replicas([primary, replica])
    link_replicas([alone])
    assert replica.replication.lag_bytes == 100 and replica.replication.link == "up"
    assert alone.replication.lag_bytes is None  # its primary is not in the snapshot


def test_snapshot_json_shape():
    got = instance_status("db-1", HOSTED, "app", Sample(0, info()), Sample(1, info()))
    down = InstanceStatus("db-2", "cache", "cache", "127.0.0.1:6379", "ConnectionError: refused")
    snap = Snapshot(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), 1.0, [got, down])
    data = json.loads(json.dumps(snap.to_dict()))
    assert data["taken_at"] == "2025-01-02T03:04:05Z"
    first, second = data["instances"]
    assert first["memory"] == {"used_bytes": 1048576, "max_bytes": 4194304, "ratio": 0.25}
    assert first["replication"]["replicas"][0] == {
        "address": "10.0.0.2:6380",
        "state": "online",
        "offset": 900,
        "lag_bytes": 100,
    }
    assert second["error"] == "ConnectionError: refused"
    assert second["memory"] == {"used_bytes": None, "max_bytes": None, "ratio": None}
    assert second["replication"] is None and second["backup_age_s"] is None
    assert not snap.ok


def test_table_has_a_row_per_instance_and_shows_errors():
    got = instance_status("db-1", HOSTED, "app", Sample(0, info()), Sample(1, info()))
    down = InstanceStatus("db-2", "cache", "cache", "127.0.0.1:6379", "ConnectionError: refused")
    out = Console(record=True, width=200, file=io.StringIO())
    out.print(table(Snapshot(datetime.now(UTC), 1.0, [got, down])))
    text = out.export_text()
    assert "db-1/hosted" in text and "1.0M/4.0M" in text and "2 repl., lag 1000B" in text
    assert "db-2/cache" in text and "ConnectionError: refused" in text
