"""The cache role's db schema: names, default numbers and bounds, and its structural keys.

It lives on the client side and uses the standard library only, so an application that
imports the client never loads the plan: the plan's `cache_dbs` defaults
(`valkey_plans.plan.model`) and the client's cache tier settings both read the values
here, and the keyspace audit classifies structural keys by `STRUCTURAL_KEYS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from valkey_plans.domains import STRUCTURAL_PREFIX

#: Names of the cache role's dbs, in their default order (db 0..3).
CACHE_DB_NAMES = ("user_index", "user_cache", "session_cache", "message_queue")


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

# Structural keys (reserved `vp:` prefix); STRUCTURAL_KEYS says which db holds each.
USER_LRU = f"{STRUCTURAL_PREFIX}lru:users"
USER_CLOCK = f"{USER_LRU}:clock"
MESSAGE_LRU = f"{STRUCTURAL_PREFIX}lru:messages"
MESSAGE_CLOCK = f"{MESSAGE_LRU}:clock"
QUEUE_PENDING = f"{STRUCTURAL_PREFIX}queue:messages"
QUEUE_PROCESSING = f"{QUEUE_PENDING}:processing"
QUEUE_TAKEN = f"{QUEUE_PENDING}:taken"
SESSIONS_OF_PREFIX = f"{STRUCTURAL_PREFIX}sessions:"


@dataclass(frozen=True)
class Structural:
    """A declared structural key (exact name, or every name under `prefix`) and its type."""

    name: str
    type: str
    prefix: bool = False

    def matches(self, key: str) -> bool:
        return key.startswith(self.name) if self.prefix else key == self.name


#: Every structural key the cache and its Functions library keep, per cache db name
#: (the plan's `cache_dbs`): the one list the keyspace audit classifies them by.
STRUCTURAL_KEYS: dict[str, tuple[Structural, ...]] = {
    "user_index": (),
    "user_cache": (Structural(USER_LRU, "zset"), Structural(USER_CLOCK, "string")),
    "session_cache": (Structural(SESSIONS_OF_PREFIX, "set", prefix=True),),
    "message_queue": (
        Structural(MESSAGE_LRU, "zset"),
        Structural(MESSAGE_CLOCK, "string"),
        Structural(QUEUE_PENDING, "list"),
        Structural(QUEUE_PROCESSING, "list"),
        Structural(QUEUE_TAKEN, "hash"),
    ),
}
