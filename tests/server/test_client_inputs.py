"""Bad input changes nothing on a real server: refused by the library, or never sent.

Two walls, each proven on its own:
- the Functions library, called by FCALL directly (as another client or a bug would,
  bypassing Python), checks every key and argument before its first write: a refused
  call leaves the keyspace exactly as it was (no key created, none changed, none left
  without its TTL);
- the Python API (sync, asyncio, and the read-through store) refuses bad input before
  it sends anything: the dbs stay empty and the server saw no data command at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import valkey
import valkey.asyncio

from tests.valkey_server import ValkeyProcess
from valkey_plans.client.cache import (
    QUEUE_PENDING,
    QUEUE_PROCESSING,
    QUEUE_TAKEN,
    USER_CLOCK,
    USER_LRU,
    CacheError,
    LocalCache,
    MessageQueue,
    SessionCache,
    UserCache,
    sessions_of,
)
from valkey_plans.client.cache_async import AsyncLocalCache
from valkey_plans.client.schema import SESSION_LEASES, USER_LEASES, USER_TOUCHES
from valkey_plans.client.store import Store
from valkey_plans.keys import new_key
from valkey_plans.verify import audit_rules

DBS = range(4)
NAN, INF = float("nan"), float("inf")
#: What a fresh valkey-py connection sends before any command of ours, and the test's own.
SETUP_COMMANDS = {
    "cmdstat_client|setinfo",
    "cmdstat_select",
    "cmdstat_hello",
    "cmdstat_config|resetstat",
    "cmdstat_info",
}

U, U2 = new_key("usr"), new_key("usr")
S = new_key("ses")
OWNER = new_key("usr")
OWNED = sessions_of(OWNER)
M = new_key("msg")
ENVELOPE = f'{{"key":"{M}","body":{{"n":1}}}}'
TEN_YEARS_MS = "315360000000"


@pytest.fixture(scope="module")
def hosted_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyProcess]:
    server = ValkeyProcess(
        tmp_path_factory.mktemp("hosted"), databases="1", maxmemory_policy="noeviction"
    ).start()
    yield server
    server.stop()


@pytest.fixture
def server(cache_instance: ValkeyProcess) -> ValkeyProcess:
    """The cache instance, empty, with its command statistics reset."""
    cache_instance.client().flushall()
    cache_instance.client().config_resetstat()
    return cache_instance


def keyspace(server: ValkeyProcess) -> dict[tuple[int, bytes], tuple[bytes, bytes, bool]]:
    """Every key of every db: its type, its serialised value, and whether it has a TTL."""
    found = {}
    for db in DBS:
        client = server.client(db=db)
        for key in client.scan_iter(count=1000):
            found[(db, key)] = (client.type(key), client.dump(key), client.pttl(key) > 0)
    return found


def data_commands(server: ValkeyProcess) -> set[str]:
    """The commands the server ran since the reset, beyond connection setup."""
    return set(server.client().info("commandstats")) - SETUP_COMMANDS


# --- the library refuses bad FCALLs, changing nothing ---------------------------------


def string_at(key: str) -> Callable[[valkey.Valkey], None]:
    return lambda client: client.set(key, "not mine")


def live_session(client: valkey.Valkey) -> None:
    client.execute_command("FCALL", "vp_session_create", 2, S, OWNED, OWNER, '{"a":1}', 60_000)


def in_processing(client: valkey.Valkey) -> None:
    client.lpush(QUEUE_PROCESSING, ENVELOPE)
    client.set(M, '{"n":1}', px=60_000)


def in_processing_with(key: str) -> Callable[[valkey.Valkey], None]:
    return lambda client: (in_processing(client), client.set(key, "not mine"))


def cached_beside_a_string_lru(client: valkey.Valkey) -> None:
    """A hit would INCR the clock, then fail at ZADD: the clock must not move."""
    client.set(U, "{}", px=60_000)
    client.set(USER_LRU, "not mine")


def logged_beside(setup: Callable[[valkey.Valkey], None]) -> Callable[[valkey.Valkey], None]:
    """A pending touch too, so the drain (the function's first write) has work to do."""
    return lambda client: (client.rpush(USER_TOUCHES, U), setup(client))


LRU3 = ("vp_lru_put", 3, USER_LRU, USER_CLOCK, U)
FILL = ("vp_lru_fill", 3, USER_LRU, USER_CLOCK, U)
CREATE = ("vp_session_create", 2, S, OWNED, OWNER)
LEASE = ("vp_session_lease", 2, SESSION_LEASES, S)
SFILL = ("vp_session_fill", 3, S, OWNED, SESSION_LEASES, OWNER)
ENQUEUE = ("vp_queue_enqueue", 4, USER_LRU, USER_CLOCK, M, QUEUE_PENDING)
ACK = ("vp_queue_ack", 4, QUEUE_PROCESSING, QUEUE_TAKEN, USER_LRU, M)
RECOVER = ("vp_queue_recover", 3, QUEUE_PROCESSING, QUEUE_TAKEN, QUEUE_PENDING)
TTL_RANGE = f"allowed: an integer number of ms from 1 to {TEN_YEARS_MS} (10 years)"
WAIT_RANGE = f"allowed: an integer number of ms from 0 to {TEN_YEARS_MS} (10 years)"

# (id, what the db holds first, the FCALL, what the error must say)
BAD_FCALLS: list[tuple[str, Callable[[valkey.Valkey], None] | None, tuple[Any, ...], str]] = [
    ("put-ttl-0", None, (*LRU3, "{}", "0", "10"), "vp_lru_put: ttl_ms = '0': " + TTL_RANGE),
    ("put-ttl-negative", None, (*LRU3, "{}", "-1", "10"), "ttl_ms = '-1': " + TTL_RANGE),
    ("put-ttl-word", None, (*LRU3, "{}", "abc", "10"), "ttl_ms = 'abc'"),
    ("put-ttl-exponent", None, (*LRU3, "{}", "1e3", "10"), "ttl_ms = '1e3'"),
    ("put-ttl-hex", None, (*LRU3, "{}", "0x10", "10"), "ttl_ms = '0x10'"),
    ("put-ttl-space", None, (*LRU3, "{}", " 5", "10"), "ttl_ms = ' 5'"),
    ("put-ttl-1e16-s", None, (*LRU3, "{}", "1" + "0" * 19, "10"), "ttl_ms = '1" + "0" * 19),
    ("put-ttl-over-max", None, (*LRU3, "{}", "315360000001", "10"), "ttl_ms = '315360000001'"),
    ("put-cap-0", None, (*LRU3, "{}", "1000", "0"), "cap = '0': allowed: an integer from 1"),
    ("put-cap-fraction", None, (*LRU3, "{}", "1000", "1.5"), "cap = '1.5'"),
    ("put-cap-inf", None, (*LRU3, "{}", "1000", "inf"), "cap = 'inf'"),
    (
        "put-value-not-object",
        None,
        (*LRU3, "nope", "1000", "10"),
        "value = 'nope': allowed: a JSON object",
    ),
    (
        "put-2-keys",
        None,
        ("vp_lru_put", 2, USER_LRU, U, "{}", "1000", "10"),
        "number of keys = '2': allowed: 3",
    ),
    ("put-4-args", None, (*LRU3, "{}", "1000", "10", "x"), "number of arguments = '4': allowed: 3"),
    (
        "put-empty-key",
        None,
        ("vp_lru_put", 3, USER_LRU, USER_CLOCK, "", "{}", "1", "1"),
        "key 3 = '': allowed: a non-empty key name",
    ),
    (
        "put-record-is-the-lru-set",
        None,
        ("vp_lru_put", 3, USER_LRU, USER_CLOCK, USER_LRU, "{}", "1000", "10"),
        "key 3 = 'vp:lru:users': allowed: a key other than key 1",
    ),
    (
        "put-lru-set-is-a-string",
        string_at(USER_LRU),
        (*LRU3, "{}", "1000", "10"),
        "type of vp:lru:users = 'string': allowed: a zset or no key",
    ),
    (
        "put-clock-not-a-counter",
        string_at(USER_CLOCK),
        (*LRU3, "{}", "1000", "10"),
        "value is not an integer",
    ),
    (
        "enqueue-clock-not-a-counter",
        string_at(USER_CLOCK),
        (*ENQUEUE, ENVELOPE, '{"n":1}', "1000", "5"),
        "value is not an integer",
    ),
    (
        "get-lru-set-is-a-string",
        cached_beside_a_string_lru,
        ("vp_lru_get", 3, USER_LRU, USER_CLOCK, U),
        "type of vp:lru:users = 'string'",
    ),
    (
        "get-extra-arg",
        None,
        ("vp_lru_get", 3, USER_LRU, USER_CLOCK, U, "x"),
        "vp_lru_get: number of arguments = '1': allowed: 0",
    ),
    (
        "mget-record-is-the-clock",
        None,
        ("vp_lru_mget", 4, USER_LRU, USER_CLOCK, U, USER_CLOCK),
        "key 4 = 'vp:lru:users:clock': allowed: a key other than key 2",
    ),
    (
        "mget-one-key",
        None,
        ("vp_lru_mget", 1, USER_LRU),
        "number of keys = '1': allowed: at least 2",
    ),
    (
        "del-lru-set-is-a-string",
        string_at(USER_LRU),
        ("vp_lru_del", 2, USER_LRU, U),
        "vp_lru_del: type of vp:lru:users",
    ),
    (
        "create-ttl-1e16-s",
        None,
        (*CREATE, "{}", "1" + "0" * 19),
        "vp_session_create: ttl_ms = '1" + "0" * 19,
    ),
    ("create-ttl-0", None, (*CREATE, "{}", "0"), "ttl_ms = '0': " + TTL_RANGE),
    ("create-ttl-nan", None, (*CREATE, "{}", "nan"), "ttl_ms = 'nan'"),
    ("create-data-not-object", None, (*CREATE, "x", "1000"), "data = 'x': allowed: a JSON object"),
    (
        "create-no-owner",
        None,
        ("vp_session_create", 2, S, OWNED, "", "{}", "1000"),
        "owner = '': allowed: a non-empty record key",
    ),
    (
        "create-1-key",
        None,
        ("vp_session_create", 1, S, OWNER, "{}", "1000"),
        "number of keys = '1': allowed: 2",
    ),
    (
        "create-session-is-its-set",
        None,
        ("vp_session_create", 2, S, S, OWNER, "{}", "1000"),
        "key 2 = '" + S,
    ),
    (
        "create-set-is-a-string",
        string_at(OWNED),
        (*CREATE, "{}", "1000"),
        f"type of {OWNED} = 'string': allowed: a set or no key",
    ),
    (
        "get-slide-word",
        live_session,
        ("vp_session_get", 1, S, "abc"),
        "vp_session_get: slide_ms = 'abc': " + WAIT_RANGE,
    ),
    ("get-slide-negative", live_session, ("vp_session_get", 1, S, "-5"), "slide_ms = '-5'"),
    (
        "get-slide-1e16-s",
        live_session,
        ("vp_session_get", 1, S, "1" + "0" * 19),
        "slide_ms = '1" + "0" * 19,
    ),
    (
        "get-slide-missing",
        live_session,
        ("vp_session_get", 1, S),
        "number of arguments = '0': allowed: 1",
    ),
    (
        "revoke-all-set-is-a-string",
        string_at(OWNED),
        ("vp_session_revoke_all", 2, OWNED, SESSION_LEASES),
        "type of " + OWNED,
    ),
    (
        "enqueue-envelope-of-another-key",
        None,
        (*ENQUEUE, ENVELOPE.replace(M, U), '{"n":1}', "1000", "5"),
        'envelope = \'{"key":"usr:',
    ),
    (
        "enqueue-envelope-of-another-body",
        None,
        (*ENQUEUE, ENVELOPE, '{"n":2}', "1000", "5"),
        'allowed: {"key":"<key 3>","body":<body>}',
    ),
    (
        "enqueue-body-not-object",
        None,
        (*ENQUEUE, ENVELOPE, "[1]", "1000", "5"),
        "body = '[1]': allowed: a JSON object",
    ),
    ("enqueue-ttl-bad", None, (*ENQUEUE, ENVELOPE, '{"n":1}', "1.5", "5"), "ttl_ms = '1.5'"),
    ("enqueue-cap-bad", None, (*ENQUEUE, ENVELOPE, '{"n":1}', "1000", "-1"), "cap = '-1'"),
    (
        "enqueue-pending-is-a-string",
        string_at(QUEUE_PENDING),
        (*ENQUEUE, ENVELOPE, '{"n":1}', "1000", "5"),
        "type of vp:queue:messages = 'string': allowed: a list",
    ),
    (
        "ack-envelope-of-another-key",
        in_processing,
        (*ACK, ENVELOPE.replace(M, U)),
        "vp_queue_ack: envelope = ",
    ),
    (
        "ack-taken-is-a-string",
        in_processing_with(QUEUE_TAKEN),
        (*ACK, ENVELOPE),
        "type of vp:queue:messages:taken = 'string': allowed: a hash",
    ),
    ("fill-no-token", None, (*FILL, "{}", "1000", "10", ""), "vp_lru_fill: token = '': allowed"),
    ("fill-ttl-0", None, (*FILL, "{}", "0", "10", "t"), "vp_lru_fill: ttl_ms = '0': " + TTL_RANGE),
    ("fill-cap-word", None, (*FILL, "{}", "1000", "x", "t"), "vp_lru_fill: cap = 'x'"),
    ("fill-value-not-object", None, (*FILL, "[]", "1000", "10", "t"), "value = '[]'"),
    ("fill-3-args", None, (*FILL, "{}", "1000", "10"), "number of arguments = '3': allowed: 4"),
    (
        "fill-leases-is-a-string",
        logged_beside(string_at(USER_LEASES)),
        (*FILL, "{}", "1000", "10", "t"),
        "type of vp:lru:users:leases = 'string': allowed: a hash",
    ),
    ("lease-no-token", None, (*LEASE, ""), "vp_session_lease: token = '': allowed"),
    (
        "lease-hash-is-a-string",
        string_at(SESSION_LEASES),
        (*LEASE, "t"),
        "type of vp:leases:sessions = 'string': allowed: a hash",
    ),
    ("ses-fill-no-token", None, (*SFILL, "{}", "1000", ""), "vp_session_fill: token = ''"),
    ("ses-fill-ttl-0", None, (*SFILL, "{}", "0", "t"), "vp_session_fill: ttl_ms = '0'"),
    ("ses-fill-data-not-object", None, (*SFILL, "[]", "1000", "t"), "data = '[]'"),
    (
        "ses-fill-leases-is-a-string",
        string_at(SESSION_LEASES),
        (*SFILL, "{}", "1000", "t"),
        "type of vp:leases:sessions = 'string': allowed: a hash",
    ),
    (
        "revoke-leases-is-a-string",
        lambda c: (live_session(c), string_at(SESSION_LEASES)(c)),
        ("vp_session_revoke", 2, S, SESSION_LEASES),
        "type of vp:leases:sessions = 'string': allowed: a hash",
    ),
    (
        "put-touch-log-is-a-string",
        string_at(USER_TOUCHES),
        (*LRU3, "{}", "1000", "10"),
        "type of vp:lru:users:touches = 'string': allowed: a list",
    ),
    (
        "put-clock-not-a-counter-with-touches",
        logged_beside(string_at(USER_CLOCK)),
        (*LRU3, "{}", "1000", "10"),
        "value is not an integer",
    ),
    (
        "drain-clock-not-a-counter",
        logged_beside(string_at(USER_CLOCK)),
        ("vp_lru_drain", 2, USER_LRU, USER_CLOCK),
        "value is not an integer",
    ),
    ("drain-extra-arg", None, ("vp_lru_drain", 2, USER_LRU, USER_CLOCK, "x"), "arguments = '1'"),
    (
        "drain-lru-set-is-a-string",
        string_at(USER_LRU),
        ("vp_lru_drain", 2, USER_LRU, USER_CLOCK),
        "vp_lru_drain: type of vp:lru:users",
    ),
    (
        "del-leases-is-a-string",
        string_at(USER_LEASES),
        ("vp_lru_del", 2, USER_LRU, U),
        "vp_lru_del: type of vp:lru:users:leases",
    ),
    (
        "enqueue-deliveries-is-a-string",
        string_at(f"{USER_LRU}:deliveries"),
        (*ENQUEUE, ENVELOPE, '{"n":1}', "1000", "5"),
        "type of vp:lru:users:deliveries = 'string': allowed: a hash",
    ),
    (
        "ack-deliveries-is-a-string",
        in_processing_with(f"{USER_LRU}:deliveries"),
        (*ACK, ENVELOPE),
        "vp_queue_ack: type of vp:lru:users:deliveries",
    ),
    (
        "recover-idle-negative",
        in_processing,
        (*RECOVER, "-1"),
        "vp_queue_recover: min_idle_ms = '-1': " + WAIT_RANGE,
    ),
    ("recover-idle-word", in_processing, (*RECOVER, "abc"), "min_idle_ms = 'abc'"),
    (
        "recover-idle-1e16-s",
        in_processing,
        (*RECOVER, "1" + "0" * 19),
        "min_idle_ms = '1" + "0" * 19,
    ),
    (
        "recover-pending-is-a-string",
        in_processing_with(QUEUE_PENDING),
        (*RECOVER, "0"),
        "type of vp:queue:messages = 'string'",
    ),
]


@pytest.mark.parametrize(
    ("setup", "command", "message"),
    [case[1:] for case in BAD_FCALLS],
    ids=[case[0] for case in BAD_FCALLS],
)
def test_a_refused_fcall_changes_nothing(
    server: ValkeyProcess,
    setup: Callable[[valkey.Valkey], None] | None,
    command: tuple,
    message: str,
) -> None:
    client = server.client(db=1)
    if setup is not None:
        setup(client)
    before = keyspace(server)
    with pytest.raises(valkey.ResponseError) as raised:
        client.execute_command("FCALL", *command)
    assert message in str(raised.value)
    assert keyspace(server) == before
    if setup is None:
        assert sum(server.client(db=db).dbsize() for db in DBS) == 0


def test_a_refused_slide_leaves_the_session_ttl_alone(server: ValkeyProcess) -> None:
    client = server.client(db=1)
    live_session(client)
    before = client.pttl(S)
    with pytest.raises(valkey.ResponseError, match="slide_ms"):
        client.execute_command("FCALL", "vp_session_get", 1, S, "1" + "0" * 19)
    assert 0 < client.pttl(S) <= before


def test_the_longest_ttl_is_accepted_and_kept(server: ValkeyProcess) -> None:
    """The edges of the range work: 10 years and 1 ms, on records and sessions."""
    client = server.client(db=1)
    client.execute_command("FCALL", *LRU3, "{}", TEN_YEARS_MS, "10")
    client.execute_command("FCALL", *CREATE, "{}", TEN_YEARS_MS)
    assert client.pttl(U) > int(TEN_YEARS_MS) - 60_000
    assert client.pttl(S) > int(TEN_YEARS_MS) - 60_000
    client.execute_command("FCALL", "vp_lru_put", 3, USER_LRU, USER_CLOCK, U2, "{}", "1", "10")
    assert client.pttl(U2) <= 1


# --- the Python API refuses bad input before sending anything ------------------------

OWNER_KEY = new_key("usr")

# (id, a call on a LocalCache or AsyncLocalCache: both flavours share the builders)
BAD_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("put-nan", lambda c: c.users.put(U, {"profile": {"score": NAN}})),
    ("put-colliding-keys", lambda c: c.users.put(U, {1: "a", "1": "b"})),
    ("put-bytes", lambda c: c.users.put(U, {"b": b"x"})),
    ("put-bad-key", lambda c: c.users.put("usr:short", {})),
    ("session-data-inf", lambda c: c.sessions.create(OWNER_KEY, {"x": INF})),
    ("session-ttl-1e16", lambda c: c.sessions.create(OWNER_KEY, {}, ttl=1e16)),
    ("session-ttl-str", lambda c: c.sessions.create(OWNER_KEY, {}, ttl="60")),
    ("session-ttl-nan", lambda c: c.sessions.create(OWNER_KEY, {}, ttl=NAN)),
    ("session-owner", lambda c: c.sessions.create("alice", {})),
    ("enqueue-set", lambda c: c.messages.enqueue({"to": {"a", "b"}})),
    ("enqueue-int-key", lambda c: c.messages.enqueue({1: "x"})),
    ("take-negative", lambda c: c.messages.take(timeout=-1)),
    ("take-nan", lambda c: c.messages.take(timeout=NAN)),
    ("take-str", lambda c: c.messages.take(timeout="1")),
    ("recover-inf", lambda c: c.messages.recover(min_idle=INF)),
    ("link-nul", lambda c: c.index.link("ada\x00@example.com", U)),
    ("link-zero-width", lambda c: c.index.link("ada\u200b@example.com", U)),
    ("lookup-bom", lambda c: c.index.lookup("\ufeffada@example.com")),
    ("unlink-bidi", lambda c: c.index.unlink("ada\u202e@example.com")),
]
IDS = [case[0] for case in BAD_CALLS]
CALLS = [case[1] for case in BAD_CALLS]


def sync_cache(server: ValkeyProcess) -> LocalCache:
    cache = LocalCache.from_clients(*(server.client(db=db) for db in DBS))
    server.client().config_resetstat()  # from_clients asked for the library version
    return cache


def assert_untouched(server: ValkeyProcess) -> None:
    """Nothing sent (read first: the DBSIZE below is a command too), nothing stored."""
    assert data_commands(server) == set()
    assert [server.client(db=db).dbsize() for db in DBS] == [0, 0, 0, 0]


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_sync_api_refuses_before_sending(server: ValkeyProcess, call: Callable) -> None:
    cache = sync_cache(server)
    with pytest.raises(CacheError):
        call(cache)
    assert_untouched(server)


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_async_api_refuses_before_sending(server: ValkeyProcess, call: Callable) -> None:
    async def scenario() -> None:
        clients = [valkey.asyncio.Valkey(port=server.port, db=db) for db in DBS]
        cache = await AsyncLocalCache.from_clients(*clients)
        server.client().config_resetstat()
        try:
            with pytest.raises(CacheError):
                await call(cache)
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(scenario())
    assert_untouched(server)


@pytest.mark.parametrize(
    "make",
    [
        lambda client: UserCache(client, ttl=1e16),
        lambda client: UserCache(client, cap=True),
        lambda client: SessionCache(client, ttl="1h"),
        lambda client: SessionCache(client, sliding="yes"),
        lambda client: MessageQueue(client, cap=0),
        lambda client: MessageQueue(client, ttl=INF),
    ],
)
def test_bad_bounds_fail_at_construction(server: ValkeyProcess, make: Callable) -> None:
    with pytest.raises(CacheError):
        make(server.client(db=1))
    assert_untouched(server)


STORE_CALLS: list[tuple[str, Callable[[Store], Any]]] = [
    ("save-nan", lambda s: s.save_user({"name": "Ada", "score": NAN})),
    ("save-colliding-keys", lambda s: s.save_user({1: "a", "1": "b"})),
    ("save-zero-width-email", lambda s: s.save_user({"email": "ada\u200b@example.com"})),
    ("save-email-not-str", lambda s: s.save_user({"email": 42})),
    ("save-wrong-domain", lambda s: s.save_user({}, key=new_key("ses"))),
    ("session-data-inf", lambda s: s.create_session(OWNER_KEY, {"x": INF})),
    ("session-ttl-1e16", lambda s: s.create_session(OWNER_KEY, {}, ttl=1e16)),
    ("session-ttl-str", lambda s: s.create_session(OWNER_KEY, {}, ttl="60")),
    ("session-ttl-0", lambda s: s.create_session(OWNER_KEY, {}, ttl=0)),
    ("session-owner", lambda s: s.create_session("alice", {})),
    ("revoke-all-owner", lambda s: s.revoke_sessions("alice")),
    ("find-nul", lambda s: s.find_user("ada\x00@example.com")),
]


@pytest.mark.parametrize(
    "call", [case[1] for case in STORE_CALLS], ids=[case[0] for case in STORE_CALLS]
)
def test_store_refuses_before_writing_hosted_or_local(
    server: ValkeyProcess, hosted_instance: ValkeyProcess, call: Callable
) -> None:
    hosted_instance.client().flushall()
    hosted_instance.client().config_resetstat()
    store = Store(hosted_instance.client(), sync_cache(server))
    with pytest.raises(CacheError):
        call(store)
    assert_untouched(server)
    assert data_commands(hosted_instance) == set()
    assert hosted_instance.client().dbsize() == 0


def test_store_sessions_carry_their_ttl_on_both_tiers(
    server: ValkeyProcess, hosted_instance: ValkeyProcess
) -> None:
    hosted_instance.client().flushall()
    store = Store(hosted_instance.client(), sync_cache(server))
    session = store.create_session(OWNER_KEY, {"ip": "10.0.0.1"}, ttl=0.29)
    assert 0 < hosted_instance.client().pttl(session.key) <= 290
    assert 0 < server.client(db=2).pttl(session.key) <= 290
    assert hosted_instance.client().get(session.key) == (
        f'{{"owner":"{OWNER_KEY}","data":{{"ip":"10.0.0.1"}}}}'.encode()
    )


def test_store_reads_hosted_strictly_and_caches_nothing_it_refuses(
    server: ValkeyProcess, hosted_instance: ValkeyProcess
) -> None:
    """A record another client wrote with NaN is refused on read, not copied to the cache."""
    hosted = hosted_instance.client()
    hosted.flushall()
    hosted.set(U, '{"score":NaN}')
    hosted.set(U2, f'{{"id":{2**60}}}')  # strict JSON, but beyond what the cache stores
    store = Store(hosted, sync_cache(server))
    with pytest.raises(CacheError, match="stored JSON holds NaN: allowed: finite numbers"):
        store.get_user(U)
    assert store.get_user(U2) == {"id": 2**60}  # served, left uncached
    assert server.client(db=1).keys("usr:*") == []  # (its read and lease are logged)


# --- one index entry per address -------------------------------------------------------


def test_every_form_of_an_address_is_one_index_entry(server: ValkeyProcess) -> None:
    cache = sync_cache(server)
    forms = ["Straße@Example.com", "STRASSE@example.com", "ｓｔｒａｓｓｅ@example.com"]
    for form in forms:
        cache.index.link(form, U)

    async def linked_async() -> None:
        clients = [valkey.asyncio.Valkey(port=server.port, db=db) for db in DBS]
        acache = await AsyncLocalCache.from_clients(*clients)
        await acache.index.link("  STRAẞE@EXAMPLE.COM ", U)
        assert await acache.index.lookup("strasse@example.com") == U
        for client in clients:
            await client.aclose()

    asyncio.run(linked_async())
    index = server.client(db=0)
    assert index.keys() == [b"strasse@example.com"]
    assert all(cache.index.lookup(form) == U for form in forms)
    assert audit_rules._is_email(index.keys()[0].decode())
    assert index.pttl("strasse@example.com") == -1  # the index never expires
