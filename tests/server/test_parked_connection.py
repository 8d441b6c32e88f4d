"""A sync runner keeps one pooled connection checked out between hits (commands._Lane):
the checkout it saves is a tenth of a hit. These tests hold it to what the pool gave:
replies in step, a fork never sharing its parent's socket, a failure never parking a
connection with unread data, and pools that bound or re-route connections left alone."""

from __future__ import annotations

import gc
import multiprocessing
import signal
import threading
from typing import Any

import pytest
import valkey
from valkey.sentinel import SentinelConnectionPool

from tests.valkey_server import ValkeyProcess
from valkey_plans.client import functions
from valkey_plans.client.cache import UserCache, UserIndex
from valkey_plans.client.commands import _parks
from valkey_plans.keys import new_key


def counted_checkouts(client: valkey.Valkey) -> list[str]:
    """The names of the pool checkouts `client` makes from now on (a spy on the real pool)."""
    seen: list[str] = []
    pool, get = client.connection_pool, client.connection_pool.get_connection

    def counting(name: str, *keys: Any, **options: Any) -> Any:
        seen.append(name)
        return get(name, *keys, **options)

    pool.get_connection = counting  # type: ignore[method-assign]
    return seen


def parked_client_id(cache: UserCache | UserIndex) -> int:
    """The server's id of the connection the cache's runner holds parked."""
    (conn,) = cache.runner._lane.spare  # type: ignore[attr-defined]
    conn.send_command("CLIENT", "ID")
    return int(conn.read_response())


def test_hits_and_lookups_check_out_one_connection_for_all_of_them(cache_instance: ValkeyProcess):
    client = cache_instance.client(db=1)
    cache, index = UserCache(client, cap=10, ttl=60), UserIndex(cache_instance.client(db=0))
    key = new_key("usr")
    cache.put(key, {"n": 1})
    index.link("a@example.com", key)
    checkouts, index_checkouts = counted_checkouts(client), counted_checkouts(index.client)
    for _ in range(200):
        assert cache.get(key) == {"n": 1}
        assert index.lookup("A@example.com") == key
    assert (len(checkouts), len(index_checkouts)) == (1, 1)


def test_a_forked_child_never_uses_its_parents_parked_connection(cache_instance: ValkeyProcess):
    cache = UserCache(cache_instance.client(db=1), cap=10, ttl=60)
    key = new_key("usr")
    cache.put(key, {"n": 2})
    assert cache.get(key) == {"n": 2}
    parent_id = parked_client_id(cache)
    replies: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()

    def child() -> None:
        replies.put((cache.get(key), parked_client_id(cache)))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    got, child_id = replies.get(timeout=20)
    process.join(20)
    assert got == {"n": 2} and child_id != parent_id
    assert cache.get(key) == {"n": 2} and parked_client_id(cache) == parent_id


def test_a_hit_after_close_or_a_restart_reconnects(tmp_path):
    server = ValkeyProcess(tmp_path, databases="4", maxmemory_policy="volatile-lru").start()
    try:
        functions.ensure_loaded(server.client())
        client = server.client(db=1, retry_on_error=[valkey.ConnectionError])
        cache = UserCache(client, cap=10, ttl=60)
        key = new_key("usr")
        cache.put(key, {"n": 3})
        assert cache.get(key) == {"n": 3}
        client.close()
        assert cache.get(key) == {"n": 3}
        server.restart()
        assert cache.get(key) is None  # a miss from the new server (it keeps no data)
    finally:
        server.stop()


class Interrupted(Exception):
    """Raised by a timer signal inside a hit's read, as a Ctrl-C would be."""


def test_an_interrupted_hit_parks_nothing_and_later_replies_stay_in_step(
    cache_instance: ValkeyProcess,
):
    client = cache_instance.client(db=1)
    cache = UserCache(client, cap=10, ttl=60)
    key, admin = new_key("usr"), cache_instance.client()
    cache.put(key, {"n": 4})
    assert cache.get(key) == {"n": 4}

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        admin.client_pause(400, all=True)  # the hit's reply waits; the timer fires first
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            cache.get(key)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert cache.runner._lane.spare == []  # type: ignore[attr-defined]
    for n in range(20):  # the late reply of the interrupted GET must never be read
        assert cache.get(key) == {"n": 4}
        assert client.echo(f"after {n}") == f"after {n}".encode()


def test_threads_sharing_one_cache_each_get_their_own_records(cache_instance: ValkeyProcess):
    cache = UserCache(cache_instance.client(db=1), cap=100, ttl=60)
    keys = [new_key("usr") for _ in range(8)]
    for n, key in enumerate(keys):
        cache.put(key, {"n": n})
    wrong: list[tuple[int, object]] = []

    def reader(n: int) -> None:
        for _ in range(300):
            got = cache.get(keys[n])
            if got != {"n": n}:
                wrong.append((n, got))

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == [] and len(cache.runner._lane.spare) <= 1  # type: ignore[attr-defined]


def test_pools_that_bound_or_reroute_connections_are_never_parked(cache_instance: ValkeyProcess):
    blocking = valkey.Valkey(
        connection_pool=valkey.BlockingConnectionPool(port=cache_instance.port)
    )
    sentinel_pool = SentinelConnectionPool("mymaster", sentinel_manager=None)
    assert _parks(cache_instance.client())
    assert not _parks(blocking)
    assert not _parks(valkey.Valkey(connection_pool=sentinel_pool))
    assert not _parks(cache_instance.client(single_connection_client=True))


def test_a_dropped_cache_hands_its_parked_connection_back_to_the_pool(
    cache_instance: ValkeyProcess,
):
    """A parked connection counts as one of the pool's; a cache that goes away gives it
    back (a pool of one shows it: nothing else can check one out meanwhile)."""
    client = valkey.Valkey(
        connection_pool=valkey.ConnectionPool(port=cache_instance.port, db=1, max_connections=1)
    )
    cache = UserCache(client, cap=10, ttl=60)
    key = new_key("usr")
    cache.put(key, {"n": 5})
    assert cache.get(key) == {"n": 5}
    with pytest.raises(valkey.ConnectionError, match="Too many connections"):
        client.echo("parked")
    del cache
    gc.collect()
    assert client.echo("back") == b"back"
