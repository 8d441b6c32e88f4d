"""The asyncio twin runs the same library calls and sees the same data as the sync API."""

from __future__ import annotations

import asyncio

import pytest
import valkey.asyncio

from valkey_plans.client import functions
from valkey_plans.client.cache import Bounds, LocalCache
from valkey_plans.client.cache_async import AsyncLocalCache
from valkey_plans.keys import new_key


@pytest.fixture
def server(valkey_factory):
    server = valkey_factory("cache", databases="4", maxmemory_policy="volatile-lru")
    functions.ensure_loaded(server.client())
    return server


def test_async_twin_matches_sync(server) -> None:
    bounds = Bounds(user_cap=2)
    sync = LocalCache.from_clients(*(server.client(db=n) for n in range(4)), bounds=bounds)

    async def scenario() -> None:
        clients = [valkey.asyncio.Valkey(port=server.port, db=n) for n in range(4)]
        cache = await AsyncLocalCache.from_clients(*clients, bounds=bounds)
        u1, u2, u3 = (new_key("usr") for _ in range(3))
        await cache.index.link("A@b.example", u1)
        assert sync.index.lookup("a@b.example") == u1
        await cache.users.put(u1, {"n": 1})
        await cache.users.put(u2, {"n": 2})
        assert await cache.users.get(u1) == {"n": 1}  # u1 now most recent
        sync.users.put(u3, {"n": 3})  # evicts u2, the least recently used
        assert await cache.users.get_many([u1, u2, u3]) == {u1: {"n": 1}, u3: {"n": 3}}
        session = await cache.sessions.create(u1, {"k": "v"})
        assert sync.sessions.get(session.key) == session
        assert await cache.sessions.revoke_all(u1) == 1
        key = await cache.messages.enqueue({"to": "x"})
        item = await cache.messages.take(timeout=1)
        assert item is not None and item.key == key
        assert await cache.messages.ack(item) is True
        assert (await cache.messages.pending(), await cache.messages.processing()) == (0, 0)
        for client in clients:
            await client.aclose()

    asyncio.run(scenario())


def test_async_refuses_instance_without_library(valkey_server) -> None:
    async def scenario() -> None:
        clients = [valkey.asyncio.Valkey(port=valkey_server.port, db=n) for n in range(4)]
        with pytest.raises(functions.LibraryVersionError, match="no library valkey_plans"):
            await AsyncLocalCache.from_clients(*clients)
        for client in clients:
            await client.aclose()

    asyncio.run(scenario())


def test_from_settings_uses_workload_clients_and_plan_bounds(server) -> None:
    from valkey_plans.client.settings import CacheTierSettings

    settings = CacheTierSettings(port=server.port, user_cap=3, app="shop")
    cache = LocalCache.from_settings(settings)
    assert cache.users.calls.cap == 3
    keys = [new_key("usr") for _ in range(5)]
    for key in keys:
        cache.users.put(key, {})
    assert server.client(db=settings.db_user_cache).zcard("vp:lru:users") == 3
    names = {c["name"] for c in server.client().client_list()}
    assert "shop:api" in names

    async def scenario() -> None:
        acache = await AsyncLocalCache.from_settings(settings)
        assert await acache.users.get_many(keys) == {k: {} for k in keys[2:]}

    asyncio.run(scenario())


@pytest.mark.parametrize("sliding", [True, False])
def test_from_settings_reads_session_sliding_from_the_settings(server, sliding) -> None:
    from valkey_plans.client.settings import CacheTierSettings

    settings = CacheTierSettings(port=server.port, session_ttl=60, session_sliding=sliding)
    cache = LocalCache.from_settings(settings)
    session = cache.sessions.create(new_key("usr"), {}, ttl=1)
    assert cache.sessions.touch(session.key)
    ttl_ms = server.client(db=settings.db_session_cache).pttl(session.key)
    assert (ttl_ms > 1000) is sliding  # a touch slides to the configured 60 s, or not at all

    async def scenario() -> None:
        acache = await AsyncLocalCache.from_settings(settings)
        assert acache.sessions.calls.sliding is sliding

    asyncio.run(scenario())
