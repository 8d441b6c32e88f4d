"""The user cache is an exact LRU bounded at its cap, on a real cache instance."""

from __future__ import annotations

import json
import multiprocessing
import random
from collections import OrderedDict

import valkey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.valkey_server import ValkeyProcess
from valkey_plans.client import functions
from valkey_plans.client.cache import USER_LRU, UserCache, UserIndex
from valkey_plans.client.schema import USER_TOUCHES
from valkey_plans.keys import new_key

CAP = 4
USER_KEYS = [new_key("usr") for _ in range(8)]
STRUCTURAL = ("vp:lru:users", "vp:lru:users:clock", USER_TOUCHES, "vp:lru:users:leases")


def records(client: valkey.Valkey) -> dict[str, dict]:
    """What db 1 holds, read around the cache (no LRU touch); keys evicted meanwhile drop out."""
    keys = sorted(k.decode() for k in client.scan_iter(match="usr:*"))
    values = dict(zip(keys, client.mget(keys), strict=True)) if keys else {}
    return {k: json.loads(v) for k, v in values.items() if v is not None}


def lru_order(client: valkey.Valkey) -> list[str]:
    """The LRU order the next trim acts on: the set's order with the touch log applied
    (each logged read moves its key, if still a member with a record, to the end)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.zrange(USER_LRU, 0, -1)
        pipe.lrange(USER_TOUCHES, 0, -1)
        members, touched = pipe.execute()
    order = [k.decode() for k in members]
    for key in (k.decode() for k in touched):
        if key in order:
            order.remove(key)
            order.append(key)
    return [k for k in order if client.exists(k)]


def test_lru_matches_ordered_dict_reference(cache_instance: ValkeyProcess) -> None:
    client = cache_instance.client(db=1)

    class ExactLru(RuleBasedStateMachine):
        @initialize()
        def empty(self) -> None:
            client.flushdb()
            self.cache = UserCache(client, cap=CAP, ttl=3600)
            self.reference: OrderedDict[str, dict] = OrderedDict()

        @rule(key=st.sampled_from(USER_KEYS), n=st.integers(0, 1000))
        def put(self, key: str, n: int) -> None:
            self.cache.put(key, {"n": n})
            self.reference[key] = {"n": n}
            self.reference.move_to_end(key)
            while len(self.reference) > CAP:
                self.reference.popitem(last=False)

        @rule(key=st.sampled_from(USER_KEYS))
        def get(self, key: str) -> None:
            expected = self.reference.get(key)
            if expected is not None:
                self.reference.move_to_end(key)
            assert self.cache.get(key) == expected

        @rule(keys=st.lists(st.sampled_from(USER_KEYS), max_size=5))
        def get_many(self, keys: list[str]) -> None:
            expected = {}
            for key in keys:
                if key in self.reference:
                    self.reference.move_to_end(key)
                    expected[key] = self.reference[key]
            assert self.cache.get_many(keys) == expected

        @rule(key=st.sampled_from(USER_KEYS))
        def delete(self, key: str) -> None:
            assert self.cache.delete(key) == (self.reference.pop(key, None) is not None)

        @invariant()
        def db_equals_reference(self) -> None:
            assert records(client) == dict(self.reference)
            assert lru_order(client) == list(self.reference)

    ExactLru.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    ExactLru.TestCase().runTest()


def _churn(port: int, seed: int, cap: int, rounds: int) -> None:
    rng = random.Random(seed)
    cache = UserCache(valkey.Valkey(port=port, db=1), cap=cap, ttl=3600)
    pool = [new_key("usr") for _ in range(cap * 3)]
    for _ in range(rounds):
        key = rng.choice(pool)
        if rng.random() < 0.6:
            cache.put(key, {"seed": seed, "pad": "x" * rng.randint(0, 200)})
        else:
            cache.get(key)


def test_two_processes_never_push_the_db_above_its_cap(cache_instance: ValkeyProcess) -> None:
    cap = 20
    client = cache_instance.client(db=1)
    client.flushdb()
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=_churn, args=(cache_instance.port, seed, cap, 1500)) for seed in (1, 2)
    ]
    for worker in workers:
        worker.start()
    highest = 0
    while any(worker.is_alive() for worker in workers):
        # one atomic read: all keys less the structural ones that exist
        with client.pipeline(transaction=True) as pipe:
            pipe.dbsize()
            pipe.exists(*STRUCTURAL)
            size, structural = pipe.execute()
        highest = max(highest, size - structural)
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    assert highest <= cap
    assert len(records(client)) == cap  # ~1800 puts over 120 distinct keys fill it exactly
    assert client.zcard(USER_LRU) == cap


def test_index_survives_memory_squeeze_while_cached_users_are_evicted(valkey_factory) -> None:
    server = valkey_factory(
        "squeeze", databases="4", maxmemory="4mb", maxmemory_policy="volatile-lru"
    )
    functions.ensure_loaded(server.client())
    index = UserIndex(server.client(db=0))
    linked = {f"user{i}@example.com": new_key("usr") for i in range(2000)}
    for email, key in linked.items():
        index.link(email, key)
    users = UserCache(server.client(db=1), cap=100_000, ttl=3600)
    put = [new_key("usr") for _ in range(600)]
    for key in put:  # 600 x 20 kB = 12 MB through a 4 MB instance
        users.put(key, {"pad": "u" * 20_000})
    assert server.client().info("stats")["evicted_keys"] > 0
    still_cached = len(records(server.client(db=1)))
    assert 0 < still_cached < len(put)
    assert all(index.lookup(email) == key for email, key in linked.items())
    # evicted records read as misses and leave the LRU set as they are found missing
    # (which ones went is Valkey's sampled choice, so pick one that did)
    db1 = server.client(db=1)
    gone = next(key for key in put if not db1.exists(key))
    assert db1.zscore(USER_LRU, gone) is not None
    assert users.get(gone) is None
    users.drain()  # applying the read's touch finds the record gone
    assert db1.zscore(USER_LRU, gone) is None


def test_concurrent_clients_evict_in_the_servers_order_of_reads(
    cache_instance: ValkeyProcess,
) -> None:
    """Two clients on their own connections: a key read by either client after another
    key's last read or write is evicted after it, whichever client read it, and reads
    that no put has applied yet still count (the trim applies the touch log first)."""
    db = cache_instance.client(db=1)
    db.flushdb()
    one = UserCache(cache_instance.client(db=1), cap=4, ttl=3600)
    two = UserCache(cache_instance.client(db=1), cap=4, ttl=3600)
    k = [new_key("usr") for _ in range(8)]

    def live() -> set[str]:
        return {key for key in k if db.exists(key)}

    for key in k[:4]:
        one.put(key, {"k": key})
    assert two.get(k[0]) is not None  # LRU first: 1 2 3 0
    assert one.get(k[1]) is not None  # 2 3 0 1
    two.put(k[4], {})  # evicts 2: 3 0 1 4
    assert live() == {k[0], k[1], k[3], k[4]}
    assert two.get_many([k[3], k[0]]) == {k[3]: {"k": k[3]}, k[0]: {"k": k[0]}}  # 1 4 3 0
    for new, gone in ((k[5], k[1]), (k[6], k[4]), (k[7], k[3])):
        one.put(new, {})
        assert gone not in live()
    assert lru_order(db) == [k[0], k[5], k[6], k[7]] and live() == {k[0], k[5], k[6], k[7]}


def test_hits_on_one_connection_stay_in_step_with_its_other_replies(
    cache_instance: ValkeyProcess,
) -> None:
    """A hit sends its touch with CLIENT REPLY SKIP and reads one reply: on a pool of one
    connection, every later reply must still be the one its own command asked for, and
    each hit must still be logged for the LRU."""
    client = valkey.Valkey(
        connection_pool=valkey.BlockingConnectionPool(
            port=cache_instance.port, db=1, max_connections=1
        )
    )
    client.delete(USER_TOUCHES)
    cache = UserCache(client, cap=CAP, ttl=3600)
    key, absent = USER_KEYS[0], new_key("usr")
    cache.put(key, {"n": 1})
    client.delete(USER_TOUCHES)  # the drains of other tests: count this test's touches
    for n in range(50):
        assert cache.get(key) == {"n": 1}
        assert cache.get(absent) is None
        assert client.echo(f"reply {n}") == f"reply {n}".encode()
    # 100 reads, fewer than DRAIN_EVERY: the log holds each of them, in order
    assert client.lrange(USER_TOUCHES, 0, -1) == [key.encode(), absent.encode()] * 50
