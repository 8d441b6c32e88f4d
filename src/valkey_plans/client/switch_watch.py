"""Sentinel mode: when Sentinel announces a new primary, the tier's pooled connections are
closed, so that no call waits out its command timeout on a primary that stopped answering.

valkey-py's Sentinel pool asks Sentinel for the primary only when it connects. A pooled
connection to a primary whose host was cut off (no reset, no refusal) hangs until the
call's socket timeout (VALKEY_COMMAND_TIMEOUT), even once Sentinel has named another
primary: the lab measured a call begun after the failover failing 5.3 s later. Every
sentinel publishes `+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>` when
it learns of a failover. A thread subscribed to it closes every connection of the pools
(a shutdown wakes a call blocked on one: it fails as a lost connection, and the client's
retry budget reconnects it through Sentinel, to the new primary).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from valkey.exceptions import ValkeyError

#: Sentinel's channel of completed failovers.
SWITCH_CHANNEL = "+switch-master"
#: Seconds between looks at the stop flag while subscribed, and before subscribing again
#: after every sentinel failed.
POLL_SECONDS = 0.5
#: Seconds of quiet before the watch PINGs its sentinel, and then for the answer.
SILENT_SECONDS = 1.0


class SwitchWatch:
    """A daemon thread that listens on one sentinel at a time (the next when it fails)
    and, on a `+switch-master` of group `name`, disconnects every pool `pools()` gives."""

    def __init__(self, sentinels: list[Any], name: str, pools: Callable[[], list[Any]]) -> None:
        self.sentinels = sentinels
        self.name = name.encode()
        self.pools = pools
        self.switches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"valkey-plans switch watch {name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * POLL_SECONDS + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            for sentinel in self.sentinels:
                if self._stop.is_set():
                    return
                try:
                    self._listen(sentinel)
                except (ValkeyError, OSError):
                    continue  # that sentinel is gone: the next one tells the same
            self._stop.wait(POLL_SECONDS)

    def _listen(self, sentinel: Any) -> None:
        """Subscribed to one sentinel until it fails or stays silent: a sentinel on a host
        cut off sends no reset, so a PING after a quiet second must be answered within
        the next, or the watch moves on to another sentinel."""
        pubsub = sentinel.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(SWITCH_CHANNEL)
            heard, pinged = time.monotonic(), 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if pinged and now - pinged > SILENT_SECONDS:
                    raise ConnectionError(f"sentinel silent for {now - heard:.1f} s")
                if not pinged and now - heard > SILENT_SECONDS:
                    pubsub.ping()
                    pinged = now
                message = pubsub.get_message(timeout=POLL_SECONDS)
                if message is None:
                    continue
                heard, pinged = time.monotonic(), 0.0
                if message["type"] == "message" and self._ours(message["data"]):
                    self.switches += 1
                    for pool in self.pools():
                        pool.disconnect()
        finally:
            pubsub.close()

    def _ours(self, data: bytes | str) -> bool:
        """Whether a `+switch-master` message names this group."""
        raw = data.encode() if isinstance(data, str) else data
        return raw.split(b" ", 1)[0] == self.name
