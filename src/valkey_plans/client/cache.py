"""The local cache: user index, exact-LRU user cache, sessions and messages in transit.

Every bounded operation is one FCALL into the `valkey_plans` Functions library
(`lua/cache.lua`), so the cap holds atomically however many processes share the
instance. This module is also the one key/encoding layer: each operation is built
once as a `Call` (the command to send and how to read its reply); the sync classes
here and the asyncio twin in `cache_async` only differ in whether they await it.

Each class takes the plain valkey-py client of its own db (dependency injection);
`LocalCache.from_settings` builds them from the cache tier's settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import valkey

from valkey_plans.client.functions import require_version
from valkey_plans.client.schema import (
    MESSAGE_CLOCK,
    MESSAGE_LRU,
    QUEUE_PENDING,
    QUEUE_PROCESSING,
    QUEUE_TAKEN,
    SESSIONS_OF_PREFIX,
    USER_CLOCK,
    USER_LRU,
)
from valkey_plans.client.settings import CacheDbs, CacheTierSettings
from valkey_plans.keys import KeyFormatError, new_key, parse

if TYPE_CHECKING:
    from valkey_plans.client.clients import WorkloadClients

T = TypeVar("T")
Record = dict[str, Any]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
MAX_EMAIL_LENGTH = 254


class CacheError(ValueError):
    """Bad input to the cache: the message names the value's role and what is allowed."""


# --- the encoding layer: JSON, once -------------------------------------------------


def encode(record: Mapping[str, Any]) -> str:
    """Records are JSON objects; compact separators keep cached values small."""
    if not isinstance(record, Mapping):
        raise CacheError(f"a record must be a mapping (JSON object), got {type(record).__name__}")
    try:
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise CacheError(f"record is not JSON-serialisable: {exc}") from None


def decode(raw: bytes | str | None) -> Record | None:
    """The inverse of `encode`; None (a miss) stays None."""
    return None if raw is None else json.loads(raw)


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def normalise_email(email: str) -> str:
    """The user index's key: trimmed, lowercased, and plausibly an address."""
    if not isinstance(email, str):
        raise CacheError(f"email must be a str, got {type(email).__name__}")
    normal = email.strip().lower()
    if len(normal) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(normal):
        raise CacheError(
            f"email {email!r} is not an address: allowed is local@domain.tld "
            f"without spaces, at most {MAX_EMAIL_LENGTH} characters"
        )
    return normal


_RECORD_KEY = re.compile(r"[a-z]{3}:[0-9A-Za-z]{12}")


def record_key(key: str, domain: str, role: str) -> str:
    """Check that `key` is a `<domain>:<txkey>` record key before it reaches the server.

    The regex is the hot path (every cache call); `keys.parse` explains a failure.
    """
    if isinstance(key, str) and key[:3] == domain and _RECORD_KEY.fullmatch(key):
        return key
    try:
        parsed = parse(key)
    except KeyFormatError as exc:
        raise CacheError(f"{role} {exc}") from None
    if parsed.domain != domain:
        raise CacheError(f"{role} key {key!r} is in domain {parsed.domain!r}; allowed: {domain!r}")
    return key


def owner_key(owner: str) -> str:
    """A session's owner is a record key of any known domain (usually `usr:`)."""
    try:
        parse(owner)
    except KeyFormatError as exc:
        raise CacheError(f"session owner {exc}") from None
    return owner


def sessions_of(owner: str) -> str:
    """The structural set listing one owner's session keys."""
    return f"{SESSIONS_OF_PREFIX}{owner}"


def _ms(seconds: float, role: str) -> int:
    ms = int(seconds * 1000)
    if ms < 1:
        raise CacheError(f"{role} must be a positive number of seconds, got {seconds!r}")
    return ms


def _cap(cap: int, role: str) -> int:
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise CacheError(f"{role} must be a positive integer, got {cap!r}")
    return cap


# --- calls: the command and how to read its reply -----------------------------------


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One round trip: the command to send and the parser of its reply."""

    command: tuple[str | int, ...]
    parse: Callable[[Any], T]


def fcall(
    function: str, keys: Sequence[str], args: Sequence[str | int], reply: Callable[[Any], T]
) -> Call[T]:
    return Call(("FCALL", function, len(keys), *keys, *args), reply)


def run(client: valkey.Valkey, call: Call[T]) -> T:
    """Send one call on a sync client."""
    return call.parse(client.execute_command(*call.command))


def run_many(client: valkey.Valkey, calls: Iterable[Call[Any]]) -> list[Any]:
    """Send calls in one pipeline (one round trip, not a transaction)."""
    calls = list(calls)
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.execute_command(*call.command)
    return [call.parse(reply) for call, reply in zip(calls, pipe.execute(), strict=True)]


def _int(reply: Any) -> int:
    return int(reply)


def _bool(reply: Any) -> bool:
    return bool(int(reply))


def _ok(reply: Any) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: its key, the record key of its owner, and its data."""

    key: str
    owner: str
    data: Record


@dataclass(frozen=True, slots=True)
class QueueItem:
    """A message a worker took: `envelope` is the exact queue entry, needed to ack it."""

    key: str
    body: Record
    envelope: str


def _envelope(key: str, body_json: str) -> str:
    return f'{{"key":{json.dumps(key)},"body":{body_json}}}'


def _queue_item(raw: bytes | str | None) -> QueueItem | None:
    if raw is None:
        return None
    envelope = raw.decode() if isinstance(raw, bytes) else raw
    parsed = json.loads(envelope)
    return QueueItem(key=parsed["key"], body=parsed["body"], envelope=envelope)


class UserIndexCalls:
    """db user_index: normalised email -> `usr:` key, plain strings without TTL.

    No TTL is the point: under `volatile-lru` memory pressure can never evict them.
    """

    @staticmethod
    def lookup(email: str) -> Call[str | None]:
        return Call(("GET", normalise_email(email)), _text)

    @staticmethod
    def link(email: str, user_key: str) -> Call[None]:
        return Call(("SET", normalise_email(email), record_key(user_key, "usr", "user")), _ok)

    @staticmethod
    def unlink(email: str) -> Call[bool]:
        return Call(("DEL", normalise_email(email)), _bool)


class LruCalls:
    """An exact LRU of JSON records in one db, bounded at `cap`, each with a TTL."""

    def __init__(self, domain: str, lru: str, clock: str, cap: int, ttl: float) -> None:
        self.domain = domain
        self.lru = lru
        self.clock = clock
        self.cap = _cap(cap, f"{domain} cache cap")
        self.ttl_ms = _ms(ttl, f"{domain} cache ttl")

    @classmethod
    def users(cls, cap: int, ttl: float) -> LruCalls:
        """The user_cache db's LRU of `usr:` records."""
        return cls("usr", USER_LRU, USER_CLOCK, cap, ttl)

    def key(self, key: str) -> str:
        return record_key(key, self.domain, self.domain)

    def get(self, key: str) -> Call[Record | None]:
        return fcall("vp_lru_get", (self.lru, self.clock, self.key(key)), (), decode)

    def get_many(self, keys: Sequence[str]) -> Call[dict[str, Record]]:
        checked = [self.key(k) for k in keys]

        def found(replies: list[Any]) -> dict[str, Record]:
            return {k: decode(v) for k, v in zip(checked, replies, strict=True) if v is not None}

        return fcall("vp_lru_mget", (self.lru, self.clock, *checked), (), found)

    def put(self, key: str, record: Mapping[str, Any]) -> Call[None]:
        keys = (self.lru, self.clock, self.key(key))
        return fcall("vp_lru_put", keys, (encode(record), self.ttl_ms, self.cap), _ok)

    def delete(self, key: str) -> Call[bool]:
        return fcall("vp_lru_del", (self.lru, self.key(key)), (), _bool)


class SessionCalls:
    """db session_cache: `ses:` hashes whose TTL is the session's expiry."""

    def __init__(self, ttl: float, sliding: bool = False) -> None:
        self.ttl_ms = _ms(ttl, "session ttl")
        self.sliding = sliding

    def create(
        self, owner: str, data: Mapping[str, Any], key: str, ttl: float | None = None
    ) -> Call[Session]:
        ttl_ms = self.ttl_ms if ttl is None else _ms(ttl, "session ttl")
        record_key(key, "ses", "session")
        owner_key(owner)
        payload = encode(data)
        session = Session(key=key, owner=owner, data=dict(data))
        keys = (key, sessions_of(owner))
        return fcall("vp_session_create", keys, (owner, payload, ttl_ms), lambda _: session)

    def get(self, key: str, slide: bool | None = None) -> Call[Session | None]:
        slide_ms = self.ttl_ms if (self.sliding if slide is None else slide) else 0

        def session(reply: list[Any] | None) -> Session | None:
            if not reply:
                return None
            owner, data = reply
            return Session(key=key, owner=_text(owner) or "", data=json.loads(data))

        return fcall("vp_session_get", (record_key(key, "ses", "session"),), (slide_ms,), session)

    def revoke(self, key: str) -> Call[bool]:
        return fcall("vp_session_revoke", (record_key(key, "ses", "session"),), (), _bool)

    def revoke_all(self, owner: str) -> Call[int]:
        return fcall("vp_session_revoke_all", (sessions_of(owner_key(owner)),), (), _int)


class QueueCalls:
    """db message_queue: the `msg:` LRU plus the reliable pending/processing lists."""

    def __init__(self, cap: int, ttl: float) -> None:
        self.lru = LruCalls("msg", MESSAGE_LRU, MESSAGE_CLOCK, cap, ttl)

    def enqueue(self, key: str, body: Mapping[str, Any]) -> Call[str]:
        payload = encode(body)
        keys = (self.lru.lru, self.lru.clock, self.lru.key(key), QUEUE_PENDING)
        args = (_envelope(key, payload), payload, self.lru.ttl_ms, self.lru.cap)
        return fcall("vp_queue_enqueue", keys, args, lambda _: key)

    @staticmethod
    def take(timeout: float) -> Call[QueueItem | None]:
        if timeout < 0:
            raise CacheError(f"take timeout must be >= 0 seconds (0 waits forever), got {timeout}")
        command = ("BLMOVE", QUEUE_PENDING, QUEUE_PROCESSING, "RIGHT", "LEFT", timeout)
        return Call(command, _queue_item)

    def ack(self, item: QueueItem) -> Call[bool]:
        keys = (QUEUE_PROCESSING, QUEUE_TAKEN, self.lru.lru, self.lru.key(item.key))
        return fcall("vp_queue_ack", keys, (item.envelope,), _bool)

    @staticmethod
    def recover(min_idle: float) -> Call[int]:
        if min_idle < 0:
            raise CacheError(f"recover min_idle must be >= 0 seconds, got {min_idle}")
        keys = (QUEUE_PROCESSING, QUEUE_TAKEN, QUEUE_PENDING)
        return fcall("vp_queue_recover", keys, (int(min_idle * 1000),), _int)

    @staticmethod
    def pending() -> Call[int]:
        return Call(("LLEN", QUEUE_PENDING), _int)

    @staticmethod
    def processing() -> Call[int]:
        return Call(("LLEN", QUEUE_PROCESSING), _int)


# --- bounds and wiring, shared by both flavours ---------------------------------------

_DEFAULT_TIER = CacheTierSettings()


@dataclass(frozen=True)
class Bounds:
    """The caps and TTLs (seconds) of the cache dbs, named as in `CacheTierSettings`;
    the defaults are its defaults, which are the plan's."""

    user_cap: int = _DEFAULT_TIER.user_cap
    user_ttl: float = _DEFAULT_TIER.user_ttl
    session_ttl: float = _DEFAULT_TIER.session_ttl
    session_sliding: bool = _DEFAULT_TIER.session_sliding
    message_cap: int = _DEFAULT_TIER.message_cap
    message_ttl: float = _DEFAULT_TIER.message_ttl

    @classmethod
    def from_settings(cls, settings: CacheTierSettings) -> Bounds:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


DEFAULT_BOUNDS = Bounds()

C = TypeVar("C")


def db_clients(clients: WorkloadClients[C], dbs: CacheDbs) -> dict[str, C]:
    """The `from_clients` arguments of either flavour: each cache db's api client, and
    the message_queue db's blocking client for `take`."""
    return {
        "index": clients.for_db(dbs.user_index).api,
        "users": clients.for_db(dbs.user_cache).api,
        "sessions": clients.for_db(dbs.session_cache).api,
        "messages": clients.for_db(dbs.message_queue).api,
        "blocking": clients.for_db(dbs.message_queue).blocking,
    }


# --- sync clients ---------------------------------------------------------------------


class UserIndex:
    """Email -> user key on the user_index db; entries never expire."""

    def __init__(self, client: valkey.Valkey) -> None:
        self.client = client

    def lookup(self, email: str) -> str | None:
        return run(self.client, UserIndexCalls.lookup(email))

    def link(self, email: str, user_key: str) -> None:
        run(self.client, UserIndexCalls.link(email, user_key))

    def unlink(self, email: str) -> bool:
        return run(self.client, UserIndexCalls.unlink(email))


class LruCache:
    """An exact LRU on one db: after any sequence of calls it holds exactly the `cap`
    most recently used records (fewer once TTLs or memory pressure drop some)."""

    def __init__(self, client: valkey.Valkey, calls: LruCalls) -> None:
        self.client = client
        self.calls = calls

    def get(self, key: str) -> Record | None:
        return run(self.client, self.calls.get(key))

    def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        """One FCALL for all keys, touched in the order given; misses are left out."""
        return run(self.client, self.calls.get_many(keys))

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        run(self.client, self.calls.put(key, record))

    def delete(self, key: str) -> bool:
        return run(self.client, self.calls.delete(key))


class UserCache(LruCache):
    """`usr:` records on the user_cache db, bounded at the plan's cap."""

    def __init__(
        self,
        client: valkey.Valkey,
        cap: int = DEFAULT_BOUNDS.user_cap,
        ttl: float = DEFAULT_BOUNDS.user_ttl,
    ) -> None:
        super().__init__(client, LruCalls.users(cap, ttl))


class SessionCache:
    """`ses:` sessions; TTL = expiry, optionally sliding on each get/touch."""

    def __init__(
        self,
        client: valkey.Valkey,
        ttl: float = DEFAULT_BOUNDS.session_ttl,
        sliding: bool = DEFAULT_BOUNDS.session_sliding,
    ) -> None:
        self.client = client
        self.calls = SessionCalls(ttl, sliding)

    def create(
        self, owner: str, data: Mapping[str, Any], ttl: float | None = None, key: str | None = None
    ) -> Session:
        return run(self.client, self.calls.create(owner, data, key or new_key("ses"), ttl))

    def get(self, key: str) -> Session | None:
        return run(self.client, self.calls.get(key))

    def touch(self, key: str) -> bool:
        """Whether the session is alive; slides its expiry when the plan says sliding."""
        return run(self.client, self.calls.get(key)) is not None

    def revoke(self, key: str) -> bool:
        return run(self.client, self.calls.revoke(key))

    def revoke_all(self, owner: str) -> int:
        return run(self.client, self.calls.revoke_all(owner))


class MessageQueue:
    """Messages in transit: bounded `msg:` LRU plus an at-least-once work queue.

    `take` blocks, so it runs on the blocking workload's client; everything else on api.
    """

    def __init__(
        self,
        client: valkey.Valkey,
        blocking: valkey.Valkey | None = None,
        cap: int = DEFAULT_BOUNDS.message_cap,
        ttl: float = DEFAULT_BOUNDS.message_ttl,
    ) -> None:
        self.client = client
        self.blocking = blocking or client
        self.calls = QueueCalls(cap, ttl)
        self.messages = LruCache(client, self.calls.lru)

    def enqueue(self, body: Mapping[str, Any], key: str | None = None) -> str:
        return run(self.client, self.calls.enqueue(key or new_key("msg"), body))

    def get(self, key: str) -> Record | None:
        return self.messages.get(key)

    def take(self, timeout: float = 1.0) -> QueueItem | None:
        """The oldest pending message, moved to processing; None after `timeout` seconds."""
        return run(self.blocking, self.calls.take(timeout))

    def ack(self, item: QueueItem) -> bool:
        return run(self.client, self.calls.ack(item))

    def recover(self, min_idle: float = 60.0) -> int:
        """Requeue jobs left in processing (by dead workers); returns how many moved."""
        return run(self.client, self.calls.recover(min_idle))

    def pending(self) -> int:
        return run(self.client, self.calls.pending())

    def processing(self) -> int:
        return run(self.client, self.calls.processing())


@dataclass
class LocalCache:
    """The four dbs of one cache instance, each on its own client."""

    index: UserIndex
    users: UserCache
    sessions: SessionCache
    messages: MessageQueue

    def require_library(self) -> None:
        """Fail at start when the instance was not deployed with this package's library."""
        require_version(self.users.client)

    @classmethod
    def from_clients(
        cls,
        index: valkey.Valkey,
        users: valkey.Valkey,
        sessions: valkey.Valkey,
        messages: valkey.Valkey,
        blocking: valkey.Valkey | None = None,
        bounds: Bounds | None = None,
    ) -> LocalCache:
        """One client per db (and the blocking one for `take`); checks the library once."""
        b = bounds or DEFAULT_BOUNDS
        cache = cls(
            index=UserIndex(index),
            users=UserCache(users, b.user_cap, b.user_ttl),
            sessions=SessionCache(sessions, b.session_ttl, b.session_sliding),
            messages=MessageQueue(messages, blocking, b.message_cap, b.message_ttl),
        )
        cache.require_library()
        return cache

    @classmethod
    def from_workload_clients(
        cls, clients: WorkloadClients[Any], settings: CacheTierSettings
    ) -> LocalCache:
        """Each db's api client from the cache tier's clients; `take` on the blocking one."""
        return cls.from_clients(
            **db_clients(clients, settings.dbs), bounds=Bounds.from_settings(settings)
        )

    @classmethod
    def from_settings(cls, settings: CacheTierSettings) -> LocalCache:
        """The local cache of `load_settings().cache`, on its own workload clients."""
        from valkey_plans.client.clients import Clients

        return cls.from_workload_clients(Clients(settings), settings)
