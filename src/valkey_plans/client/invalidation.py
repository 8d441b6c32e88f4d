"""The invalidation subscriber's connections: one on a primary, or one on every cluster node.

On a cluster Valkey relays a PUBLISH to the other nodes over the cluster bus, best
effort: a bus link that is down, or still in its handshake, drops the message on the
way and nobody is told, so a store subscribed on one node can miss another node's
invalidation while its own subscription stays up, and serve a stale copy until its
TTL ends. Subscribed on every node, a store hears each invalidation from the node that
ran the write, whatever the bus does, and again from the others through the bus
(`Seen` applies each message once). On a standalone or Sentinel primary there is one
connection, as before.

Topology: a subscription is opened on the nodes of a fresh slot map; a node that does
not answer is left out only if it is a replica (writes, and so publishes, run on
primaries). Every TOPOLOGY_EVERY seconds the map is read again, and a change of the
nodes or of their roles (a failover, a node added) asks the store to subscribe anew.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import OrderedDict
from typing import Any

import valkey
from valkey.cluster import PRIMARY

log = logging.getLogger(__name__)

#: Seconds between two reads of a cluster's slot map by the subscriber.
TOPOLOGY_EVERY = 10.0
#: Message ids remembered to apply each invalidation once when it arrives several times.
SEEN_MAX = 4096
#: Seconds one poll waits for a message when nothing is buffered.
POLL_S = 0.2


class Seen:
    """The ids of the last SEEN_MAX messages: `first(id)` is True once per id."""

    def __init__(self, size: int = SEEN_MAX) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first(self, message_id: str | None) -> bool:
        if message_id is None:  # a store without ids (an older version): apply every copy
            return True
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class Subscriptions:
    """SUBSCRIBE to `channels` where invalidations are published (see the module)."""

    def __init__(self, client: Any, channels: tuple[str, ...]) -> None:
        self.client = client
        self.channels = channels
        self._pubsubs: list[Any] = []
        self._sockets: list[Any] = []
        self._topology: frozenset[tuple[str, str]] = frozenset()
        self._checked = 0.0

    @property
    def clustered(self) -> bool:
        return isinstance(self.client, valkey.ValkeyCluster)

    def open(self, stop: threading.Event) -> None:
        """Subscribe everywhere and wait until each connection confirmed every channel."""
        self.close()
        if self.clustered:
            self._open_cluster()
        else:
            self._pubsubs = [self.client.pubsub()]
            self._pubsubs[0].subscribe(*self.channels)
        for pubsub in self._pubsubs:
            confirmed = 0
            while confirmed < len(self.channels) and not stop.is_set():
                reply = pubsub.get_message(timeout=1.0)
                confirmed += bool(reply and reply["type"] == "subscribe")
        self._sockets = [pubsub.connection._sock for pubsub in self._pubsubs]

    def _open_cluster(self) -> None:
        self._topology = self._read_topology()
        for node in self.client.get_nodes():
            pubsub = self.client.pubsub(node=node)
            try:
                pubsub.subscribe(*self.channels)
            except (valkey.ConnectionError, valkey.TimeoutError) as exc:
                pubsub.close()
                if node.server_type == PRIMARY:
                    raise
                log.warning("invalidations: replica %s left out: %s", node.name, exc)
                continue
            self._pubsubs.append(pubsub)

    def _read_topology(self) -> frozenset[tuple[str, str]]:
        self.client.nodes_manager.initialize()
        self._checked = time.monotonic()
        return frozenset((n.name, n.server_type) for n in self.client.get_nodes())

    def poll(self) -> list[tuple[str, Any]]:
        """(channel, data) of the messages that arrived, waiting up to POLL_S for one."""
        if len(self._pubsubs) == 1:
            return _messages(self._pubsubs[0], POLL_S)
        found = [m for pubsub in self._pubsubs for m in _messages(pubsub, 0.0)]
        if not found:
            open_sockets = [
                pubsub.connection._sock
                for pubsub in self._pubsubs
                if pubsub.connection is not None and pubsub.connection._sock is not None
            ]
            try:
                select.select(open_sockets, [], [], POLL_S)
            except (OSError, ValueError):  # a socket closed meanwhile: the drain says why
                time.sleep(POLL_S)
            found = [m for pubsub in self._pubsubs for m in _messages(pubsub, 0.0)]
        return found

    def reconnected(self) -> bool:
        """Whether valkey-py replaced a connection (and resubscribed it) since the last
        call: messages sent meanwhile are gone."""
        now = [pubsub.connection._sock if pubsub.connection else None for pubsub in self._pubsubs]
        changed = any(a is not b for a, b in zip(now, self._sockets, strict=True))
        self._sockets = now
        return changed

    def moved(self) -> bool:
        """On a cluster, every TOPOLOGY_EVERY seconds: whether nodes or roles changed."""
        if not self.clustered or time.monotonic() - self._checked < TOPOLOGY_EVERY:
            return False
        return self._read_topology() != self._topology

    def close(self) -> None:
        for pubsub in self._pubsubs:
            pubsub.close()
        self._pubsubs, self._sockets = [], []


def _messages(pubsub: Any, timeout: float) -> list[tuple[str, Any]]:
    """Every message buffered on `pubsub` (waiting up to `timeout` for the first)."""
    found = []
    message = pubsub.get_message(timeout=timeout)
    while message is not None:
        if message["type"] == "message":
            channel = message["channel"]
            found.append(
                (channel.decode() if isinstance(channel, bytes) else channel, message["data"])
            )
        message = pubsub.get_message(timeout=0.0)
    return found
