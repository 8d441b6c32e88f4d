"""Workload clients on a real valkey-server: isolation, names, guards, restarts, cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import valkey

from tests.server.workload_helpers import by_name, tier_for, wait_until
from tests.valkey_server import ValkeyProcess, free_port
from valkey_plans.client.clients import Clients, CommandRefused


@pytest.fixture
def clients(valkey_server: ValkeyProcess) -> Iterator[Clients]:
    with Clients(tier_for(valkey_server)) as made:
        yield made


def test_each_workload_has_its_own_pool_and_client_name(clients, valkey_server):
    clients.api.set("k", "v")
    clients.blocking.blpop("nothing", timeout=0.01)
    pubsub = clients.subscriber.pubsub()
    pubsub.subscribe("news")
    clients.background.dbsize()
    names = by_name(valkey_server)
    for workload in ("api", "blocking", "subscriber", "background"):
        assert f"shop:{workload}" in names, sorted(names)
    assert names["shop:subscriber"][0]["sub"] == "1"
    pools = {
        id(clients.get(w).connection_pool) for w in ("api", "blocking", "subscriber", "background")
    }
    assert len(pools) == 4
    assert clients.api is clients.api  # made once, lazily
    pubsub.close()


def test_for_db_uses_its_own_pools_on_that_db_without_select(clients, valkey_server):
    clients.api.set("where", "db0")
    other = clients.for_db(2)
    other.api.set("where", "db2")
    assert clients.api.get("where") == b"db0"
    assert other.api.get("where") == b"db2"
    assert clients.for_db(2) is other and other.for_db(0) is clients
    assert other.api.connection_pool is not clients.api.connection_pool
    api_connections = by_name(valkey_server)["shop:api"]
    assert sorted(entry["db"] for entry in api_connections) == ["0", "2"]
    # the only SELECT is the one in the db-2 connection's handshake, never on a borrowed one
    stats = valkey_server.client().info("commandstats")
    assert stats["cmdstat_select"]["calls"] == 1
    with pytest.raises(ValueError, match="db must be an integer 0..15"):
        clients.for_db(16)


def test_each_workload_logs_in_as_its_own_acl_user(valkey_server):
    admin = valkey_server.client()
    for workload in ("api", "blocking", "subscriber", "background"):
        admin.acl_setuser(
            f"shop-{workload}",
            enabled=True,
            passwords=[f"+pw-{workload}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
    env = {}
    for workload in ("api", "blocking", "subscriber", "background"):
        env |= {f"{workload}_user": f"shop-{workload}", f"{workload}_password": f"pw-{workload}"}
    with Clients(tier_for(valkey_server, **env)) as clients:
        clients.api.ping()
        clients.blocking.blpop("q", timeout=0.01)
        clients.subscriber.publish("c", "m")
        clients.background.dbsize()
        users = {name: entries[0]["user"] for name, entries in by_name(valkey_server).items()}
    for workload in ("api", "blocking", "subscriber", "background"):
        assert users[f"shop:{workload}"] == f"shop-{workload}"


def test_wrong_password_fails_without_showing_it(valkey_server):
    valkey_server.client().acl_setuser(
        "shop-api", enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"]
    )
    tier = tier_for(valkey_server, api_user="shop-api", api_password="wrong-topsecret")
    with Clients(tier) as clients, pytest.raises(valkey.AuthenticationError) as err:
        clients.api.ping()
    assert "topsecret" not in str(err.value)
    assert "topsecret" not in repr(clients.api) and "topsecret" not in repr(clients)


def test_api_may_wait_briefly_for_replicas_after_writes_that_must_not_be_lost(clients):
    clients.api.set("usr:durable", "1")
    assert clients.api.wait(0, 100) == 0  # a standalone server has no replicas to count


@pytest.mark.parametrize(
    ("workload", "call", "message"),
    [
        ("api", lambda c: c.blpop("q", 1), "BLPOP refused on shop:api.*clients.blocking"),
        ("api", lambda c: c.brpop("q", 1), "BRPOP refused on shop:api"),
        ("api", lambda c: c.blmove("a", "b", 1), "BLMOVE refused on shop:api"),
        ("api", lambda c: c.brpoplpush("a", "b", 1), "BRPOPLPUSH refused on shop:api"),
        ("api", lambda c: c.bzpopmin("z", 1), "BZPOPMIN refused on shop:api"),
        ("api", lambda c: c.bzpopmax("z", 1), "BZPOPMAX refused on shop:api"),
        ("api", lambda c: c.blmpop(1, 1, "q", direction="LEFT"), "BLMPOP refused"),
        ("api", lambda c: c.bzmpop(1, 1, ["z"], min=True), "BZMPOP refused"),
        ("api", lambda c: c.xread({"s": 0}, block=10), "XREAD refused on shop:api"),
        ("api", lambda c: c.xreadgroup("g", "c", {"s": ">"}, block=10), "XREADGROUP refused"),
        ("api", lambda c: c.wait(1, 5000), "WAIT refused on shop:api"),
        ("api", lambda c: c.wait(1, 0), "WAIT refused on shop:api"),
        ("background", lambda c: c.wait(1, 10), "WAIT refused on shop:background"),
        ("background", lambda c: c.blpop("q", 1), "BLPOP refused on shop:background"),
        ("api", lambda c: c.execute_command("SELECT", 1), "SELECT refused.*db comes from settings"),
        ("blocking", lambda c: c.execute_command("select", 1), "SELECT refused on shop:blocking"),
        ("background", lambda c: c.execute_command(b"SELECT", 1), "SELECT refused"),
        ("subscriber", lambda c: c.execute_command("SELECT", 1), "SELECT refused"),
        ("subscriber", lambda c: c.get("k"), "GET refused on shop:subscriber.*pubsub()"),
        ("subscriber", lambda c: c.set("k", "v"), "SET refused on shop:subscriber"),
        ("api", lambda c: c.pubsub(), r"pubsub\(\) refused on shop:api.*subscriber"),
        ("api", lambda c: c.execute_command("SUBSCRIBE", "c"), "SUBSCRIBE refused on shop:api"),
        ("api", lambda c: c.monitor(), "MONITOR refused"),
        ("blocking", lambda c: c.blpop("q"), "would block forever.*at most 30 s"),
        ("blocking", lambda c: c.blpop("q", 31), "would block 31 s.*at most 30 s"),
        ("blocking", lambda c: c.xread({"s": 0}, block=0), "would block forever"),
        ("api", lambda c: c.pipeline().set("k", "v").blpop("q", 1), "BLPOP refused on shop:api"),
        ("api", lambda c: c.pipeline().execute_command("SELECT", 2), "SELECT refused"),
    ],
)
def test_guards_refuse_with_a_message_that_says_where_to_go(clients, workload, call, message):
    with pytest.raises(CommandRefused, match=message):
        call(clients.get(workload))


def test_guards_let_the_right_commands_through(clients):
    clients.api.rpush("q", "job")
    assert clients.api.xread({"s": 0}) == []  # XREAD without BLOCK does not block
    assert clients.blocking.blpop("q", timeout=1) == (b"q", b"job")
    assert clients.blocking.xread({"s": 0}, block=10) == []
    assert clients.subscriber.publish("c", "m") == 0
    assert clients.subscriber.pubsub_channels() == []
    assert clients.api.pipeline().set("p", 1).get("p").execute() == [True, b"1"]


def test_blocking_socket_timeout_outlasts_the_longest_block(valkey_server):
    with Clients(tier_for(valkey_server), max_block=2) as clients:
        timeout = clients.blocking.connection_pool.connection_kwargs["socket_timeout"]
        assert timeout > 2
        assert clients.blocking.blpop("q", timeout=2) is None  # a full-length block is fine
        with pytest.raises(CommandRefused, match="at most 2 s"):
            clients.blocking.blpop("q", timeout=3)
    with pytest.raises(ValueError, match="max_block must be a positive number"):
        Clients(tier_for(valkey_server), max_block=0)


def test_api_runs_1000_round_trips_while_blocking_waits_and_subscriber_listens(
    clients, valkey_server
):
    pubsub = clients.subscriber.pubsub()
    pubsub.subscribe("events")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    events: list[tuple[str, object]] = []

    def block() -> None:
        result = clients.blocking.blpop("never-filled", timeout=2)
        events.append(("blpop returned", result))

    blocker = threading.Thread(target=block)
    blocker.start()
    wait_until(
        lambda: any(
            e["cmd"] == "blpop" and "b" in e["flags"]
            for e in by_name(valkey_server).get("shop:blocking", [])
        ),
        "the blocking client parked in BLPOP",
    )
    for i in range(1000):
        clients.api.set(f"k{i}", i)
        assert clients.api.get(f"k{i}") == str(i).encode()
    events.append(("api done", None))
    still_blocked = [e for e in by_name(valkey_server)["shop:blocking"] if "b" in e["flags"]]
    clients.subscriber.publish("events", "after-api")
    blocker.join()

    assert events == [("api done", None), ("blpop returned", None)]
    assert still_blocked, "the BLPOP must still be pending on the server when the api finished"
    assert pubsub.get_message(timeout=5)["data"] == b"after-api"
    pubsub.close()


def test_api_loop_survives_a_server_restart_without_losing_acknowledged_writes(valkey_factory):
    server = valkey_factory("durable", appendonly="yes", appendfsync="always")
    acked: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    with Clients(tier_for(server)) as clients:
        run_before = clients.api.info("server")["run_id"]

        def loop() -> None:
            i = 0
            while not stop.is_set():
                try:
                    clients.api.set(f"acked:{i}", i)
                except BaseException as exc:  # the test fails on any escape
                    failures.append(exc)
                    return
                acked.append(i)
                i += 1
                # idle like a request handler: the restart then finds the pooled connection
                # dead when it is borrowed, the path valkey-py alone does not retry
                time.sleep(0.002)

        writer = threading.Thread(target=loop)
        writer.start()
        wait_until(lambda: len(acked) >= 200, "writes before the restart")
        server.restart()
        at_restart = len(acked)
        wait_until(
            lambda: len(acked) >= at_restart + 200 or bool(failures),
            "writes after the restart",
            limit=30,
        )
        stop.set()
        writer.join()
        run_after = clients.api.info("server")["run_id"]

    assert not failures, f"the api loop raised: {failures[0]!r}"
    assert run_after != run_before, "the server really restarted under the loop"
    check = server.client()
    values = check.mget([f"acked:{i}" for i in acked])
    missing = [i for i, value in zip(acked, values, strict=True) if value != str(i).encode()]
    assert not missing, f"{len(missing)} acknowledged writes lost, first {missing[:5]}"


def test_subscriber_resubscribes_after_a_restart(valkey_factory):
    server = valkey_factory("pubsub")
    with Clients(tier_for(server)) as clients:
        pubsub = clients.subscriber.pubsub()
        pubsub.subscribe("news")
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        server.restart()
        # reading notices the dead socket; the retry reconnects and re-subscribes
        messages = []
        wait_until(
            lambda: (
                messages.append(pubsub.get_message(timeout=0.2))
                or any(m and m["type"] == "subscribe" for m in messages)
            ),
            "re-subscription",
        )
        clients.subscriber.publish("news", "back")
        assert pubsub.get_message(timeout=5)["data"] == b"back"
        pubsub.close()


def test_cluster_mode_uses_valkey_cluster_behind_the_same_interface(valkey_factory):
    node = valkey_factory("cluster", cluster_enabled="yes", cluster_port=str(free_port()))
    node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    wait_until(lambda: node.client().cluster("info")["cluster_state"] == "ok", "cluster ok")
    with Clients(tier_for(node, mode="cluster")) as clients:
        assert isinstance(clients.api, valkey.ValkeyCluster)
        clients.api.set("usr:x", "1")
        assert clients.api.get("usr:x") == b"1"
        clients.background.dbsize()
        with pytest.raises(CommandRefused, match="BLPOP refused on shop:api"):
            clients.api.blpop("q", 1)
        assert clients.blocking.blpop("q", timeout=0.01) is None
        with pytest.raises(ValueError, match="cluster mode has only db 0"):
            clients.for_db(1)
        names = by_name(node)
        assert {"shop:api", "shop:blocking", "shop:background"} <= set(names)


def test_cluster_clients_start_from_another_seed_when_their_node_is_down(valkey_factory):
    node = valkey_factory("seed", cluster_enabled="yes", cluster_port=str(free_port()))
    node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    wait_until(lambda: node.client().cluster("info")["cluster_state"] == "ok", "cluster ok")
    down = free_port()  # VALKEY_HOST:VALKEY_PORT name a node that is not there
    tier = tier_for(node, mode="cluster", port=str(down), cluster_nodes=f"127.0.0.1:{node.port}")
    with Clients(tier) as clients:
        clients.api.set("usr:seeded", "1")
        assert clients.api.get("usr:seeded") == b"1"
    with pytest.raises(valkey.exceptions.ValkeyClusterException):
        Clients(tier_for(node, mode="cluster", port=str(down))).api.get("usr:seeded")


def test_a_copied_client_without_its_guard_refuses_everything(clients):
    twin = clients.api.client()  # valkey-py's single-connection copy bypasses Clients
    with pytest.raises(CommandRefused, match="no workload guard"):
        twin.get("k")
    twin.close()
