"""The cache role's db schema: names, default numbers and bounds, what each db holds.

It lives on the client side and uses the standard library only, so an application that
imports the client never loads the plan. Everything that knows about the cache dbs reads
it here: the plan's `cache_dbs` defaults and bounds (`valkey_plans.plan.model`), the
settings applications get (`valkey_plans.plan.app_settings`) and the client's cache tier
settings, the cache itself, the keyspace audit and the cache canary.

What a plan may change is in `CACHE_DBS` (numbers, caps, TTLs); what the cache code
fixes is in `CACHE_DB_USES` (which domain and type of record a db holds, its structural
keys, how the audit and the canary treat it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from valkey_plans.domains import STRUCTURAL_PREFIX

#: Names of the cache role's dbs, in their default order (db 0..3).
CACHE_DB_NAMES = ("user_index", "user_cache", "session_cache", "message_queue")

#: Dbs a Valkey instance may have (`databases`): db numbers run from 0 to 15.
MAX_DATABASES = 16
#: The longest TTL a cache db may give its records: 10 years of 365 days, in seconds.
#: Valkey's expiry is milliseconds since the epoch; the client refuses longer TTLs too.
MAX_TTL = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class CacheDbSpec:
    """One cache db's default number and, where it applies, its bound, TTL and sliding."""

    db: int
    cap: int | None = None
    #: Seconds a record lives.
    ttl: int | None = None
    #: Each read renews the TTL (sessions).
    sliding: bool = False


#: The default db map and bounds of a cache instance (a plan may change any of them).
CACHE_DBS: Mapping[str, CacheDbSpec] = MappingProxyType(
    {
        "user_index": CacheDbSpec(db=0),
        "user_cache": CacheDbSpec(db=1, cap=100, ttl=3600),
        "session_cache": CacheDbSpec(db=2, ttl=86400, sliding=True),
        "message_queue": CacheDbSpec(db=3, cap=1000, ttl=86400),
    }
)

# Structural keys (reserved `vp:` prefix); CACHE_DB_USES says which db holds each.
USER_LRU = f"{STRUCTURAL_PREFIX}lru:users"
USER_CLOCK = f"{USER_LRU}:clock"
MESSAGE_LRU = f"{STRUCTURAL_PREFIX}lru:messages"
MESSAGE_CLOCK = f"{MESSAGE_LRU}:clock"
#: Derived names the library keeps beside an LRU set (see lua/cache.lua): the log of
#: reads not yet applied to the set, and the lease of each read-through fill in flight.
TOUCHES_SUFFIX = ":touches"
LEASES_SUFFIX = ":leases"
USER_TOUCHES = f"{USER_LRU}{TOUCHES_SUFFIX}"
USER_LEASES = f"{USER_LRU}{LEASES_SUFFIX}"
MESSAGE_TOUCHES = f"{MESSAGE_LRU}{TOUCHES_SUFFIX}"
MESSAGE_LEASES = f"{MESSAGE_LRU}{LEASES_SUFFIX}"
#: Per message, how many of its envelopes are pending or in processing.
MESSAGE_DELIVERIES = f"{MESSAGE_LRU}:deliveries"
QUEUE_PENDING = f"{STRUCTURAL_PREFIX}queue:messages"
QUEUE_PROCESSING = f"{QUEUE_PENDING}:processing"
QUEUE_TAKEN = f"{QUEUE_PENDING}:taken"
SESSIONS_OF_PREFIX = f"{STRUCTURAL_PREFIX}sessions:"
#: The leases of session fills in flight (outside SESSIONS_OF_PREFIX: not an owner's set).
SESSION_LEASES = f"{STRUCTURAL_PREFIX}leases:sessions"


@dataclass(frozen=True)
class Structural:
    """A declared structural key (exact name, or every name under `prefix`) and its type."""

    name: str
    type: str
    prefix: bool = False

    def matches(self, key: str) -> bool:
        return key.startswith(self.name) if self.prefix else key == self.name


#: What a cache db holds, which decides how the audit and the canary treat it:
#: INDEX, normalised email -> record key, entries that never expire (so `volatile-lru`
#: never evicts them); LRU, records under an exact count bound that the Functions
#: library keeps; SESSIONS, records whose TTL is the session's expiry.
INDEX, LRU, SESSIONS = "index", "lru", "sessions"


@dataclass(frozen=True)
class CacheDbUse:
    """What one cache db holds: fixed by the cache code, so no plan changes it."""

    kind: str
    #: Domain of its records; None for the index, whose keys are email addresses.
    domain: str | None
    #: Valkey type of a record (or an index entry).
    record_type: str
    #: Every structural key the cache and its Functions library keep in this db.
    structural: tuple[Structural, ...] = ()
    #: The index: domain of the record keys its entries hold.
    points_at: str | None = None


#: What each cache db holds, by name (the plan's `cache_dbs`, in CACHE_DB_NAMES order).
CACHE_DB_USES: Mapping[str, CacheDbUse] = MappingProxyType(
    {
        "user_index": CacheDbUse(INDEX, None, "string", points_at="usr"),
        "user_cache": CacheDbUse(
            LRU,
            "usr",
            "string",
            (
                Structural(USER_LRU, "zset"),
                Structural(USER_CLOCK, "string"),
                Structural(USER_TOUCHES, "list"),
                Structural(USER_LEASES, "hash"),
            ),
        ),
        "session_cache": CacheDbUse(
            SESSIONS,
            "ses",
            "hash",
            (
                Structural(SESSIONS_OF_PREFIX, "set", prefix=True),
                Structural(SESSION_LEASES, "hash"),
            ),
        ),
        "message_queue": CacheDbUse(
            LRU,
            "msg",
            "string",
            (
                Structural(MESSAGE_LRU, "zset"),
                Structural(MESSAGE_CLOCK, "string"),
                Structural(MESSAGE_TOUCHES, "list"),
                Structural(MESSAGE_LEASES, "hash"),
                Structural(MESSAGE_DELIVERIES, "hash"),
                Structural(QUEUE_PENDING, "list"),
                Structural(QUEUE_PROCESSING, "list"),
                Structural(QUEUE_TAKEN, "hash"),
            ),
        ),
    }
)

#: Every structural key the cache and its Functions library keep, per cache db name:
#: the one list the keyspace audit classifies them by.
STRUCTURAL_KEYS: dict[str, tuple[Structural, ...]] = {
    name: use.structural for name, use in CACHE_DB_USES.items()
}


def cache_dbs_of(kind: str) -> tuple[str, ...]:
    """Names of the cache dbs of one kind (INDEX, LRU, SESSIONS), in CACHE_DB_NAMES order."""
    return tuple(name for name, use in CACHE_DB_USES.items() if use.kind == kind)


def db_setting(name: str) -> str:
    """The cache tier setting of one cache db's number (`VALKEY_CACHE_DB_USER_INDEX`)."""
    return f"db_{name}"


#: The bounds applications are told, as (cache db, bound, setting), in the env file's
#: order. The setting is the cache tier's field and, upper-cased after the tier's prefix,
#: its env variable: `user_cap` -> VALKEY_CACHE_USER_CAP.
BOUND_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("user_cache", "cap", "user_cap"),
    ("user_cache", "ttl", "user_ttl"),
    ("message_queue", "cap", "message_cap"),
    ("message_queue", "ttl", "message_ttl"),
    ("session_cache", "ttl", "session_ttl"),
    ("session_cache", "sliding", "session_sliding"),
)
