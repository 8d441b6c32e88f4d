"""The store on a real three-node Valkey Cluster: no CROSSSLOT, and crashes between writes.

On a cluster a record and its email entry (or a session and its owner's index) live in
different slots, so the store writes them one slot at a time (client/store.py). These
tests run every store operation on a cluster whose keys spread over all three nodes,
and kill a real writer process between its writes: the writer is held in its second
step by CLIENT PAUSE WRITE on the node that owns that step's slot, then SIGKILLed.
What it leaves must be ignored and cleaned by the next lookup, never served.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import valkey

from tests.valkey_server import ValkeyProcess, free_port
from valkey_plans.client import functions
from valkey_plans.client.cache import LocalCache
from valkey_plans.client.store import (
    EMAIL_PREFIX,
    SESSIONS_CHANNEL,
    USERS_CHANNEL,
    Store,
    email_key,
)
from valkey_plans.keys import new_key
from valkey_plans.verify.store_links import ORPHAN, STRAY, UNLINKED, store_links

PORTS = 3


@pytest.fixture
def cluster(valkey_factory) -> Iterator[valkey.ValkeyCluster]:
    """Three primaries on loopback, slots split by valkey-cli, as a cluster client."""
    nodes = [
        valkey_factory(f"node{n}", cluster_enabled="yes", cluster_port=str(free_port()))
        for n in range(PORTS)
    ]
    addresses = [f"127.0.0.1:{node.port}" for node in nodes]
    subprocess.run(
        ["valkey-cli", "--cluster", "create", *addresses, "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while not all(meshed(n) for n in nodes):
        assert time.monotonic() < deadline, "cluster never reached cluster_state:ok"
        time.sleep(0.1)
    client = valkey.ValkeyCluster(host="127.0.0.1", port=nodes[0].port)
    yield client
    client.close()


def meshed(node: ValkeyProcess) -> bool:
    """cluster_state:ok, and every other node known and linked, handshake over. Valkey
    propagates a PUBLISH over the cluster bus to linked nodes only: a node still in its
    handshake just after the cluster forms misses it (its subscribers hear nothing)."""
    if node.client().cluster("info")["cluster_state"] != "ok":
        return False
    lines = node.client().execute_command("CLUSTER", "NODES").splitlines()
    fields = [line.split() for line in lines]
    return len(fields) == PORTS and all(
        b"handshake" not in f[2] and (f[7] == b"connected" or b"myself" in f[2]) for f in fields
    )


def store_node(valkey_factory, cluster: valkey.ValkeyCluster, name: str) -> Store:
    """A store node as an application process has it: its own cluster clients."""
    cache = valkey_factory(name, databases="4", maxmemory_policy="volatile-lru")
    functions.ensure_loaded(cache.client())
    local = LocalCache.from_clients(*(cache.client(db=n) for n in range(4)))
    port = cluster.get_primaries()[0].port
    own, listener = (valkey.ValkeyCluster(host="127.0.0.1", port=port) for _ in "ab")
    return Store(own, local, subscriber=listener, node=name)


def to_repair(cluster: valkey.ValkeyCluster) -> dict[str, list[str]]:
    """What the audit's store walk finds, each primary read on its own connection."""
    nodes = [valkey.Valkey(host=n.host, port=n.port) for n in cluster.get_primaries()]
    links = store_links(*nodes)
    for node in nodes:
        node.close()
    assert sum(len(keys) for keys in links.sample.values()) == links.to_repair
    return links.sample


def node_of(cluster: valkey.ValkeyCluster, key: str) -> int:
    return cluster.get_node_from_key(key).port


def apart(cluster: valkey.ValkeyCluster, email: str) -> str:
    """A user key whose slot is on another node than `email`'s entry (deterministic)."""
    while node_of(cluster, key := new_key("usr")) == node_of(cluster, email_key(email)):
        pass
    return key


def test_every_store_operation_works_across_slots(valkey_factory, cluster):
    a, b = store_node(valkey_factory, cluster, "a"), store_node(valkey_factory, cluster, "b")
    with a.running(), b.running():
        assert a.subscribed.wait(10) and b.subscribed.wait(10)
        key = a.save_user({"email": "ann@example.com", "name": "Ann"})
        assert b.get_user(key) == {"email": "ann@example.com", "name": "Ann"}
        assert b.find_user("ann@example.com") == key
        a.save_user({"email": "bea@example.com", "name": "Bea"}, key=key)
        assert a.get_user(key)["name"] == "Bea" and cluster.get(key) is not None
        # B's copy is dropped by the invalidation, heard on the node that ran the write
        # (client/invalidation.py: the cluster bus's relay of a PUBLISH is best effort).
        until(lambda: b.get_user(key)["name"] == "Bea", "B still serves Ann")
        assert cluster.get(f"{EMAIL_PREFIX}ann@example.com") is None
        assert a.find_user("ann@example.com") is None and b.find_user("bea@example.com") == key
        sessions = [a.create_session(key, {"n": n}, ttl=60) for n in range(12)]
        assert len({node_of(cluster, s.key) for s in sessions}) > 1  # really across nodes
        assert b.get_session(sessions[0].key).data == {"n": 0}
        a.revoke_session(sessions[0].key)
        assert cluster.exists(sessions[0].key) == 0
        a.revoke_sessions(key)
        assert sum(cluster.exists(s.key) for s in sessions) == 0
        a.delete_user(key)
        assert cluster.get(key) is None and cluster.get(f"{EMAIL_PREFIX}bea@example.com") is None
        assert a.find_user("bea@example.com") is None


def until(condition, what: str, limit: float = 10.0) -> None:
    """Wait for an invalidation to land; the limit bounds a hang, it is no speed check."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_store_hears_each_invalidation_on_every_node_and_applies_it_once(valkey_factory, cluster):
    a, b = store_node(valkey_factory, cluster, "a"), store_node(valkey_factory, cluster, "b")
    with a.running(), b.running():
        assert a.subscribed.wait(10) and b.subscribed.wait(10)
        for node in cluster.get_nodes():
            direct = valkey.Valkey(host=node.host, port=node.port)
            counts = dict(direct.pubsub_numsub(USERS_CHANNEL, SESSIONS_CHANNEL))
            assert counts == {USERS_CHANNEL.encode(): 2, SESSIONS_CHANNEL.encode(): 2}, node
            direct.close()
        key = a.save_user({"email": "cy@example.com", "name": "Cy"})
        assert b.get_user(key)["name"] == "Cy"
        copies, applied = [], []
        first, drop = b._seen.first, b._drop_user
        b._seen.first = lambda message_id: (first(message_id), copies.append(message_id))[0]
        b._drop_user = lambda key, emails: applied.append(key) or drop(key, emails)
        # One invalidation published on two nodes: each delivers it to its own
        # subscribers, whatever the bus relays besides.
        message = a._message(key=key, emails=[])
        for node in cluster.get_primaries()[:2]:
            cluster.get_valkey_connection(node).publish(USERS_CHANNEL, message)
        until(lambda: len(copies) >= 2, f"copies heard: {copies}")
        assert len(set(copies)) == 1 and applied == [key]
        assert b.local.users.get(key) is None


WRITER = textwrap.dedent(
    """
    import sys, valkey
    from valkey_plans.client.cache import LocalCache
    from valkey_plans.client.store import Store
    cluster = valkey.ValkeyCluster(host="127.0.0.1", port=int(sys.argv[1]))
    local = LocalCache.from_clients(*(valkey.Valkey(port=int(sys.argv[2]), db=n) for n in range(4)))
    store = Store(cluster, local, node="writer")
    print("ready", flush=True)
    action, key, email = sys.stdin.readline().split()
    if action == "save":
        store.save_user({"email": email, "name": "Killed"}, key=key)
    else:
        store.delete_user(key)
    print("done", flush=True)
    """
)


def killed_between(cluster, cache: ValkeyProcess, action: str, key: str, email: str, held: str):
    """Run `action` in a real process, hold it on `held`'s node, SIGKILL it there."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(cluster.get_primaries()[0].port), str(cache.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    node = cluster.get_node_from_key(held)
    direct = valkey.Valkey(host=node.host, port=node.port)
    direct.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
    try:
        proc.stdin.write(f"{action} {key} {email}\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while not blocked_on(direct) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert blocked_on(direct), "the writer never reached its held step"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        direct.execute_command("CLIENT", "UNPAUSE")
        direct.close()


def blocked_on(node: valkey.Valkey) -> bool:
    """A client is blocked on the paused node (flag b): the writer's held write."""
    return any("b" in c.get("flags", "") for c in node.client_list())


@pytest.fixture
def writer_cache(valkey_factory) -> ValkeyProcess:
    """The killed writer's own local cache (a cache-role server, library loaded)."""
    cache = valkey_factory("writer-cache", databases="4", maxmemory_policy="volatile-lru")
    functions.ensure_loaded(cache.client())
    return cache


def test_a_save_killed_after_its_index_write_leaves_an_entry_that_is_ignored_and_cleaned(
    valkey_factory, cluster, writer_cache
):
    reader, cache = store_node(valkey_factory, cluster, "reader"), writer_cache
    key = apart(cluster, "new@example.com")
    killed_between(cluster, cache, "save", key, "new@example.com", held=key)
    assert cluster.get(email_key("new@example.com")) == key.encode()  # the first step landed
    assert cluster.get(key) is None  # the record never did
    assert to_repair(cluster) == {ORPHAN: [email_key("new@example.com")]}  # the audit sees it
    assert reader.find_user("new@example.com") is None  # ignored ...
    assert cluster.get(email_key("new@example.com")) is None  # ... and cleaned
    assert to_repair(cluster) == {}
    assert reader.save_user({"email": "new@example.com", "name": "Again"}, key=key) == key
    assert reader.find_user("new@example.com") == key


def test_a_delete_killed_before_its_index_cleanup_leaves_an_entry_that_is_ignored_and_cleaned(
    valkey_factory, cluster, writer_cache
):
    reader, cache = store_node(valkey_factory, cluster, "reader"), writer_cache
    key = apart(cluster, "gone@example.com")
    reader.save_user({"email": "gone@example.com", "name": "Gone"}, key=key)
    killed_between(
        cluster, cache, "delete", key, "gone@example.com", held="vp:email:gone@example.com"
    )
    assert cluster.get(key) is None  # the record went first
    assert cluster.get(email_key("gone@example.com")) == key.encode()  # its entry stayed
    reader.local.index.unlink("gone@example.com")  # this node's own copy is not the point
    assert reader.find_user("gone@example.com") is None
    assert cluster.get(email_key("gone@example.com")) is None


def test_the_audit_reports_each_state_left_to_repair_until_it_is_repaired(valkey_factory, cluster):
    """Entries and records on different nodes, joined by the audit's store walk."""
    store = store_node(valkey_factory, cluster, "repairer")
    healthy = store.save_user({"email": "ok@example.com", "name": "Ok"})
    moved = store.save_user({"email": "new@example.com", "name": "Moved"})
    unlinked = store.save_user({"email": "lost@example.com", "name": "Lost"})
    gone = new_key("usr")
    cluster.set(email_key("old@example.com"), moved)  # names a record of another email
    cluster.set(email_key("gone@example.com"), gone)  # names no record
    cluster.delete(email_key("lost@example.com"))  # a record without its entry
    assert to_repair(cluster) == {
        ORPHAN: [email_key("gone@example.com")],
        STRAY: [email_key("old@example.com")],
        UNLINKED: [unlinked],
    }
    assert store.find_user("gone@example.com") is None
    assert store.find_user("old@example.com") is None
    store.save_user({"email": "lost@example.com", "name": "Lost"}, key=unlinked)
    assert to_repair(cluster) == {}
    assert store.find_user("ok@example.com") == healthy
