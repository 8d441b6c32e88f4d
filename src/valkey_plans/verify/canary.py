"""Cache behaviour canary: prove on a live cache instance that the LRU bound and TTLs hold.

It goes through the same Functions library calls the cache API sends
(`valkey_plans.client.cache.fcall` -> `vp_lru_put`, `vp_lru_get`, `vp_session_create`),
but only ever on its own keys under `vp:canary:` (declared to the audit in
`audit_rules.CANARY_PREFIX`): its own LRU set and clock, its own records, its own
session set. The library takes the LRU set, the clock and the cap as arguments, so
the canary proves the exact-LRU logic with a cap of 3 on a set of 3 records, and
never pushes a real user, message or session out of the live cache. (Filling the
real `vp:lru:users` to its plan cap would evict real users.) The plan's own caps
are proven on the real data by the keyspace audit (`over-cap`). Every key written
is deleted at the end, also when a step fails.

A run that never reached its cleanup (killed verify, or a server killed after an RDB
snapshot caught a run mid-way and restarted from it) leaves canary keys behind. Each
key carries its creation time (a txkey), so the next run deletes those older than
STALE_AFTER and leaves younger ones alone: they may belong to a run going on now.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import valkey

from valkey_plans.client.cache import fcall, run
from valkey_plans.client.schema import LRU, SESSIONS, cache_dbs_of
from valkey_plans.keys import KeyFormatError, new_txkey, txkey_time
from valkey_plans.plan import Instance
from valkey_plans.verify.audit_rules import CANARY_PREFIX

CANARY_CAP = 3
#: TTL of the record that must expire while the canary watches.
SHORT_TTL_MS = 200
EXPIRY_DEADLINE_S = 5.0
#: Canary keys older than this are debris of an earlier run; no run lasts a minute.
STALE_AFTER = timedelta(minutes=10)


def is_stale(key: str, now: datetime) -> bool:
    """A canary key made more than STALE_AFTER before `now` (keys end in their txkey)."""
    try:
        return now - txkey_time(key.rsplit(":", 1)[-1]) > STALE_AFTER
    except KeyFormatError:
        return False


class CanaryFailure(AssertionError):
    """The live cache did not behave as the plan says; the message says how."""


class Canary:
    """One run against one cache instance; `client_for_db` logs in as a user allowed FCALL."""

    def __init__(self, client_for_db: Callable[[int], valkey.Valkey], inst: Instance) -> None:
        self.client_for_db = client_for_db
        self.inst = inst
        self.written: dict[int, set[str]] = {}

    def _key(self, db: int, kind: str) -> str:
        key = f"{CANARY_PREFIX}{kind}:{new_txkey()}" if kind else f"{CANARY_PREFIX}{new_txkey()}"
        self.written.setdefault(db, set()).add(key)
        return key

    def run(self) -> None:
        """Every exact-LRU db (the schema's LRU kind), then every session db."""
        for name in cache_dbs_of(LRU):
            spec = self.inst.db(name)
            self.lru_bound(name, spec.db, spec.ttl or 60)
        for name in cache_dbs_of(SESSIONS):
            spec = self.inst.db(name)
            self.session_ttl(name, spec.db, spec.ttl or 60)

    def lru_bound(self, name: str, db: int, ttl_s: int) -> None:
        """cap 3: put a b c, touch a, put d -> b is evicted, a c d stay, each with the TTL."""
        client = self.client_for_db(db)
        lru, clock = self._key(db, "lru"), self._key(db, "clock")
        a, b, c, d = (self._key(db, "") for _ in range(4))
        ttl_ms = ttl_s * 1000

        def put(key: str, ttl: int = ttl_ms) -> None:
            run(client, fcall("vp_lru_put", (lru, clock, key), ("{}", ttl, CANARY_CAP), str))

        for key in (a, b, c):
            put(key)
        run(client, fcall("vp_lru_get", (lru, clock, a), (), str))
        put(d)
        alive = {k for k in (a, b, c, d) if client.exists(k)}
        if alive != {a, c, d} or client.zcard(lru) != CANARY_CAP:
            raise CanaryFailure(
                f"{self.inst.name} {name} (db {db}): exact LRU broken: after put a b c, get a,"
                f" put d with cap {CANARY_CAP} the live records are"
                f" {sorted(k[-3:] for k in alive)}, want a c d"
            )
        pttl = client.pttl(d)
        if not 0 < pttl <= ttl_ms:
            raise CanaryFailure(
                f"{self.inst.name} {name} (db {db}): record TTL {pttl} ms, want 0 < TTL <= {ttl_ms}"
            )
        short = self._key(db, "")
        put(short, SHORT_TTL_MS)
        self._wait_gone(client, short, f"{name} (db {db})")

    def session_ttl(self, name: str, db: int, ttl_s: int) -> None:
        """A session created through the library carries the plan's session TTL."""
        client = self.client_for_db(db)
        session, owners = self._key(db, "ses"), self._key(db, "sessions")
        owner = f"{CANARY_PREFIX}owner"
        run(client, fcall("vp_session_create", (session, owners), (owner, "{}", ttl_s * 1000), str))
        pttl = client.pttl(session)
        if not 0 < pttl <= ttl_s * 1000:
            raise CanaryFailure(
                f"{self.inst.name} {name} (db {db}): session TTL {pttl} ms,"
                f" want 0 < TTL <= {ttl_s * 1000}"
            )

    def _wait_gone(self, client: valkey.Valkey, key: str, where: str) -> None:
        deadline = time.monotonic() + EXPIRY_DEADLINE_S
        while client.exists(key):
            if time.monotonic() > deadline:
                raise CanaryFailure(
                    f"{self.inst.name} {where}: a record put with a {SHORT_TTL_MS} ms TTL still"
                    f" exists after {EXPIRY_DEADLINE_S}s: TTLs do not expire"
                )
            time.sleep(0.05)

    def cleanup(self) -> list[str]:
        """Delete this run's keys and stale debris; returns this run's keys still present."""
        left: list[str] = []
        now = datetime.now(UTC)
        for db, keys in self.written.items():
            client = self.client_for_db(db)
            stale = [
                key
                for raw in client.scan_iter(match=f"{CANARY_PREFIX}*", count=1000)
                if (key := raw.decode()) not in keys and is_stale(key, now)
            ]
            if keys or stale:
                client.delete(*keys, *stale)
            left += [key for key in sorted(keys) if client.exists(key)]
        return left
