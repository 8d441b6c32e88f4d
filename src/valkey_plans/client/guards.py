"""What each workload client may send: the one place that keeps the workloads apart.

A blocking call on the api pool parks a connection the web requests need; a SELECT
moves a pooled connection to another db for whoever borrows it next; a subscribe
turns a connection into a push-only socket. These rules are checked before a
command reaches the pool, identically for the sync and the asyncio clients, for
standalone and cluster, and inside pipelines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from valkey_plans.client.settings import Workload

#: Longest block the blocking client accepts by default (seconds); its socket
#: timeout is this plus a margin, so a permitted block never looks like a dead server.
DEFAULT_MAX_BLOCK = 30.0


class CommandRefused(ValueError):
    """A command sent on a workload client that must not run it."""


def _number(value: Any) -> float:
    return float(value.decode() if isinstance(value, bytes | bytearray) else value)


def _seconds(value: Any) -> float:
    seconds = _number(value)
    return math.inf if seconds == 0 else seconds


def _millis(value: Any) -> float:
    return _seconds(_number(value) / 1000)


def _word(value: Any) -> str:
    return (value.decode() if isinstance(value, bytes | bytearray) else str(value)).upper()


def _xread_block(args: Sequence[Any]) -> float | None:
    """XREAD/XREADGROUP block only with a BLOCK option before STREAMS."""
    for position, arg in enumerate(args[1:], start=1):
        word = _word(arg)
        if word == "STREAMS":
            return None
        if word == "BLOCK" and position + 1 < len(args):
            return _millis(args[position + 1])
    return None


#: Blocking commands and how long each call may block (seconds; inf = forever; None = won't).
BLOCKING_COMMANDS: dict[str, Callable[[Sequence[Any]], float | None]] = {
    "BLPOP": lambda a: _seconds(a[-1]),
    "BRPOP": lambda a: _seconds(a[-1]),
    "BRPOPLPUSH": lambda a: _seconds(a[-1]),
    "BLMOVE": lambda a: _seconds(a[-1]),
    "BZPOPMIN": lambda a: _seconds(a[-1]),
    "BZPOPMAX": lambda a: _seconds(a[-1]),
    "BLMPOP": lambda a: _seconds(a[1]),
    "BZMPOP": lambda a: _seconds(a[1]),
    "XREAD": _xread_block,
    "XREADGROUP": _xread_block,
    "WAIT": lambda a: _millis(a[-1]),
    "WAITAOF": lambda a: _millis(a[-1]),
}

#: WAIT/WAITAOF must run on the connection that wrote, so the api client may send them,
#: with a timeout of at most API_WAIT_MAX seconds (never 0, which waits forever).
DURABILITY_BARRIERS = frozenset({"WAIT", "WAITAOF"})
API_WAIT_MAX = 1.0

#: Commands that turn a connection into a push channel; only `pubsub()` may do that.
SUBSCRIBE_COMMANDS = frozenset(
    {
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "MONITOR",
    }
)

#: What the subscriber client runs besides `pubsub()`.
SUBSCRIBER_COMMANDS = frozenset({"PUBLISH", "SPUBLISH", "PUBSUB", "PING"})


@dataclass(frozen=True)
class Guard:
    """The rules of one workload client; `name` is its client name, used in messages."""

    workload: Workload
    name: str
    max_block: float = DEFAULT_MAX_BLOCK

    def check(self, args: Sequence[Any]) -> None:
        """Raise `CommandRefused` unless this workload may send `args`."""
        if not args:
            return
        command = _word(args[0]).split()[0]
        if command == "SELECT":
            raise CommandRefused(
                f"SELECT refused on {self.name}: the db comes from settings (VALKEY_DB, or "
                "Clients.for_db(n) for another db of the same tier); a SELECT would move a "
                "pooled connection to another db for whoever borrows it next"
            )
        if self.workload == "subscriber":
            if command not in SUBSCRIBER_COMMANDS:
                raise CommandRefused(
                    f"{command} refused on {self.name}: the subscriber client only runs "
                    f"pubsub() and {', '.join(sorted(SUBSCRIBER_COMMANDS))}; "
                    "use clients.api (or clients.background for bulk work)"
                )
            return
        if command in SUBSCRIBE_COMMANDS:
            raise CommandRefused(
                f"{command} refused on {self.name}: subscriptions belong to the subscriber "
                "client: clients.subscriber.pubsub()"
            )
        block = self._block_seconds(command, args)
        if block is None:
            return
        if command in DURABILITY_BARRIERS and self.workload == "api" and 0 < block <= API_WAIT_MAX:
            return  # a short, bounded barrier after writes that must not be lost
        if self.workload != "blocking":
            raise CommandRefused(
                f"{command} refused on {self.name}: it blocks a pooled connection; "
                "send blocking commands on the blocking client (clients.blocking)"
            )
        if block > self.max_block:
            shown = "forever (timeout 0)" if math.isinf(block) else f"{block:g} s"
            raise CommandRefused(
                f"{command} would block {shown} but {self.name} allows at most "
                f"{self.max_block:g} s (its socket timeout is set just above that); "
                "pass a shorter timeout and loop, or raise Clients(max_block=...)"
            )

    def check_pubsub(self) -> None:
        """Only the subscriber hands out PubSub objects (they hold a connection for good)."""
        if self.workload != "subscriber":
            raise CommandRefused(
                f"pubsub() refused on {self.name}: subscriptions belong to the subscriber "
                "client: clients.subscriber.pubsub()"
            )

    def _block_seconds(self, command: str, args: Sequence[Any]) -> float | None:
        timeout_of = BLOCKING_COMMANDS.get(command)
        if timeout_of is None:
            return None
        try:
            return timeout_of(args)
        except (IndexError, ValueError, TypeError):
            raise CommandRefused(
                f"{command} refused on {self.name}: cannot read its timeout from the arguments"
            ) from None


class GuardedMixin:
    """Put in front of a valkey-py client class (sync or asyncio, standalone or cluster).

    The check runs when the command method is called, before any I/O, so for asyncio
    clients the refusal is raised by the call itself, before the await. Commands the
    library sends while the client is being constructed (a cluster client asks for
    COMMAND and the slot map) pass; afterwards a client without a guard refuses all.
    """

    _vp_guard: Guard | None = None
    _vp_armed = False

    def __init__(self, *args: Any, vp_guard: Guard | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._vp_guard = vp_guard
        self._vp_armed = True

    def _vp_rules(self) -> Guard | None:
        if self._vp_guard is None and self._vp_armed:
            raise CommandRefused(
                f"{type(self).__name__} has no workload guard: get clients from "
                "valkey_plans.client.clients.Clients (or AsyncClients), not by copying one"
            )
        return self._vp_guard

    def _vp_check(self, args: Sequence[Any]) -> None:
        rules = self._vp_rules()
        if rules is not None:
            rules.check(args)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self._vp_check(args)
        return super().execute_command(*args, **options)  # type: ignore[misc]

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        """Pipelines queue through their own execute_command; guard that one too."""
        pipe = super().pipeline(*args, **kwargs)  # type: ignore[misc]
        queue = pipe.execute_command
        check = self._vp_check

        def execute_command(*command: Any, **options: Any) -> Any:
            check(command)
            return queue(*command, **options)

        pipe.execute_command = execute_command
        return pipe

    def pubsub(self, **kwargs: Any) -> Any:
        rules = self._vp_rules()
        if rules is not None:
            rules.check_pubsub()
        return super().pubsub(**kwargs)  # type: ignore[misc]

    def monitor(self) -> Any:
        raise CommandRefused(
            "MONITOR refused on application clients: it streams every command of the "
            "server over one connection; run `valkey-cli monitor` as an operator instead"
        )
