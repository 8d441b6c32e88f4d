"""From Redis 7.x by replication: Valkey follows Redis, then is promoted during a pause."""

from __future__ import annotations

import time

from .core import AdoptError, Adoption
from .resp import Conn, config_get, info

#: How far (bytes of Redis's replication stream) Valkey may trail when the pause begins.
MAX_LAG = 1 << 20


def follow(adoption: Adoption, valkey: Conn) -> None:
    """Make the spare Valkey a replica of Redis (again, after an interrupted run) and
    wait until the initial sync is done and the link is up."""
    r = adoption.redis
    if r.password is not None:
        # Over the connection, never on a command line or in a file.
        valkey.call("CONFIG", "SET", "masterauth", r.password)
        valkey.call("CONFIG", "SET", "masteruser", r.user or "")
    fields = info(valkey, "replication")
    following = fields.get("master_host") == r.host and fields.get("master_port") == str(r.port)
    if not following:
        valkey.call("REPLICAOF", r.host, r.port)
    adoption.progress(f"Valkey replicates from Redis {r.host}:{r.port}; waiting for the sync")
    deadline = time.monotonic() + adoption.sync_timeout
    shown = 0.0
    while time.monotonic() < deadline:
        fields = info(valkey, "replication")
        if (
            fields.get("master_link_status") == "up"
            and fields.get("master_sync_in_progress") == "0"
        ):
            adoption.progress("in sync")
            return
        if time.monotonic() - shown > 2:
            got = fields.get("master_sync_read_bytes", "0")
            total = fields.get("master_sync_total_bytes", "?")
            adoption.progress(f"full sync: {got} of {total} bytes")
            shown = time.monotonic()
        time.sleep(0.05)
    raise AdoptError(f"Valkey was not in sync with Redis after {adoption.sync_timeout:.0f} s")


def steady(adoption: Adoption, redis: Conn, valkey: Conn, window: float = 0.2) -> None:
    """Once in sync, until Valkey has kept within `MAX_LAG` bytes of Redis's offset for
    `window` seconds: right after a large full sync Valkey still applies the writes
    Redis buffered meanwhile, and the write pause must not wait for that backlog."""
    deadline = time.monotonic() + adoption.sync_timeout
    since = time.monotonic()
    while time.monotonic() < deadline:
        ahead = int(info(redis, "replication")["master_repl_offset"])
        lag = ahead - int(info(valkey, "replication").get("slave_repl_offset", "-1"))
        now = time.monotonic()
        if lag > MAX_LAG:
            since = now
        elif now - since >= window:
            adoption.progress(f"steady (lag {max(lag, 0)} bytes): pausing writes on Redis")
            return
        time.sleep(0.01)
    raise AdoptError(f"Valkey kept lagging behind Redis for {adoption.sync_timeout:.0f} s")


def caught_up(redis: Conn, valkey: Conn, timeout: float) -> int:
    """With Redis paused: wait until Valkey has applied Redis's last offset; return it."""
    offset = int(info(redis, "replication")["master_repl_offset"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(info(valkey, "replication").get("slave_repl_offset", "-1")) >= offset:
            return offset
        time.sleep(0.001)
    raise AdoptError(f"Valkey did not reach Redis's offset {offset} within {timeout:.1f} s")


def promote(valkey: Conn) -> None:
    """REPLICAOF NO ONE, and the login to Redis forgotten."""
    valkey.call("REPLICAOF", "NO", "ONE")
    if config_get(valkey, "masterauth"):
        valkey.call("CONFIG", "SET", "masterauth", "")


def rejoin(adoption: Adoption, valkey: Conn) -> None:
    """After a failed switch, Valkey follows Redis again (Redis stays the source)."""
    valkey.call("REPLICAOF", adoption.redis.host, adoption.redis.port)
