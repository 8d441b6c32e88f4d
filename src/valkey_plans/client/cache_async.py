"""The asyncio twin of `valkey_plans.client.cache`: same calls, same library, awaited.

Every method builds its `Call` with the shared builders in `valkey_plans.client.cache`
and awaits it; no key names, encodings or argument orders live here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import valkey.asyncio

from valkey_plans.client.cache import (
    DEFAULT_BOUNDS,
    MESSAGE_CLOCK,
    MESSAGE_LRU,
    USER_CLOCK,
    USER_LRU,
    Bounds,
    Call,
    LruCalls,
    QueueCalls,
    QueueItem,
    Record,
    Session,
    SessionCalls,
    UserIndexCalls,
    db_clients,
)
from valkey_plans.client.functions import require_version_async
from valkey_plans.keys import new_key

if TYPE_CHECKING:
    from valkey_plans.client.settings import CacheTierSettings

T = TypeVar("T")

__all__ = [
    "MESSAGE_CLOCK",
    "MESSAGE_LRU",
    "USER_CLOCK",
    "USER_LRU",
    "AsyncLocalCache",
    "AsyncLruCache",
    "AsyncMessageQueue",
    "AsyncSessionCache",
    "AsyncUserCache",
    "AsyncUserIndex",
]


async def run(client: valkey.asyncio.Valkey, call: Call[T]) -> T:
    """Send one call on an asyncio client."""
    return call.parse(await client.execute_command(*call.command))


async def run_many(client: valkey.asyncio.Valkey, calls: Iterable[Call[Any]]) -> list[Any]:
    """Send calls in one pipeline (one round trip, not a transaction)."""
    calls = list(calls)
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.execute_command(*call.command)
    return [call.parse(reply) for call, reply in zip(calls, await pipe.execute(), strict=True)]


class AsyncUserIndex:
    """Email -> user key on the user_index db; entries never expire."""

    def __init__(self, client: valkey.asyncio.Valkey) -> None:
        self.client = client

    async def lookup(self, email: str) -> str | None:
        return await run(self.client, UserIndexCalls.lookup(email))

    async def link(self, email: str, user_key: str) -> None:
        await run(self.client, UserIndexCalls.link(email, user_key))

    async def unlink(self, email: str) -> bool:
        return await run(self.client, UserIndexCalls.unlink(email))


class AsyncLruCache:
    """The exact LRU of `cache.LruCache`, awaited."""

    def __init__(self, client: valkey.asyncio.Valkey, calls: LruCalls) -> None:
        self.client = client
        self.calls = calls

    async def get(self, key: str) -> Record | None:
        return await run(self.client, self.calls.get(key))

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        return await run(self.client, self.calls.get_many(keys))

    async def put(self, key: str, record: Mapping[str, Any]) -> None:
        await run(self.client, self.calls.put(key, record))

    async def delete(self, key: str) -> bool:
        return await run(self.client, self.calls.delete(key))


class AsyncUserCache(AsyncLruCache):
    """`usr:` records on the user_cache db, bounded at the plan's cap."""

    def __init__(
        self,
        client: valkey.asyncio.Valkey,
        cap: int = DEFAULT_BOUNDS.user_cap,
        ttl: float = DEFAULT_BOUNDS.user_ttl,
    ) -> None:
        super().__init__(client, LruCalls.users(cap, ttl))


class AsyncSessionCache:
    """`ses:` sessions; TTL = expiry, optionally sliding on each get/touch."""

    def __init__(
        self,
        client: valkey.asyncio.Valkey,
        ttl: float = DEFAULT_BOUNDS.session_ttl,
        sliding: bool = DEFAULT_BOUNDS.session_sliding,
    ) -> None:
        self.client = client
        self.calls = SessionCalls(ttl, sliding)

    async def create(
        self, owner: str, data: Mapping[str, Any], ttl: float | None = None, key: str | None = None
    ) -> Session:
        return await run(self.client, self.calls.create(owner, data, key or new_key("ses"), ttl))

    async def get(self, key: str) -> Session | None:
        return await run(self.client, self.calls.get(key))

    async def touch(self, key: str) -> bool:
        return await run(self.client, self.calls.get(key)) is not None

    async def revoke(self, key: str) -> bool:
        return await run(self.client, self.calls.revoke(key))

    async def revoke_all(self, owner: str) -> int:
        return await run(self.client, self.calls.revoke_all(owner))


class AsyncMessageQueue:
    """Messages in transit and the at-least-once work queue, awaited."""

    def __init__(
        self,
        client: valkey.asyncio.Valkey,
        blocking: valkey.asyncio.Valkey | None = None,
        cap: int = DEFAULT_BOUNDS.message_cap,
        ttl: float = DEFAULT_BOUNDS.message_ttl,
    ) -> None:
        self.client = client
        self.blocking = blocking or client
        self.calls = QueueCalls(cap, ttl)
        self.messages = AsyncLruCache(client, self.calls.lru)

    async def enqueue(self, body: Mapping[str, Any], key: str | None = None) -> str:
        return await run(self.client, self.calls.enqueue(key or new_key("msg"), body))

    async def get(self, key: str) -> Record | None:
        return await self.messages.get(key)

    async def take(self, timeout: float = 1.0) -> QueueItem | None:
        return await run(self.blocking, self.calls.take(timeout))

    async def ack(self, item: QueueItem) -> bool:
        return await run(self.client, self.calls.ack(item))

    async def recover(self, min_idle: float = 60.0) -> int:
        return await run(self.client, self.calls.recover(min_idle))

    async def pending(self) -> int:
        return await run(self.client, self.calls.pending())

    async def processing(self) -> int:
        return await run(self.client, self.calls.processing())


@dataclass
class AsyncLocalCache:
    """The four dbs of one cache instance on asyncio clients."""

    index: AsyncUserIndex
    users: AsyncUserCache
    sessions: AsyncSessionCache
    messages: AsyncMessageQueue

    async def require_library(self) -> None:
        """Fail at start when the instance was not deployed with this package's library."""
        await require_version_async(self.users.client)

    @classmethod
    async def from_clients(
        cls,
        index: valkey.asyncio.Valkey,
        users: valkey.asyncio.Valkey,
        sessions: valkey.asyncio.Valkey,
        messages: valkey.asyncio.Valkey,
        blocking: valkey.asyncio.Valkey | None = None,
        bounds: Bounds | None = None,
    ) -> AsyncLocalCache:
        """One client per db (and the blocking one for `take`); checks the library once."""
        b = bounds or DEFAULT_BOUNDS
        cache = cls(
            index=AsyncUserIndex(index),
            users=AsyncUserCache(users, b.user_cap, b.user_ttl),
            sessions=AsyncSessionCache(sessions, b.session_ttl, b.session_sliding),
            messages=AsyncMessageQueue(messages, blocking, b.message_cap, b.message_ttl),
        )
        await cache.require_library()
        return cache

    @classmethod
    async def from_settings(cls, settings: CacheTierSettings) -> AsyncLocalCache:
        """The local cache of `load_settings().cache`, on its own asyncio workload clients."""
        from valkey_plans.client.aclients import AsyncClients

        return await cls.from_clients(
            **db_clients(AsyncClients(settings), settings.dbs),
            bounds=Bounds.from_settings(settings),
        )
