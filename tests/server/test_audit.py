"""The keyspace audit and the cache canary against real valkey-server processes.

Each violation test writes exactly one offending key next to data written through
the cache API, and asserts that the audit reports that one violation and no other.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import valkey
from valkey._parsers import _RESP2Parser

from tests.valkey_server import cluster_port, free_port
from valkey_plans.client import functions
from valkey_plans.client.cache import LocalCache
from valkey_plans.keys import encode_time, new_key, new_txkey
from valkey_plans.plan import Plan, acl
from valkey_plans.verify import audit_rules
from valkey_plans.verify.audit import SCAN_COUNT, audit_instance
from valkey_plans.verify.canary import Canary, CanaryFailure

WRITE_COMMANDS = {"set", "del", "unlink", "expire", "pexpire", "hset", "zadd", "fcall", "flushdb"}


def cache_plan(port: int, **cache_dbs: dict) -> Plan:
    dbs = {
        "user_index": {"db": 0},
        "user_cache": {"db": 1, "cap": 100, "ttl": 3600},
        "session_cache": {"db": 2, "ttl": 86400},
        "message_queue": {"db": 3, "cap": 1000, "ttl": 86400},
        **cache_dbs,
    }
    return Plan.from_host_data(
        "test",
        {
            "valkey_instances": [
                {"name": "cache", "role": "cache", "port": port, "cache_dbs": dbs}
            ],
        },
    )


def primary_plan(port: int) -> Plan:
    return Plan.from_host_data(
        "test",
        {
            "valkey_instances": [{"name": "hosted", "role": "primary", "port": port}],
            "valkey_app": {"cache_instance": None, "hosted_instance": "hosted"},
            "valkey_domains": ["usr", "ord"],
        },
    )


def clients(port: int, **kwargs: object):
    made: dict[int, valkey.Valkey] = {}
    return lambda db: made.setdefault(db, valkey.Valkey(port=port, db=db, **kwargs))


@pytest.fixture
def cache_server(valkey_factory):
    """A cache-role server with the library and a little of everything, via the cache API."""
    server = valkey_factory("cache", databases="16", maxmemory_policy="volatile-lru")
    client_for_db = clients(server.port)
    functions.ensure_loaded(client_for_db(0))
    cache = LocalCache.from_clients(*(client_for_db(db) for db in range(4)))
    user = new_key("usr")
    cache.index.link("someone@example.com", user)
    cache.users.put(user, {"name": "Some One"})
    cache.sessions.create(user, {"cart": 1})
    cache.messages.enqueue({"to": "someone@example.com"})
    return server


def test_cache_api_data_conforms_and_counts_per_db_and_class(cache_server):
    plan = cache_plan(cache_server.port)
    report = audit_instance(plan, plan.instances[0], clients(cache_server.port))
    assert report.ok, report.verdict()
    classes = {db: dict(count.classes) for db, count in report.dbs.items()}
    assert classes[0] == {"conforming": 1}
    assert classes[1] == {"conforming": 1, "structural": 2}  # vp:lru:users + its clock
    assert classes[2] == {"conforming": 1, "structural": 1}  # the owner's session set
    # lru, clock, pending list, the message's delivery count
    assert classes[3] == {"conforming": 1, "structural": 4}
    assert report.dbs[2].types == {"hash": 1, "set": 1}


TXKEY = "0kVq3Xb1d7Fz"


@pytest.mark.parametrize(
    ("db", "command", "kind", "reason"),
    [
        (1, ("SET", "cache:user:42", "x", "EX", "60"), "malformed-name", "separator"),
        (1, ("SET", f"prd:{TXKEY}", "x", "EX", "60"), "undeclared-domain", "'prd'"),
        (1, ("SET", f"ses:{TXKEY}", "x", "EX", "60"), "wrong-db", "belongs in db 2"),
        (2, ("HSET", f"ses:{TXKEY}", "owner", "x"), "missing-ttl", "session_cache requires"),
        (3, ("SET", f"msg:{TXKEY}", "x"), "missing-ttl", "message_queue requires"),
        (0, ("SET", "a@example.com", f"usr:{TXKEY}", "EX", "60"), "index-entry-ttl", "evict"),
        (0, ("SET", "b@example.com", "usr:nope"), "bad-index-value", "malformed usr: key"),
        (0, ("SET", "Not An Email", f"usr:{TXKEY}"), "malformed-name", "normalised email"),
        (1, ("RPUSH", f"usr:{TXKEY}", "x"), "wrong-type", "list, want string"),
        (1, ("SET", "vp:mine", "x"), "undeclared-structural", "not declared"),
        (5, ("SET", f"usr:{TXKEY}", "x"), "unplanned-db", "db 5"),
    ],
)
def test_each_violation_is_reported_alone_with_its_reason(cache_server, db, command, kind, reason):
    client_for_db = clients(cache_server.port)
    client_for_db(db).execute_command(*command)
    plan = cache_plan(cache_server.port)
    report = audit_instance(plan, plan.instances[0], client_for_db)
    assert dict(report.kinds) == {kind: 1}, report.verdict()
    (violation,) = report.sample
    assert (violation.db, violation.kind) == (db, kind)
    assert reason in violation.reason, violation.reason


def test_user_cache_above_its_cap_is_a_violation(cache_server):
    client_for_db = clients(cache_server.port)
    for _ in range(2):  # the fixture put one user: three in a db whose plan cap is 2
        client_for_db(1).set(new_key("usr"), "{}", ex=60)
    plan = cache_plan(cache_server.port, user_cache={"db": 1, "cap": 2, "ttl": 3600})
    report = audit_instance(plan, plan.instances[0], client_for_db)
    assert dict(report.kinds) == {"over-cap": 1}
    assert "holds 3 usr: records, cap 2" in report.sample[0].reason


def test_primary_keys_outside_db0_and_undeclared_domains(valkey_factory):
    server = valkey_factory("primary", databases="16")
    client_for_db = clients(server.port)
    client_for_db(0).set(new_key("usr"), "{}")
    client_for_db(0).set(new_key("ord"), "{}")
    client_for_db(0).set(f"msg:{TXKEY}", "{}")  # a known domain this plan does not declare
    client_for_db(1).set(new_key("usr"), "{}")
    plan = primary_plan(server.port)
    report = audit_instance(plan, plan.instances[0], client_for_db)
    assert dict(report.kinds) == {"outside-db0": 1, "undeclared-domain": 1}, report.verdict()
    assert report.dbs[0].classes["conforming"] == 2


def test_many_batches_are_all_classified_and_progress_adds_up(valkey_factory):
    server = valkey_factory("many", databases="4")
    client_for_db = clients(server.port)
    pipe = client_for_db(1).pipeline(transaction=False)
    total = 3 * SCAN_COUNT + 17
    for _ in range(total):
        pipe.set(new_key("usr"), "{}", ex=600)
    pipe.set("stray", "x")
    pipe.execute()
    plan = cache_plan(server.port, user_cache={"db": 1, "cap": 1_000_000, "ttl": 3600})
    seen: list[int] = []
    report = audit_instance(plan, plan.instances[0], client_for_db, progress=seen.append)
    assert report.dbs[1].classes == {"conforming": total, "violation": 1}
    assert sum(seen) == total + 1
    assert [v.key for v in report.sample] == ["stray"]


@pytest.mark.parametrize(
    ("db", "crafted"),
    [
        (1, f"usr:{TXKEY}\nusr:{TXKEY}"),  # two record names in one key
        (1, "usr:0kVq3X\nd7Fz"),  # a record's length, with a newline inside
        (0, "a@example.com\nb@example.com"),  # two index names in one key
    ],
)
def test_a_full_batch_with_one_name_hiding_a_newline_has_that_one_violation(
    valkey_factory, db, crafted
):
    """Whole conforming batches are recognised with one regex over the joined names; a
    name with a newline of its own must not pass as two good ones."""
    server = valkey_factory("crafted", databases="4")
    client = clients(server.port)(db)
    pipe = client.pipeline(transaction=False)
    for i in range(SCAN_COUNT // 2):
        if db == 0:
            pipe.set(f"user{i}@example.com", new_key("usr"))
        else:
            pipe.set(new_key("usr"), "{}", ex=600)
    pipe.execute()
    if db == 0:
        client.set(crafted, new_key("usr"))
    else:
        client.set(crafted, "{}", ex=600)
    plan = cache_plan(server.port, user_cache={"db": 1, "cap": 1_000_000, "ttl": 3600})
    report = audit_instance(plan, plan.instances[0], clients(server.port))
    assert dict(report.kinds) == {"malformed-name": 1}, report.verdict()
    assert report.dbs[db].classes == {"conforming": SCAN_COUNT // 2, "violation": 1}


def test_the_pure_python_parser_gives_the_same_report(valkey_factory):
    """Without libvalkey's reader the audit reads reply by reply; the verdict is the same."""
    server = valkey_factory("parsers", databases="4")
    pipe = clients(server.port)(1).pipeline(transaction=False)
    for _ in range(2 * SCAN_COUNT + 3):
        pipe.set(new_key("usr"), "{}", ex=600)
    pipe.set("stray", "x")
    pipe.execute()
    plan = cache_plan(server.port, user_cache={"db": 1, "cap": 1_000_000, "ttl": 3600})

    def plain(db: int) -> valkey.Valkey:
        pool = valkey.ConnectionPool(port=server.port, db=db, parser_class=_RESP2Parser)
        return valkey.Valkey(connection_pool=pool)

    fast = audit_instance(plan, plan.instances[0], clients(server.port))
    slow = audit_instance(plan, plan.instances[0], plain)
    assert slow.to_dict() == fast.to_dict()
    assert slow.dbs[1].classes == {"conforming": 2 * SCAN_COUNT + 3, "violation": 1}


def test_audit_sends_only_read_commands(cache_server):
    client_for_db = clients(cache_server.port)
    client_for_db(1).set("stray", "x")
    client_for_db(0).config_resetstat()
    plan = cache_plan(cache_server.port)
    audit_instance(plan, plan.instances[0], client_for_db)
    used = {name.removeprefix("cmdstat_") for name in client_for_db(0).info("commandstats")}
    assert used, "no commands recorded"
    assert not used & WRITE_COMMANDS, used
    assert used <= {
        "scan",
        "mget",
        "pttl",
        "type",
        "info",
        "select",
        "config|resetstat",
        "client|setinfo",
        "hello",
    }, used


def test_audit_runs_as_the_read_only_checks_user(cache_server):
    admin = valkey.Valkey(port=cache_server.port)
    rules = acl.PERMISSIONS["checks"].split()
    admin.execute_command("ACL", "SETUSER", "checks", "on", ">checks-password-0123", "~*", *rules)
    client_for_db = clients(cache_server.port, username="checks", password="checks-password-0123")
    client_for_db(1).get("x")  # logged in
    with pytest.raises(valkey.exceptions.NoPermissionError):
        client_for_db(1).set("x", "y")
    plan = cache_plan(cache_server.port)
    report = audit_instance(plan, plan.instances[0], client_for_db)
    assert report.ok, report.verdict()
    assert sum(d.keys for d in report.dbs.values()) == 11


def _snapshot(client_for_db) -> dict[int, dict[bytes, object]]:
    out = {}
    for db in range(4):
        client = client_for_db(db)
        out[db] = {k: client.dump(k) for k in client.scan_iter(count=1000)}
    return out


def test_canary_proves_bounds_and_leaves_real_data_alone(cache_server):
    client_for_db = clients(cache_server.port)
    before = _snapshot(client_for_db)
    plan = cache_plan(cache_server.port)
    canary = Canary(client_for_db, plan.instances[0])
    canary.run()
    assert canary.written and all(
        k.startswith(audit_rules.CANARY_PREFIX) for keys in canary.written.values() for k in keys
    )
    assert canary.cleanup() == []
    assert _snapshot(client_for_db) == before


def test_canary_clears_debris_of_killed_runs_and_spares_a_run_going_on(cache_server):
    """Keys of a run that never cleaned up (older than STALE_AFTER) go; young ones stay."""
    client_for_db = clients(cache_server.port)
    plan = cache_plan(cache_server.port)
    db = plan.instances[0].db("user_cache").db
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    debris = [f"{audit_rules.CANARY_PREFIX}lru:{encode_time(hour_ago)}abc"]
    debris.append(f"{audit_rules.CANARY_PREFIX}{encode_time(hour_ago)}abd")
    other_run = f"{audit_rules.CANARY_PREFIX}lru:{new_txkey()}"
    for key in (*debris, other_run):
        client_for_db(db).set(key, "1")
    canary = Canary(client_for_db, plan.instances[0])
    canary.run()
    assert canary.cleanup() == []
    assert client_for_db(db).exists(*debris) == 0
    assert client_for_db(db).exists(other_run) == 1


def test_canary_catches_a_library_that_does_not_evict(cache_server):
    client_for_db = clients(cache_server.port)
    broken = functions.library_source().replace(
        "local excess = redis.call('ZCARD', zset) - cap", "local excess = 0"
    )
    assert broken != functions.library_source()
    client_for_db(0).function_load(broken, replace=True)
    plan = cache_plan(cache_server.port)
    canary = Canary(client_for_db, plan.instances[0])
    with pytest.raises(CanaryFailure, match="exact LRU broken"):
        canary.run()
    assert canary.cleanup() == []


def test_store_keys_on_the_hosted_tier_are_declared_structural(valkey_factory):
    """The read-through store's email index and session sets on hosted db 0 are not violations."""
    from valkey_plans.plan import Plan
    from valkey_plans.verify.audit_rules import STRUCTURAL, Classifier, instance_rules

    plan = Plan.from_host_data(
        "h",
        {
            "valkey_instances": [{"name": "hosted", "role": "primary", "port": 6380}],
            "valkey_app": {"cache_instance": None},
        },
    )
    classifier = Classifier(plan, plan.instances[0])
    rules = instance_rules(plan, plan.instances[0])[0]
    assert classifier.name(rules, "vp:email:alice@example.com", "string", -1)[0] == STRUCTURAL
    assert classifier.name(rules, "vp:sessions:usr:0000000000ab", "set", -1)[0] == STRUCTURAL
    assert classifier.name(rules, "vp:elsewhere", "string", -1)[0] != STRUCTURAL


def test_a_cluster_replica_is_audited_with_its_keys(valkey_factory):
    """A replica of a cluster lists its primary's keys with SCAN but answers reads of them
    with MOVED, unless its connection is READONLY: the audit of a node reads them all."""
    primary = valkey_factory("primary", cluster_enabled="yes", cluster_port=str(free_port()))
    replica = valkey_factory(
        "replica", port=cluster_port(), cluster_enabled="yes", cluster_port=str(free_port())
    )
    primary.client().execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    bus = primary.config["cluster-port"]
    replica.client().execute_command("CLUSTER", "MEET", "127.0.0.1", str(primary.port), bus)
    primary_id = primary.client().execute_command("CLUSTER", "MYID")
    deadline = time.monotonic() + 20
    while True:
        try:
            replica.client().execute_command("CLUSTER", "REPLICATE", primary_id)
            break
        except valkey.ResponseError as error:  # not known to the replica yet
            assert time.monotonic() < deadline, f"the replica never met its primary: {error}"
            time.sleep(0.1)
    while primary.client().cluster("info")["cluster_state"] != "ok":
        assert time.monotonic() < deadline, "the cluster never reached cluster_state:ok"
        time.sleep(0.1)
    keys = [new_key("usr") for _ in range(50)]
    cluster = valkey.ValkeyCluster(host="127.0.0.1", port=primary.port)
    for key in keys:
        cluster.set(key, "{}")
    while replica.client().dbsize() < len(keys):
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.1)
    plan = Plan.from_host_data(
        "test",
        {
            "valkey_instances": [
                {
                    "name": "n1",
                    "role": "cluster-node",
                    "port": replica.port,
                    "cluster": "c",
                    "announce_ip": "10.0.0.1",
                }
            ],
            "valkey_app": {"cache_instance": None},
        },
    )
    report = audit_instance(plan, plan.instances[0], clients(replica.port))
    assert report.ok, report.verdict()
    assert report.dbs[0].keys == len(keys)
