"""Real redis-server processes and the data an adoption must carry over, for tests and bench.

`RedisProcess` runs Debian's redis-server the way `ValkeyProcess` runs valkey-server. `seed`
writes keys of every type (a third with TTLs, streams with consumer groups and pending
entries); `snapshot` reads back everything an adoption must keep, comparable across
servers; `Writer` keeps writing during a switch and records what was acknowledged.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import valkey

from tests.valkey_server import ValkeyProcess

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
KINDS = ("string", "hash", "list", "set", "zset", "stream")


class RedisProcess(ValkeyProcess):
    """One redis-server child process on a free loopback port."""

    server = REDIS_SERVER


def seed(client: valkey.Valkey, count: int, prefix: str = "k") -> None:
    """`count` keys cycling through every type; every third has a TTL of 300..3300 s."""
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        key, kind = f"{prefix}:{i}", KINDS[i % len(KINDS)]
        if kind == "string":
            pipe.set(key, f"v{i}" * 3)
        elif kind == "hash":
            pipe.hset(key, mapping={"a": i, "b": f"x{i}", "c": "\x00\xff"})
        elif kind == "list":
            pipe.rpush(key, *[f"e{j}" for j in range(i % 7 + 1)])
        elif kind == "set":
            pipe.sadd(key, *[f"m{j}" for j in range(i % 5 + 1)])
        elif kind == "zset":
            pipe.zadd(key, {f"z{j}": j / 3 + i for j in range(i % 4 + 1)})
        else:
            for j in range(3):
                pipe.xadd(key, {"n": j, "i": i})
            if i % 12 == 5:
                pipe.xgroup_create(key, "g", id="0")
                pipe.xreadgroup("g", "c1", {key: ">"}, count=2)
        if i % 3 == 0:
            pipe.expire(key, 300 + i % 3000)
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()


def _value(client: valkey.Valkey, key: bytes, kind: str) -> Any:
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    groups = [(g["name"], g["last-delivered-id"], g["pending"]) for g in client.xinfo_groups(key)]
    pending = [
        (p["message_id"], p["consumer"], p["times_delivered"])
        for g in groups
        for p in client.xpending_range(key, g[0], "-", "+", 1000)
    ]
    return client.xrange(key), groups, pending


def snapshot(
    client: valkey.Valkey, db: int = 0, match: str = "k:*"
) -> dict[bytes, tuple[str, Any, int]]:
    """Every key of `db` matching `match`: (type, value, PEXPIRETIME), read with each
    type's commands."""
    client.execute_command("SELECT", db)
    out = {}
    for key in client.scan_iter(match=match, count=1000):
        kind = client.type(key).decode()
        out[key] = (kind, _value(client, key, kind), client.execute_command("PEXPIRETIME", key))
    return out


def differences(want: dict, have: dict, ttl_slack_ms: int = 2000) -> list[str]:
    """What `have` lacks or holds differently (a TTL within the slack counts as equal)."""
    problems = []
    for key, (kind, value, expire) in want.items():
        got = have.get(key)
        if got is None:
            problems.append(f"{key!r} missing")
        elif got[:2] != (kind, value):
            problems.append(f"{key!r}: {got[:2]!r} != {(kind, value)!r}")
        elif (expire > 0) != (got[2] > 0) or abs(expire - got[2]) > ttl_slack_ms:
            problems.append(f"{key!r}: expiry {got[2]} != {expire}")
    problems += [f"{key!r} extra" for key in have.keys() - want.keys()]
    return problems


class Writer(threading.Thread):
    """Writes `w:N` = N to a port as fast as one client can, through the switch.

    A write that fails (Redis paused then gone, the port closed for a moment) is retried
    until acknowledged; `acked` holds every acknowledged N, `longest_gap` the longest time
    between two acknowledgements.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acked: list[int] = []
        self.longest_gap = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        client = valkey.Valkey(port=self.port, socket_timeout=10, socket_connect_timeout=1)
        last, n = time.monotonic(), 0
        while not self.stop.is_set():
            try:
                client.set(f"w:{n}", n)
            except (valkey.ConnectionError, valkey.TimeoutError):
                time.sleep(0.001)
                continue
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self.acked.append(n)
            n += 1
