"""One client per workload, so a blocking call or a subscriber never stalls API traffic.

`Clients(tier)` exposes `api`, `blocking`, `subscriber` and `background`. Each is made
on first use with its own connection pool (one pool per (db, workload)), its own
client name `<app>:<workload>` as seen in CLIENT LIST, its own ACL login, timeouts
that fit the workload, retries with exponential backoff on connection loss and
periodic health checks. `AsyncClients(tier)` is the same wiring on valkey.asyncio:
`await clients.api.get(k)`, `await clients.aclose()` on shutdown.

One implementation serves both flavours: the options, names, guards, retry policy
and the standalone, cluster and sentinel modes live in `WorkloadClients`; a `Flavour`
only names the valkey-py classes (valkey-py keeps the asyncio ones under the same names
in valkey.asyncio, so one `flavour()` reads either package). The pool's checkout retry
is the one piece of I/O written per flavour.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any, ClassVar, Generic, NoReturn, Self, TypeVar, overload

import valkey
import valkey.asyncio
from valkey.backoff import ExponentialBackoff
from valkey.exceptions import AuthenticationError, AuthorizationError, ClusterDownError
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from valkey_plans.client.guards import DEFAULT_MAX_BLOCK, CommandRefused, Guard, GuardedMixin
from valkey_plans.client.settings import WORKLOADS, TierSettings, Workload
from valkey_plans.client.switch_watch import SwitchWatch

__all__ = [
    "ASYNC",
    "DEFAULT_MAX_BLOCK",
    "SYNC",
    "AsyncClients",
    "Clients",
    "Flavour",
    "CommandRefused",
    "WorkloadClients",
    "client_name",
    "workload_options",
]

#: Seconds the blocking client's socket waits beyond its longest permitted block.
BLOCK_MARGIN = 5.0
#: Backoff between reconnect attempts; how long they go on is the tier's `retry_budget`.
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
#: A cluster call retries sooner: the slot's new owner is one topology refresh away.
CLUSTER_BACKOFF_CAP = 0.5
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


class FailFast:
    """Mixin for valkey-py's Retry, either flavour: retries end when the budget (seconds
    from the first failure's call) is spent, and a rejected login is raised at once.

    valkey-py counts attempts; a count cannot bound a stall, because one attempt on a
    vanished host costs a whole connect timeout while one on a restarting server costs
    nothing. The count is left unlimited (-1) and the time decides.
    """

    budget: float = 0.0

    def call_with_retry(self, do: Callable[[], Any], fail: Callable[[Exception], Any]) -> Any:
        deadline = time.monotonic() + self.budget
        return super().call_with_retry(do, partial(_fail_fast, fail, deadline))  # type: ignore[misc]


def _fail_fast(fail: Callable[[Exception], Any], deadline: float, error: Exception) -> Any:
    """Run valkey-py's failure handler (it drops the connection), then stop on a permanent
    error or a spent budget; the asyncio Retry awaits what this returns, so there the
    raise is awaited too."""
    outcome = fail(error)
    if not isinstance(error, PERMANENT_ERRORS) and time.monotonic() < deadline:
        return outcome
    if inspect.isawaitable(outcome):
        return _raise_after(outcome, error)
    raise error


async def _raise_after(outcome: Awaitable[Any], error: Exception) -> NoReturn:
    await outcome
    raise error


#: What a cluster call rides out within the budget: a lost node (valkey-py has already
#: refreshed the slot map when it raises) or a slot with no serving primary yet. Timeouts
#: are not retried: a timed-out command may have run on the server.
CLUSTER_RETRIED = (ValkeyConnectionError, ClusterDownError)


def _cluster_pause(failures: int, deadline: float) -> float:
    """The wait before the next cluster attempt, or 0 when the budget is spent."""
    pause = min(CLUSTER_BACKOFF_CAP, BACKOFF_BASE * 2**failures)
    return pause if time.monotonic() + pause < deadline else 0.0


class BudgetedCluster:
    """Mixin for the sync cluster client: a call retries a lost node for `vp_budget` s.

    valkey-py's own loop retries a fixed count with no pause, so a failover of a few
    seconds either outlasts it or, with a node's connect retries underneath, stalls for
    their product; here each node gets one connect attempt and the time decides.
    """

    vp_budget: float = 0.0

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.vp_budget
        for failures in itertools.count(1):
            try:
                return super().execute_command(*args, **kwargs)  # type: ignore[misc]
            except CLUSTER_RETRIED:
                pause = _cluster_pause(failures, deadline)
                if not pause:
                    raise
                time.sleep(pause)
        raise AssertionError("unreachable")


class AsyncBudgetedCluster:
    """`BudgetedCluster` for valkey.asyncio's cluster client."""

    vp_budget: float = 0.0

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.vp_budget
        for failures in itertools.count(1):
            try:
                return await super().execute_command(*args, **kwargs)  # type: ignore[misc]
            except CLUSTER_RETRIED:
                pause = _cluster_pause(failures, deadline)
                if not pause:
                    raise
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class WorkloadProfile:
    """Timeouts of one workload (seconds; None waits as long as the socket stays up)."""

    socket_timeout: float | None


def profile(workload: Workload, max_block: float, api_timeout: float) -> WorkloadProfile:
    """api fails fast (the tier's VALKEY_COMMAND_TIMEOUT); blocking outlasts its longest
    block; subscriber idles; background waits."""
    return {
        "api": WorkloadProfile(socket_timeout=api_timeout),
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
    timeouts = profile(workload, max_block, tier.command_timeout)
    options: dict[str, Any] = {
        "username": login.user,
        "password": login.password.get_secret_value() if login.password else None,
        "client_name": client_name(tier.app, workload),
        "socket_timeout": timeouts.socket_timeout,
        "socket_connect_timeout": tier.connect_timeout,
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

#: What a pool retries while handing out a connection: a server lost or not ready yet.
CHECKOUT_ERRORS = (ValkeyConnectionError, ValkeyTimeoutError)


def _checkout_retry(pool: Any, error: Exception) -> Any:
    """The pool's own Retry policy for another checkout after `error` (a copy, as each
    connection takes one); a rejected login is raised at once instead."""
    if isinstance(error, PERMANENT_ERRORS):
        raise error
    return copy.deepcopy(pool.connection_kwargs["retry"])


def _ignore(error: Exception) -> None:
    """A failed checkout needs no clean-up here: the pool has released the connection."""


async def _aignore(error: Exception) -> None:
    """`_ignore` for the asyncio Retry, which awaits its failure handler."""


class RetryOnCheckout:
    """Mixin for sync pools: also retry while handing out a connection.

    valkey-py retries a command whose connection broke, but not the reconnect that
    `get_connection` makes for a pooled connection found dead (redis-py#1789), so a
    server restart surfaces as ConnectionError to the caller. This closes that gap
    with the same Retry policy; a checkout that works costs one frame, no more.
    """

    def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Any:
        get = super().get_connection  # type: ignore[misc]
        try:
            return get(command_name, *keys, **options)
        except CHECKOUT_ERRORS as error:
            retry = _checkout_retry(self, error)
        return retry.call_with_retry(partial(get, command_name, *keys, **options), _ignore)


class AsyncRetryOnCheckout:
    """`RetryOnCheckout` for valkey.asyncio pools, whose checkout is a coroutine."""

    async def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Any:
        get = super().get_connection  # type: ignore[misc]
        try:
            return await get(command_name, *keys, **options)
        except CHECKOUT_ERRORS as error:
            retry = _checkout_retry(self, error)
        return await retry.call_with_retry(partial(get, command_name, *keys, **options), _aignore)


class NamedSSLConnection(valkey.SSLConnection):
    """A TLS connection that checks the certificate for `ssl_server_name`, not the address
    it connects to: valkey-py sends its `host` as SNI and hostname, and a managed service
    reached by IP or through another name (VALKEY_TLS_SERVERNAME) carries its own name."""

    def __init__(self, *, ssl_server_name: str, **kwargs: Any) -> None:
        self.server_name = ssl_server_name
        super().__init__(**kwargs)

    def _wrap_socket_with_ssl(self, sock: socket.socket) -> Any:
        address, self.host = self.host, self.server_name
        try:
            return super()._wrap_socket_with_ssl(sock)
        finally:
            self.host = address


class AsyncNamedSSLConnection(valkey.asyncio.SSLConnection):
    """`NamedSSLConnection` for valkey.asyncio, where asyncio takes the name as an argument."""

    def __init__(self, *, ssl_server_name: str, **kwargs: Any) -> None:
        self.server_name = ssl_server_name
        super().__init__(**kwargs)

    def _connection_arguments(self) -> Any:
        return {**super()._connection_arguments(), "server_hostname": self.server_name}


class SentinelConnection(valkey.sentinel.SentinelManagedConnection):
    """One connect attempt per address Sentinel names. valkey-py retries the connect to
    that same address inside the pool's retry, so a lost primary would be tried for the
    whole budget before Sentinel is asked again; here the budgeted retry asks Sentinel
    before each attempt, and the new primary is used as soon as Sentinel names it."""

    def connect_to(self, address: tuple[str, int]) -> None:
        budget, self.retry = self.retry, SYNC.retry(backoff(), 0)
        try:
            super().connect_to(address)
        finally:
            self.retry = budget


class SentinelSSLConnection(SentinelConnection, valkey.SSLConnection):
    """`SentinelConnection` over TLS."""


class AsyncSentinelConnection(valkey.asyncio.sentinel.SentinelManagedConnection):
    """`SentinelConnection` for valkey.asyncio."""

    async def connect_to(self, address: tuple[str, int]) -> None:
        budget, self.retry = self.retry, ASYNC.retry(backoff(), 0)
        try:
            await super().connect_to(address)
        finally:
            self.retry = budget


class AsyncSentinelSSLConnection(AsyncSentinelConnection, valkey.asyncio.SSLConnection):
    """`AsyncSentinelConnection` over TLS."""


@dataclass(frozen=True)
class Flavour:
    """The classes one flavour of workload clients is made of (the wiring is in
    `WorkloadClients`): ours, and `library` (valkey or valkey.asyncio) for the rest:
    Connection, SSLConnection, Sentinel and cluster.ClusterNode."""

    library: ModuleType
    standalone: type
    cluster: type
    pool: type
    sentinel_pool: type
    retry: type
    #: The client method that closes a client: `close`, or `aclose` to await.
    close: str
    #: The TLS connection that checks a certificate by VALKEY_TLS_SERVERNAME.
    named_ssl: type
    #: The sentinel pool's connection classes, plain and TLS (by `tier.tls`).
    sentinel_connections: tuple[type, type]


def flavour(
    library: ModuleType,
    checkout: type,
    budgeted: type,
    close: str,
    prefix: str,
    named_ssl: type,
    sentinel: tuple[type, type],
) -> Flavour:
    """Our classes on `library`'s: the guard on the clients, `checkout` on the pools,
    `budgeted` on the cluster client and fail-fast on the Retry, written once for both
    flavours (named `<prefix>WorkloadValkey`...).
    """

    class WorkloadValkey(GuardedMixin, library.Valkey):
        """A standalone valkey-py client that enforces its workload's guard."""

    class WorkloadValkeyCluster(GuardedMixin, budgeted, library.ValkeyCluster):
        """A cluster valkey-py client that enforces its workload's guard and retries a
        lost node within the tier's budget."""

    class RetryingConnectionPool(checkout, library.ConnectionPool):
        """A standalone pool that retries while handing out a connection."""

    class RetryingSentinelPool(checkout, library.sentinel.SentinelConnectionPool):
        """A pool on the primary Sentinel names, retrying across a failover."""

    class WorkloadRetry(FailFast, library.retry.Retry):
        """valkey-py's Retry, except that a rejected login is raised at once."""

    made = (WorkloadValkey, WorkloadValkeyCluster, RetryingConnectionPool, RetryingSentinelPool)
    for cls in (*made, WorkloadRetry):
        cls.__name__ = cls.__qualname__ = f"{prefix}{cls.__name__}"
    # in the order of Flavour's fields
    return Flavour(library, *made, WorkloadRetry, close, named_ssl, sentinel)


SYNC = flavour(
    valkey,
    RetryOnCheckout,
    BudgetedCluster,
    "close",
    "",
    NamedSSLConnection,
    (SentinelConnection, SentinelSSLConnection),
)
ASYNC = flavour(
    valkey.asyncio,
    AsyncRetryOnCheckout,
    AsyncBudgetedCluster,
    "aclose",
    "Async",
    AsyncNamedSSLConnection,
    (AsyncSentinelConnection, AsyncSentinelSSLConnection),
)


class WorkloadClient:
    """`clients.api` is `clients.get("api")`: one attribute per workload, its doc beside it."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.workload = name

    @overload
    def __get__(self, clients: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, clients: WorkloadClients[C], owner: type | None = None) -> C: ...

    def __get__(self, clients: WorkloadClients[C] | None, owner: type | None = None) -> Any:
        return self if clients is None else clients.get(self.workload)


class WorkloadClients(Generic[C]):
    """The four workload clients of one tier and db; a subclass names its `flavour`."""

    flavour: ClassVar[Flavour]

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
        self._sentinel_pools: list[Any] = []
        self._watch: SwitchWatch | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(app={self.tier.app!r}, {self.tier.mode} "
            f"{self.tier.host}:{self.tier.port}, db={self.db}, made={sorted(self._made)})"
        )

    api = WorkloadClient("Fast non-blocking commands of request handlers; blocking ones refused.")
    blocking = WorkloadClient("BLPOP/BLMOVE/XREAD BLOCK and friends, bounded by `max_block`.")
    subscriber = WorkloadClient("pub/sub only: `subscriber.pubsub()`, PUBLISH, PUBSUB.")
    background = WorkloadClient("Scans and bulk pipelines, on connections the api never waits on.")

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
        kinds, tier = self.flavour, self.tier
        retry = self._retry(tier.retry_budget)
        if tier.mode == "cluster":
            return self._cluster(options, guard)
        if tier.mode == "sentinel":
            # Sentinel names the primary; the pool asks again after a failover, so the
            # same client follows the group to its new primary.
            pool = kinds.sentinel_pool(
                tier.sentinel_name,
                self._sentinels(),
                db=self.db,
                retry=retry,
                connection_class=kinds.sentinel_connections[tier.tls],
                **options,
            )
            self._watched(pool)
            return kinds.standalone(connection_pool=pool, vp_guard=guard)
        connection = kinds.library.SSLConnection if tier.tls else kinds.library.Connection
        if tier.tls and tier.tls_servername:
            connection = kinds.named_ssl
            options["ssl_server_name"] = tier.tls_servername
        pool = kinds.pool(
            connection_class=connection,
            host=tier.host,
            port=tier.port,
            db=self.db,
            retry=retry,
            **options,
        )
        return kinds.standalone(connection_pool=pool, vp_guard=guard)

    def _retry(self, budget: float) -> Any:
        """A Retry whose attempts end when `budget` seconds are spent (count unlimited)."""
        retry = self.flavour.retry(backoff(), -1 if budget else 0)
        retry.budget = budget
        return retry

    def _cluster(self, options: dict[str, Any], guard: Guard) -> C:
        """A cluster client: host:port first, then every node the plan knows, so it starts
        from whichever answers and learns the slots' owners from it. A node gets one
        connect attempt and valkey-py's own retry count is off: the client's budgeted
        loop refreshes the slot map between attempts, which a node's retries never do."""
        kinds, tier = self.flavour, self.tier
        seeds = [kinds.library.cluster.ClusterNode(h, p) for h, p in tier.cluster_addresses]
        client = kinds.cluster(
            host=tier.host,
            port=tier.port,
            startup_nodes=seeds,
            ssl=tier.tls,
            retry=self._retry(0),
            cluster_error_retry_attempts=0,
            vp_guard=guard,
            **options,
        )
        client.vp_budget = tier.retry_budget
        return client

    def _sentinels(self) -> Any:
        """One Sentinel manager per tier, shared by every workload and db view."""
        root = self._views[min(self._views)]
        if root._sentinel is None:
            password = self.tier.sentinel_password
            root._sentinel = self.flavour.library.Sentinel(
                self.tier.sentinel_addresses,
                sentinel_kwargs={
                    "password": password.get_secret_value() if password else None,
                    "socket_timeout": 1.0,
                    "socket_connect_timeout": 1.0,
                },
            )
        return root._sentinel

    def _watched(self, pool: Any) -> None:
        """A sync Sentinel pool closes its connections when Sentinel names a new primary
        (client/switch_watch.py): one watch per tier, for every workload and db view."""
        if self.flavour is not SYNC:
            return
        root = self._views[min(self._views)]
        root._sentinel_pools.append(pool)
        if root._watch is None:
            sentinels = self._sentinels().sentinels
            pools = root._sentinel_pools
            root._watch = SwitchWatch(sentinels, self.tier.sentinel_name, lambda: list(pools))

    def _closers(self) -> Iterator[Callable[[], Any]]:
        """What closing every client of this object and its `for_db` views takes, in order:
        a standalone client's pool (passed in, so the client leaves it open), then the client."""
        with self._lock:
            made = [c for view in self._views.values() for c in view._made.values()]
        for client in made:
            if isinstance(client, self.flavour.standalone):
                yield client.connection_pool.disconnect
            yield getattr(client, self.flavour.close)


class Clients(WorkloadClients[valkey.Valkey | valkey.ValkeyCluster]):
    """The sync workload clients of one tier: `Clients(load_settings().hosted).api.get(k)`."""

    flavour = SYNC

    def close(self) -> None:
        """Close every pool made by this object and its `for_db` views (and stop the
        Sentinel switch watch first, so it closes nothing after)."""
        root = self._views[min(self._views)]
        if root._watch is not None:
            root._watch.close()
            root._watch = None
        for close in self._closers():
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClients(WorkloadClients[valkey.asyncio.Valkey | valkey.asyncio.ValkeyCluster]):
    """The asyncio workload clients of one tier: `await AsyncClients(tier).api.get(k)`."""

    flavour = ASYNC

    async def aclose(self) -> None:
        """`close`, awaited: call it on shutdown (or use `async with`)."""
        for close in self._closers():
            await close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
