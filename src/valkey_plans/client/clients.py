"""One client per workload, so a blocking call or a subscriber never stalls API traffic.

`Clients(tier)` exposes `api`, `blocking`, `subscriber` and `background`. Each is made
on first use with its own connection pool (one pool per (db, workload)), its own
client name `<app>:<workload>` as seen in CLIENT LIST, its own ACL login, timeouts
that fit the workload, retries with exponential backoff on connection loss and
periodic health checks. The options and the guards are built here once and shared
with the asyncio flavour (`valkey_plans.client.aclients`), which only supplies the classes.
"""

from __future__ import annotations

import copy
import math
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

import valkey
from valkey.backoff import ExponentialBackoff
from valkey.connection import Connection, SSLConnection
from valkey.exceptions import AuthenticationError, AuthorizationError
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError
from valkey.retry import Retry
from valkey.sentinel import Sentinel, SentinelConnectionPool

from valkey_plans.client.guards import DEFAULT_MAX_BLOCK, CommandRefused, Guard, GuardedMixin
from valkey_plans.client.settings import WORKLOADS, TierSettings, Workload

__all__ = [
    "DEFAULT_MAX_BLOCK",
    "Clients",
    "CommandRefused",
    "WorkloadClients",
    "client_name",
    "workload_options",
]

#: Seconds the blocking client's socket waits beyond its longest permitted block.
BLOCK_MARGIN = 5.0
#: Reconnect attempts after a connection loss; with the backoff below they ride out
#: about 9 s of a server restart before the error reaches the application.
RETRIES = 8
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
#: Idle seconds before a pooled connection is PINGed before use.
HEALTH_CHECK_INTERVAL = 30.0
#: TCP keepalive so a silently dropped peer (NAT, failover) is noticed within about a
#: minute, which matters most for the subscriber: it has no socket timeout.
KEEPALIVE_OPTIONS = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


#: Connection errors another attempt cannot fix: valkey-py files a rejected login under
#: ConnectionError, and retrying it only delays the real message by the whole backoff.
PERMANENT_ERRORS = (AuthenticationError, AuthorizationError)

T = TypeVar("T")


class WorkloadRetry(Retry):
    """valkey-py's Retry, except that a rejected login is raised at once."""

    def call_with_retry(self, do: Callable[[], T], fail: Callable[[Exception], Any]) -> T:
        def fail_fast(error: Exception) -> Any:
            outcome = fail(error)
            if isinstance(error, PERMANENT_ERRORS):
                raise error
            return outcome

        return super().call_with_retry(do, fail_fast)


@dataclass(frozen=True)
class WorkloadProfile:
    """Timeouts of one workload (seconds; None waits as long as the socket stays up)."""

    socket_timeout: float | None
    connect_timeout: float = 5.0


def profile(workload: Workload, max_block: float) -> WorkloadProfile:
    """api fails fast; blocking outlasts its longest block; subscriber idles; background waits."""
    return {
        "api": WorkloadProfile(socket_timeout=5.0),
        "blocking": WorkloadProfile(socket_timeout=max_block + BLOCK_MARGIN),
        "subscriber": WorkloadProfile(socket_timeout=None),
        "background": WorkloadProfile(socket_timeout=120.0),
    }[workload]


def client_name(app: str, workload: Workload) -> str:
    """The CLIENT SETNAME of a workload: `<app>:<workload>`, how an operator spots it."""
    return f"{app}:{workload}"


def backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE)


def workload_options(tier: TierSettings, workload: Workload, max_block: float) -> dict[str, Any]:
    """Connection options common to both flavours and both modes (no host, db or retry object).

    Only connection-loss errors are retried: a timed-out command may already have run
    on the server, and running it again would not be safe for non-idempotent writes.
    """
    login = tier.credentials(workload)
    timeouts = profile(workload, max_block)
    options: dict[str, Any] = {
        "username": login.user,
        "password": login.password.get_secret_value() if login.password else None,
        "client_name": client_name(tier.app, workload),
        "socket_timeout": timeouts.socket_timeout,
        "socket_connect_timeout": timeouts.connect_timeout,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE_OPTIONS,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry_on_error": [ValkeyConnectionError],
    }
    if tier.tls:
        options |= {
            "ssl_cert_reqs": "required",
            "ssl_ca_certs": str(tier.tls_ca_file) if tier.tls_ca_file else None,
            "ssl_check_hostname": True,
        }
    return options


def check_max_block(max_block: float) -> float:
    if not (isinstance(max_block, int | float) and 0 < max_block < math.inf):
        raise ValueError(f"max_block must be a positive number of seconds, got {max_block!r}")
    return float(max_block)


def check_db(tier: TierSettings, db: int) -> int:
    if not isinstance(db, int) or not 0 <= db <= 15:
        raise ValueError(f"db must be an integer 0..15, got {db!r}")
    if tier.mode == "cluster" and db != 0:
        raise ValueError(f"cluster mode has only db 0; for_db({db}) is not possible")
    return db


C = TypeVar("C")


class WorkloadClients(Generic[C]):
    """The four workload clients of one tier and db; subclasses supply the client classes."""

    #: What a flavour supplies (valkey-py in `Clients`, valkey.asyncio in `AsyncClients`).
    pool_class: ClassVar[type]
    connection_class: ClassVar[type]
    ssl_connection_class: ClassVar[type]
    retry_class: ClassVar[type]
    standalone_class: ClassVar[type]
    cluster_class: ClassVar[type]
    cluster_node_class: ClassVar[type]
    sentinel_class: ClassVar[type]
    sentinel_pool_class: ClassVar[type]

    def __init__(
        self, tier: TierSettings, *, max_block: float = DEFAULT_MAX_BLOCK, db: int | None = None
    ) -> None:
        self.tier = tier
        self.max_block = check_max_block(max_block)
        self.db = check_db(tier, tier.db if db is None else db)
        self._made: dict[Workload, C] = {}
        self._views: dict[int, Self] = {self.db: self}
        self._lock = threading.Lock()
        self._sentinel: Any = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(app={self.tier.app!r}, {self.tier.mode} "
            f"{self.tier.host}:{self.tier.port}, db={self.db}, made={sorted(self._made)})"
        )

    @property
    def api(self) -> C:
        """Fast non-blocking commands of request handlers; blocking commands are refused."""
        return self.get("api")

    @property
    def blocking(self) -> C:
        """BLPOP/BLMOVE/XREAD BLOCK and friends, bounded by `max_block`."""
        return self.get("blocking")

    @property
    def subscriber(self) -> C:
        """pub/sub only: `subscriber.pubsub()`, PUBLISH, PUBSUB."""
        return self.get("subscriber")

    @property
    def background(self) -> C:
        """Scans and bulk pipelines, on connections the api never waits behind."""
        return self.get("background")

    def get(self, workload: Workload) -> C:
        """The client of `workload`, made on first use (thread-safe)."""
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; allowed: {', '.join(WORKLOADS)}")
        with self._lock:
            if workload not in self._made:
                self._made[workload] = self._make(workload)
            return self._made[workload]

    def for_db(self, db: int) -> Self:
        """The same workload clients on another db of this tier (own pools; never SELECT)."""
        check_db(self.tier, db)
        with self._lock:
            if db not in self._views:
                view = type(self)(self.tier, max_block=self.max_block, db=db)
                view._views = self._views
                view._lock = self._lock
                self._views[db] = view
            return self._views[db]

    def _make(self, workload: Workload) -> C:
        options = workload_options(self.tier, workload, self.max_block)
        guard = Guard(workload, client_name(self.tier.app, workload), self.max_block)
        retry = self.retry_class(backoff(), RETRIES)
        if self.tier.mode == "cluster":
            # host:port first, then every node the plan knows: the client starts from
            # whichever answers, and learns the slots' owners from it.
            seeds = [self.cluster_node_class(h, p) for h, p in self.tier.cluster_addresses]
            return self.cluster_class(
                host=self.tier.host,
                port=self.tier.port,
                startup_nodes=seeds,
                ssl=self.tier.tls,
                retry=retry,
                vp_guard=guard,
                **options,
            )
        if self.tier.mode == "sentinel":
            # Sentinel names the primary; the pool asks again after a failover, so the
            # same client follows the group to its new primary.
            pool = self.sentinel_pool_class(
                self.tier.sentinel_name, self._sentinels(), db=self.db, retry=retry, **options
            )
            return self.standalone_class(connection_pool=pool, vp_guard=guard)
        pool = self.pool_class(
            connection_class=self.ssl_connection_class if self.tier.tls else self.connection_class,
            host=self.tier.host,
            port=self.tier.port,
            db=self.db,
            retry=retry,
            **options,
        )
        return self.standalone_class(connection_pool=pool, vp_guard=guard)

    def _sentinels(self) -> Any:
        """One Sentinel manager per tier, shared by every workload and db view."""
        root = self._views[min(self._views)]
        if root._sentinel is None:
            password = self.tier.sentinel_password
            root._sentinel = self.sentinel_class(
                self.tier.sentinel_addresses,
                sentinel_kwargs={
                    "password": password.get_secret_value() if password else None,
                    "socket_timeout": 1.0,
                    "socket_connect_timeout": 1.0,
                },
            )
        return root._sentinel

    def _made_everywhere(self) -> list[C]:
        with self._lock:
            return [c for view in self._views.values() for c in view._made.values()]


class RetryOnCheckout:
    """Mixin for pools: also retry while handing out a connection.

    valkey-py retries a command whose connection broke, but not the reconnect that
    `get_connection` makes for a pooled connection found dead (redis-py#1789), so a
    server restart surfaces as ConnectionError to the caller. This closes that gap
    with the same Retry policy.
    """

    def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Connection:
        try:
            return super().get_connection(command_name, *keys, **options)
        except PERMANENT_ERRORS:
            raise
        except (ValkeyConnectionError, ValkeyTimeoutError):
            pass
        get = super().get_connection
        retry: WorkloadRetry = copy.deepcopy(self.connection_kwargs["retry"])
        return retry.call_with_retry(lambda: get(command_name, *keys, **options), lambda _: None)


class RetryingConnectionPool(RetryOnCheckout, valkey.ConnectionPool):
    """A standalone pool that retries while handing out a connection."""


class RetryingSentinelPool(RetryOnCheckout, SentinelConnectionPool):
    """A pool on the primary Sentinel names, retrying across a failover."""


class WorkloadValkey(GuardedMixin, valkey.Valkey):
    """A standalone valkey-py client that enforces its workload's guard."""


class WorkloadValkeyCluster(GuardedMixin, valkey.ValkeyCluster):
    """A cluster valkey-py client that enforces its workload's guard."""


class Clients(WorkloadClients[WorkloadValkey | WorkloadValkeyCluster]):
    """The sync workload clients of one tier: `Clients(load_settings().hosted).api.get(k)`."""

    pool_class = RetryingConnectionPool
    connection_class = Connection
    ssl_connection_class = SSLConnection
    retry_class = WorkloadRetry
    standalone_class = WorkloadValkey
    cluster_class = WorkloadValkeyCluster
    cluster_node_class = valkey.cluster.ClusterNode
    sentinel_class = Sentinel
    sentinel_pool_class = RetryingSentinelPool

    def close(self) -> None:
        """Close every pool made by this object and its `for_db` views."""
        for client in self._made_everywhere():
            if isinstance(client, WorkloadValkey):
                client.connection_pool.disconnect()
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
