"""One command layer for sync and asyncio: a `Call` says what to send, a runner sends it.

As in valkey-py, whose `valkey/commands/core.py` serves both `Valkey` and
`asyncio.Valkey`: everything that checks input, names keys and encodes values builds a
`Call` without any I/O, and one small runner per flavour sends it. The sync runner
returns the parsed reply; the asyncio runner returns an awaitable of it. So a method
written once as `return self.run(call)` is a plain call on a sync client and an
awaitable on an asyncio one, and bad input raises at the call itself, before any await
and before anything is sent.

The flavour is chosen once, when a runner is made for a client (`runner(client)`),
never per call: the sync path is the method, the runner and valkey-py's
`execute_command`, as many layers as a hand-written `client.execute_command(...)` helper.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import valkey
import valkey.asyncio
from valkey.exceptions import ResponseError
from valkey.sentinel import SentinelConnectionPool

T = TypeVar("T")
U = TypeVar("U")

#: What a command method returns: the value on a sync client, an awaitable of it on an
#: asyncio one (valkey-py's `ResponseT`, with the value's type kept).
Reply = T | Awaitable[T]
ASYNC_CLIENTS = (valkey.asyncio.Valkey, valkey.asyncio.ValkeyCluster)
#: The valkey-py clients a runner drives: either flavour, standalone or cluster.
Client = valkey.Valkey | valkey.ValkeyCluster | valkey.asyncio.Valkey | valkey.asyncio.ValkeyCluster


@dataclass(slots=True)
class Call(Generic[T]):
    """One round trip: the command to send, the parser of its reply, and, for a call
    whose error reply is an answer (no library loaded), what that error means.

    `before` are commands sent ahead of `command` in the same round trip (a cache hit's
    touch): their replies are read and dropped, and an error reply of any of them
    raises (or is `refused`) as the command's own would. `wire`, when given, is those
    commands already in RESP (a builder on the hot path packs its constant parts once);
    the sync runner sends it as it is, on its parked connection (`_Lane`), and the
    parser gets the raw reply (a wire is only for commands valkey-py leaves raw). A
    `wire` that opens with SKIP_REPLY carries one `before` command whose reply the
    server skips (CLIENT REPLY SKIP), so only the command's own reply comes back:
    reading a reply costs the client more than the server's touch does.
    (Not frozen: a frozen dataclass costs a microsecond per call to build, a tenth of a
    cache hit's budget.)
    """

    command: tuple[str | int, ...]
    parse: Callable[[Any], T]
    refused: Callable[[ResponseError], T] | None = None
    before: tuple[tuple[str | int, ...], ...] = ()
    wire: bytes = b""

    def then(self, after: Callable[[T], U]) -> Call[U]:
        """The same round trip with `after` applied to its result, so work that needs the
        reply (checking a version, returning the object it guards) runs in either flavour."""
        parse, refused = self.parse, self.refused
        return Call(
            self.command,
            lambda reply: after(parse(reply)),
            None if refused is None else lambda error: after(refused(error)),
            self.before,
        )


def fcall(
    function: str, keys: Sequence[str], args: Sequence[str | int], reply: Callable[[Any], T]
) -> Call[T]:
    """FCALL of a Functions library function: the key count is derived, never written."""
    return Call(("FCALL", function, len(keys), *keys, *args), reply)


def _refusal(call: Call[T], error: ResponseError) -> T:
    """What an error reply means for `call`; raised again when it means nothing."""
    if call.refused is None:
        raise error
    return call.refused(error)


def _commands(call: Call[Any]) -> tuple[tuple[str | int, ...], ...]:
    return (*call.before, call.command)


def _pipelined(client: Client, calls: Iterable[Call[Any]]) -> tuple[list[Call[Any]], Any]:
    """The calls, queued on a new pipeline of `client` (its execute is the one I/O step)."""
    calls = list(calls)
    pipe = client.pipeline(transaction=False)
    for call in calls:
        for command in _commands(call):
            pipe.execute_command(*command)
    return calls, pipe


def _parsed(calls: Sequence[Call[Any]], replies: Sequence[Any]) -> list[Any]:
    """Each call's parsed reply: the reply of its command, after those of its `before`."""
    parsed, end = [], 0
    for call in calls:
        end += len(call.before) + 1
        parsed.append(call.parse(replies[end - 1]))
    if end != len(replies):
        raise ValueError(f"{len(replies)} replies to {end} commands")
    return parsed


def _last(call: Call[T], replies: Sequence[Any]) -> T:
    """The parsed reply of `call.command`; the first error reply among all raises."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            return _refusal(call, reply)
    return call.parse(replies[-1])


def _packed(commands: Sequence[tuple[str | int, ...]]) -> bytes:
    """RESP of `commands` as one buffer, so they leave in one write (valkey-py's
    pack_commands makes a list of chunks, sent one syscall each, and is slower)."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        out.extend(bulk(arg if isinstance(arg, str) else str(arg)) for arg in command)
    return b"".join(out)


def bulk(text: str) -> bytes:
    """One RESP bulk string (for builders that pack their constant parts once)."""
    data = text.encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


#: RESP of CLIENT REPLY SKIP: the server sends no reply to it nor to the next command.
SKIP_REPLY = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP\r\n"


def _exchange(conn: Any, commands: Sequence[tuple[str | int, ...]], wire: bytes) -> list[Any]:
    """Write all commands at once and read every reply, errors included (so the
    connection is never left with unread replies); a SKIP_REPLY wire has only the last."""
    conn.send_packed_command([wire or _packed(commands)])
    replies: list[Any] = []
    for _ in commands[-1:] if wire.startswith(SKIP_REPLY) else commands:
        try:
            replies.append(conn.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


#: Bumped in a forked child, whose copy of a parked connection is its parent's socket.
_FORKS = [0]
os.register_at_fork(after_in_child=lambda: _FORKS.__setitem__(0, _FORKS[0] + 1))


def _parks(client: Client) -> bool:
    """Whether a runner may keep one connection of `client`'s pool checked out between
    round trips. Not for a pool that bounds its connections by blocking (a parked one
    would starve its other users), nor for Sentinel's, which drops a connection to a
    former primary only when it comes back to the pool."""
    pool = getattr(client, "connection_pool", None)
    return (
        isinstance(client, valkey.Valkey)
        and client.connection is None
        and isinstance(pool, valkey.ConnectionPool)
        and not isinstance(pool, (valkey.BlockingConnectionPool, SentinelConnectionPool))
    )


class _Lane:
    """A round trip's connection: one kept checked out from the pool between round
    trips (its checkout costs a lock and a poll syscall, a tenth of a GET on loopback),
    else the pool's. A connection is parked only after a round trip that read every
    reply, so a parked one holds no unread data; any failure hands it back to the pool,
    whose checkout checks it again. The parked one stays counted by the pool, which
    closes it with the others (`client.close()`); a fork forgets it."""

    __slots__ = ("client", "pool", "parks", "spare", "forks")

    def __init__(self, client: valkey.Valkey) -> None:
        self.client = client
        self.pool = client.connection_pool
        self.parks = _parks(client)
        self.spare: list[Any] = []
        self.forks = _FORKS[0]

    def __del__(self) -> None:
        # at interpreter exit the pool may be half torn down; it closes with the process
        with contextlib.suppress(Exception):
            if self.spare and self.forks == _FORKS[0]:
                self.pool.release(self.spare.pop())

    def round_trip(self, commands: Sequence[tuple[str | int, ...]], wire: bytes) -> list[Any]:
        """Several commands in one round trip, with the client's retry policy and no
        per-command layers: what a cache hit pays for is its round trip, not valkey-py's
        pipeline object (a plain GET pays the same)."""
        client = self.client
        conn = client.connection or self._take(str(commands[-1][0]))
        try:
            replies = conn.retry.call_with_retry(
                lambda: _exchange(conn, commands, wire),
                lambda error: client._disconnect_raise(conn, error),
            )
        except BaseException:
            if not client.connection:
                self.pool.release(conn)
            raise
        if not client.connection:
            self._give(conn)
        return replies

    def _take(self, name: str) -> Any:
        if self.spare and self.forks == _FORKS[0]:
            try:
                return self.spare.pop()
            except IndexError:  # another thread took it
                pass
        return self.pool.get_connection(name)

    def _give(self, conn: Any) -> None:
        if self.forks != _FORKS[0]:
            self.spare, self.forks = [], _FORKS[0]
        if self.parks and not self.spare:
            self.spare.append(conn)
        else:
            self.pool.release(conn)


class Runner(Protocol):
    """Sends calls on one client; `run` and `run_many` return `Reply`s of its flavour.

    A pipeline (`run_many`) raises its first error reply, as valkey-py's does:
    `Call.refused` applies to `run`.
    """

    client: Any

    def run(self, call: Call[T]) -> Reply[T]: ...

    def run_many(self, calls: Iterable[Call[Any]]) -> Reply[list[Any]]: ...


class _OnClient:
    """What both runners hold: the client, and its `execute_command` looked up once."""

    __slots__ = ("client", "_execute")

    def __init__(self, client: Client) -> None:
        self.client = client
        self._execute = client.execute_command


class SyncRunner(_OnClient):
    """Runs calls on a sync valkey-py client and returns their parsed replies."""

    __slots__ = ("_lane",)

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self._lane = _Lane(client) if isinstance(client, valkey.Valkey) else None

    def run(self, call: Call[T]) -> T:
        """Send one call (the hot path: one frame between the caller and valkey-py)."""
        if call.before:
            return _last(call, self._round(_commands(call), call.wire))
        if call.wire and self._lane is not None:
            return _last(call, self._lane.round_trip((call.command,), call.wire))
        try:
            return call.parse(self._execute(*call.command))
        except ResponseError as error:
            return _refusal(call, error)

    def _round(self, commands: Sequence[tuple[str | int, ...]], wire: bytes) -> list[Any]:
        if self._lane is not None:
            return self._lane.round_trip(commands, wire)
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)

    def run_many(self, calls: Iterable[Call[Any]]) -> list[Any]:
        """Send calls in one pipeline (one round trip, not a transaction)."""
        calls, pipe = _pipelined(self.client, calls)
        return _parsed(calls, pipe.execute())


class AsyncRunner(_OnClient):
    """Runs calls on a valkey.asyncio client: each run is a coroutine to await."""

    __slots__ = ()

    async def run(self, call: Call[T]) -> T:
        if call.before:
            pipe = self.client.pipeline(transaction=False)
            for command in _commands(call):
                pipe.execute_command(*command)
            return _last(call, await pipe.execute(raise_on_error=False))
        try:
            reply = await self._execute(*call.command)
        except ResponseError as error:
            return _refusal(call, error)
        return call.parse(reply)

    async def run_many(self, calls: Iterable[Call[Any]]) -> list[Any]:
        calls, pipe = _pipelined(self.client, calls)
        return _parsed(calls, await pipe.execute())


def runner(client: Client) -> SyncRunner | AsyncRunner:
    """The runner of `client`'s flavour: chosen once here, never per call."""
    return AsyncRunner(client) if isinstance(client, ASYNC_CLIENTS) else SyncRunner(client)


def run(client: Client, call: Call[T]) -> Reply[T]:
    """Send one call on any client (for one-off calls; a cache keeps its runner)."""
    return runner(client).run(call)


def run_many(client: Client, calls: Iterable[Call[Any]]) -> Reply[list[Any]]:
    """Send calls in one pipeline on any client (one round trip, not a transaction)."""
    return runner(client).run_many(calls)
