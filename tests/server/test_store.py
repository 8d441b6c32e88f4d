"""Read-through and invalidation across two nodes in front of one real hosted primary."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
import valkey

from valkey_plans.client import functions
from valkey_plans.client.cache import LocalCache
from valkey_plans.client.schema import SESSION_LEASES
from valkey_plans.client.store import HostedUnavailable, Store
from valkey_plans.keys import new_key

BOUND = 5.0  # generous bound for an invalidation to arrive; nothing asserts speed


def eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def primary(valkey_factory):
    return valkey_factory("primary", databases="1", maxmemory_policy="noeviction")


def node(valkey_factory, primary, name: str) -> Store:
    cache = valkey_factory(name, databases="4", maxmemory_policy="volatile-lru")
    functions.ensure_loaded(cache.client())
    local = LocalCache.from_clients(*(cache.client(db=n) for n in range(4)))
    hosted = primary.client(socket_timeout=1, socket_connect_timeout=1, retry_on_error=[])
    return Store(hosted, local, subscriber=primary.client(), node=name)


@pytest.fixture
def nodes(valkey_factory, primary):
    a, b = node(valkey_factory, primary, "a"), node(valkey_factory, primary, "b")
    a.start(), b.start()
    assert a.subscribed.wait(BOUND) and b.subscribed.wait(BOUND)
    yield a, b
    a.stop(), b.stop()


def cached(store: Store, key: str) -> bool:
    return store.local.users.client.exists(key) == 1


def test_reads_fill_from_hosted_and_writes_drop_other_copies(nodes, primary) -> None:
    a, b = nodes
    key = a.save_user({"email": "Ann@Example.com", "name": "Ann"})
    assert primary.client().get(key) is not None
    assert cached(a, key) and not cached(b, key)

    assert b.find_user("ann@example.com") == key  # hosted index, now also local
    assert b.get_user(key) == {"email": "Ann@Example.com", "name": "Ann"}
    assert cached(b, key)

    a.save_user({"email": "ann@new.example", "name": "Ann B."}, key=key)
    assert eventually(lambda: not cached(b, key))
    assert eventually(lambda: b.local.index.lookup("ann@example.com") is None)
    assert b.get_user(key) == {"email": "ann@new.example", "name": "Ann B."}
    assert b.find_user("ann@example.com") is None
    assert b.find_user("ANN@new.example") == key

    a.delete_user(key)
    assert eventually(lambda: not cached(b, key))
    assert b.get_user(key) is None


def test_session_revocation_reaches_every_node(nodes) -> None:
    a, b = nodes
    owner = a.save_user({"name": "Bo"})
    first = a.create_session(owner, {"ip": "10.0.0.1"}, ttl=60)
    second = a.create_session(owner, {"ip": "10.0.0.2"}, ttl=60)
    assert b.get_session(first.key) == first  # read through, now local on b
    assert b.get_session(second.key) == second
    b.revoke_session(first.key)
    assert eventually(lambda: a.local.sessions.get(first.key) is None)
    a.revoke_sessions(owner)
    assert eventually(lambda: b.local.sessions.get(second.key) is None)
    assert a.get_session(second.key) is None and b.get_session(second.key) is None


def test_hosted_down_serves_local_and_fails_writes_loudly(nodes, primary) -> None:
    a, _ = nodes
    key = a.save_user({"name": "Cy"})
    session = a.create_session(key, {}, ttl=60)
    other = a.save_user({"name": "Di"})
    a.local.users.delete(other)
    primary.stop()

    assert a.get_user(key) == {"name": "Cy"}
    assert a.get_session(session.key) == session
    with pytest.raises(
        HostedUnavailable,
        match=rf"hosted tier 127.0.0.1:{primary.port} "
        rf"unreachable, saving {key} not done",
    ):
        a.save_user({"name": "Cy 2"}, key=key)
    assert a.get_user(key) == {"name": "Cy"}  # the failed write changed nothing locally
    with pytest.raises(HostedUnavailable, match=f"reading {other} not done"):
        a.get_user(other)
    with pytest.raises(HostedUnavailable, match="revoking"):
        a.revoke_session(session.key)
    assert a.get_session(session.key) == session


def test_start_needs_a_subscriber(valkey_factory, primary) -> None:
    store = node(valkey_factory, primary, "c")
    store.subscriber = None
    with pytest.raises(ValueError, match="needs a subscriber"):
        store.start()
    assert isinstance(store.hosted, valkey.Valkey)


def seeded(primary, record: dict) -> str:
    """A user written to hosted directly: no invalidation in flight to race the test."""
    key = new_key("usr")
    primary.client().set(key, json.dumps(record))
    return key


def paused_fill(store: Store, part: str = "users") -> tuple[threading.Event, threading.Event]:
    """Make the next fill of `store`'s local `part` (users or sessions) wait between its
    hosted read and the fill itself: returns (read_done, go). The real fill runs once
    `go` is set."""
    read_done, go = threading.Event(), threading.Event()
    cache = getattr(store.local, part)
    real_fill = cache.fill

    def fill(*args: object) -> bool:
        read_done.set()
        assert go.wait(BOUND)
        return real_fill(*args)

    cache.fill = fill
    return read_done, go


def read_in_thread(read: Callable[[str], object], key: str) -> tuple[threading.Thread, dict]:
    """`read(key)` in a thread of its own; its result lands in the dict's `value`."""
    got: dict = {}
    thread = threading.Thread(target=lambda: got.update(value=read(key)))
    thread.start()
    return thread, got


def test_a_fill_never_stores_a_value_older_than_an_applied_remote_write(nodes, primary) -> None:
    """b reads v1 from hosted; a commits v2 and b applies its invalidation; then b's
    fill of v1 runs: it is refused, so b never serves v1 again."""
    a, b = nodes
    key = seeded(primary, {"name": "v1"})
    read_done, go = paused_fill(b)
    thread, got = read_in_thread(b.get_user, key)
    assert read_done.wait(BOUND)  # b has read v1 from hosted and waits before its fill
    a.save_user({"name": "v2"}, key=key)
    leases = b.local.users.client
    assert eventually(lambda: leases.hget(b.local.users.calls.leases, key) is None)
    go.set()
    thread.join(BOUND)
    assert got["value"] == {"name": "v1"}  # served: it was the value when read
    assert not cached(b, key)  # but not cached
    assert b.get_user(key) == {"name": "v2"} and cached(b, key)


def test_a_fill_never_overwrites_this_nodes_own_newer_write(nodes, primary) -> None:
    """A reader and a writer on the same node: the writer's local put ends the lease."""
    a, b = nodes
    key = seeded(primary, {"name": "v1"})
    read_done, go = paused_fill(b)
    thread, _ = read_in_thread(b.get_user, key)
    assert read_done.wait(BOUND)
    b.save_user({"name": "v2"}, key=key)  # hosted, then b's local copy
    go.set()
    thread.join(BOUND)
    assert b.local.users.get(key) == {"name": "v2"}


def test_a_fill_without_a_race_is_cached(nodes, primary) -> None:
    a, b = nodes
    key = seeded(primary, {"name": "v1"})
    read_done, go = paused_fill(b)
    go.set()
    assert b.get_user(key) == {"name": "v1"} and read_done.is_set()
    assert cached(b, key)
    assert b.local.users.client.hlen(b.local.users.calls.leases) == 0


@pytest.mark.parametrize("revoke", ["one", "all"])
def test_a_session_fill_never_caches_a_session_revoked_meanwhile(nodes, revoke) -> None:
    """b reads a live session from hosted; a revokes it (or all of its owner's) and b
    applies the invalidation; then b's fill runs: refused, so b never serves it again."""
    a, b = nodes
    owner = new_key("usr")
    session = a.create_session(owner, {"ip": "10.0.0.1"}, ttl=60)
    read_done, go = paused_fill(b, "sessions")
    thread, got = read_in_thread(b.get_session, session.key)
    assert read_done.wait(BOUND)  # b holds the live session read from hosted
    if revoke == "one":
        a.revoke_session(session.key)
    else:
        a.revoke_sessions(owner)
    leases = b.local.sessions.client
    assert eventually(lambda: leases.hget(SESSION_LEASES, session.key) is None)
    go.set()
    thread.join(BOUND)
    assert got["value"] == session  # served: it was live when read
    assert b.local.sessions.get(session.key) is None  # but not cached
    assert b.get_session(session.key) is None


def test_a_session_fill_without_a_race_is_cached(nodes) -> None:
    a, b = nodes
    session = a.create_session(new_key("usr"), {"ip": "10.0.0.1"}, ttl=60)
    read_done, go = paused_fill(b, "sessions")
    go.set()
    assert b.get_session(session.key) == session and read_done.is_set()
    assert b.local.sessions.get(session.key) == session
    assert b.local.sessions.client.hlen(SESSION_LEASES) == 0


def test_session_leases_stay_bounded_when_reads_miss_everywhere(nodes) -> None:
    """Reads of sessions hosted never had leave their leases; the hash stays bounded."""
    _, b = nodes
    for _ in range(1100):
        assert b.get_session(new_key("ses")) is None
    assert 0 < b.local.sessions.client.hlen(SESSION_LEASES) <= 1000
