"""The asyncio names of the local cache: the classes of `valkey_plans.client.cache`.

There is no second implementation: the cache's classes send their calls through the
runner of their client's flavour, so on valkey.asyncio clients every method returns
an awaitable. These names stay for applications that import them;
`AsyncLocalCache.from_settings` is the one that differs (it makes asyncio clients).
"""

from __future__ import annotations

from valkey_plans.client.cache import (
    MESSAGE_CLOCK,
    MESSAGE_LRU,
    USER_CLOCK,
    USER_LRU,
    AsyncLocalCache,
    LruCache,
    MessageQueue,
    SessionCache,
    UserCache,
    UserIndex,
)

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

AsyncUserIndex = UserIndex
AsyncLruCache = LruCache
AsyncUserCache = UserCache
AsyncSessionCache = SessionCache
AsyncMessageQueue = MessageQueue
