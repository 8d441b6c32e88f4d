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
    assert db.pttl(sessions_of(owner)) > 1000  # the owner's set outlives its sessions


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


def test_losing_the_owner_set_revokes_rather_than_orphans(db) -> None:
    """If memory pressure evicts an owner's set, its sessions must not outlive revoke_all."""
    sessions = SessionCache(db, ttl=60)
    owner = new_key("usr")
    session = sessions.create(owner, {})
    db.delete(sessions_of(owner))  # what an eviction of the volatile set would do
    assert sessions.get(session.key) is None
    assert db.exists(session.key) == 0


def test_bad_input_names_what_is_allowed(db) -> None:
    sessions = SessionCache(db, ttl=60)
    with pytest.raises(CacheError, match="session owner"):
        sessions.create("alice", {})
    with pytest.raises(CacheError, match="allowed: 'ses'"):
        sessions.get(new_key("usr"))
    with pytest.raises(CacheError, match=r"session ttl = 0: allowed: a finite number of seconds"):
        SessionCache(db, ttl=0)
