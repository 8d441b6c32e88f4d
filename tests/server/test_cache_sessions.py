"""Sessions on a real cache instance: expiry, sliding expiry, revoke, revoke all of a user."""

from __future__ import annotations

import time

import pytest

from valkey_plans.client import functions
from valkey_plans.client.cache import CacheError, SessionCache, sessions_of
from valkey_plans.keys import new_key

POLL_LIMIT = 5.0  # generous bound for expiry to show; no assertion on how fast


@pytest.fixture
def db(valkey_factory):
    server = valkey_factory("cache", databases="4", maxmemory_policy="volatile-lru")
    functions.ensure_loaded(server.client())
    return server.client(db=2)


def wait_until_gone(sessions: SessionCache, key: str) -> bool:
    deadline = time.monotonic() + POLL_LIMIT
    while time.monotonic() < deadline:
        if sessions.get(key) is None:
            return True
        time.sleep(0.05)
    return False


def test_session_lives_until_its_expiry(db) -> None:
    sessions = SessionCache(db, ttl=0.3, sliding=False)  # get() polls; it must not renew
    owner = new_key("usr")
    session = sessions.create(owner, {"role": "admin"})
    assert sessions.get(session.key) == session
    assert 0 < db.pttl(session.key) <= 300
    assert wait_until_gone(sessions, session.key)
    assert db.exists(session.key) == 0


def test_sliding_touch_extends_and_fixed_does_not(db) -> None:
    owner = new_key("usr")
    sliding = SessionCache(db, ttl=60, sliding=True)
    fixed = SessionCache(db, ttl=60, sliding=False)
    slid = sliding.create(owner, {}, ttl=1)
    kept = fixed.create(owner, {}, ttl=1)
    assert sliding.touch(slid.key) and fixed.touch(kept.key)
    assert db.pttl(slid.key) > 1000  # slid to the configured 60 s
    assert db.pttl(kept.key) <= 1000
    assert db.pttl(sessions_of(owner)) == -1  # the owner's set has no TTL: never evicted


def test_revoke_and_revoke_all(db) -> None:
    sessions = SessionCache(db, ttl=60)
    alice, bob = new_key("usr"), new_key("usr")
    a1, a2, a3 = (sessions.create(alice, {"n": n}) for n in range(3))
    b1 = sessions.create(bob, {"n": 9})
    assert sessions.revoke(a1.key) is True
    assert sessions.revoke(a1.key) is False
    assert sessions.revoke_all(alice) == 2
    assert [sessions.get(s.key) for s in (a1, a2, a3)] == [None, None, None]
    assert sessions.get(b1.key) == b1
    assert db.exists(sessions_of(alice)) == 0


def test_the_owner_set_cannot_be_evicted_and_forgets_expired_sessions(db) -> None:
    """The set has no TTL (so `volatile-lru` never evicts it and revoke_all always finds
    every live session); each create drops the members whose session expired."""
    sessions = SessionCache(db, ttl=60, sliding=False)
    owner = new_key("usr")
    db.sadd(sessions_of(owner), "ses:gone")
    db.pexpire(sessions_of(owner), 60_000)  # as version 3 of the library left it
    short = sessions.create(owner, {}, ttl=0.05)
    assert db.pttl(sessions_of(owner)) == -1
    assert wait_until_gone(sessions, short.key)
    kept = sessions.create(owner, {"n": 2})
    assert {m.decode() for m in db.smembers(sessions_of(owner))} == {kept.key}
    assert sessions.revoke_all(owner) == 1 and sessions.get(kept.key) is None


def test_bad_input_names_what_is_allowed(db) -> None:
    sessions = SessionCache(db, ttl=60)
    with pytest.raises(CacheError, match="session owner"):
        sessions.create("alice", {})
    with pytest.raises(CacheError, match="allowed: 'ses'"):
        sessions.get(new_key("usr"))
    with pytest.raises(CacheError, match=r"session ttl = 0: allowed: a finite number of seconds"):
        SessionCache(db, ttl=0)
