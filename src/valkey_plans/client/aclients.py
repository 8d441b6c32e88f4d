"""The asyncio flavour of the workload clients, for FastAPI-style applications.

Same settings, names, options, timeouts and guards as `valkey_plans.client.clients` (this
module only supplies valkey.asyncio classes); `await clients.aclose()` on shutdown.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import valkey.asyncio
from valkey.asyncio.connection import Connection, SSLConnection
from valkey.asyncio.retry import Retry
from valkey.asyncio.sentinel import Sentinel, SentinelConnectionPool
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from valkey_plans.client.clients import PERMANENT_ERRORS, WorkloadClients
from valkey_plans.client.guards import GuardedMixin

T = TypeVar("T")


class AsyncWorkloadRetry(Retry):
    """valkey.asyncio's Retry, except that a rejected login is raised at once."""

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[Exception], Awaitable[Any]]
    ) -> T:
        async def fail_fast(error: Exception) -> Any:
            outcome = await fail(error)
            if isinstance(error, PERMANENT_ERRORS):
                raise error
            return outcome

        return await super().call_with_retry(do, fail_fast)


class AsyncRetryOnCheckout:
    """Retries handing out a connection, as `clients.RetryOnCheckout` does for sync."""

    async def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Connection:
        try:
            return await super().get_connection(command_name, *keys, **options)
        except PERMANENT_ERRORS:
            raise
        except (ValkeyConnectionError, ValkeyTimeoutError):
            pass
        get = super().get_connection
        retry: AsyncWorkloadRetry = copy.deepcopy(self.connection_kwargs["retry"])

        async def attempt() -> Connection:
            return await get(command_name, *keys, **options)

        async def ignore(_: Exception) -> None:
            return None

        return await retry.call_with_retry(attempt, ignore)


class AsyncRetryingConnectionPool(AsyncRetryOnCheckout, valkey.asyncio.ConnectionPool):
    """A standalone pool that retries while handing out a connection."""


class AsyncRetryingSentinelPool(AsyncRetryOnCheckout, SentinelConnectionPool):
    """A pool on the primary Sentinel names, retrying across a failover."""


class AsyncWorkloadValkey(GuardedMixin, valkey.asyncio.Valkey):
    """A standalone valkey.asyncio client that enforces its workload's guard."""


class AsyncWorkloadValkeyCluster(GuardedMixin, valkey.asyncio.ValkeyCluster):
    """A cluster valkey.asyncio client that enforces its workload's guard."""


class AsyncClients(WorkloadClients[AsyncWorkloadValkey | AsyncWorkloadValkeyCluster]):
    """The asyncio workload clients of one tier: `await AsyncClients(tier).api.get(k)`."""

    pool_class = AsyncRetryingConnectionPool
    connection_class = Connection
    ssl_connection_class = SSLConnection
    retry_class = AsyncWorkloadRetry
    standalone_class = AsyncWorkloadValkey
    cluster_class = AsyncWorkloadValkeyCluster
    cluster_node_class = valkey.asyncio.cluster.ClusterNode
    sentinel_class = Sentinel
    sentinel_pool_class = AsyncRetryingSentinelPool

    async def aclose(self) -> None:
        """Close every pool made by this object and its `for_db` views."""
        for client in self._made_everywhere():
            if isinstance(client, AsyncWorkloadValkey):
                await client.connection_pool.disconnect()
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
