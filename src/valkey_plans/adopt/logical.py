"""From Redis 8 by a logical copy: Valkey cannot load Redis 8's RDB or DUMP payloads.

Every key is read with the commands of its type and written again, with its expiry as
an absolute time (PEXPIRETIME, so the TTL does not drift while the copy runs). Keys
changed while the copy runs are known from Redis's keyspace notifications (switched on
for the adoption, restored after) and copied again; the last of them during the write
pause. Types Valkey cannot hold (module types, vector sets, hash fields with their own
TTL) are refused, naming the keys.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

from .core import AdoptError, Adoption
from .resp import Conn, Reply, ReplyError, bulk, bulk_items, decode, elements, encode, info

#: Types copied as such; anything else is refused by name.
COPIED = ("string", "hash", "list", "set", "zset", "stream")
READ = {
    "string": lambda k: ("GET", k),
    "hash": lambda k: ("HGETALL", k),
    "list": lambda k: ("LRANGE", k, 0, -1),
    "set": lambda k: ("SMEMBERS", k),
    "zset": lambda k: ("ZRANGE", k, 0, -1, "WITHSCORES"),
    "stream": lambda k: ("XINFO", "STREAM", k, "FULL", "COUNT", 0),
}


class Refused(list):
    """Keys that cannot be copied, as (db, key, why)."""


def _pairs(flat: list[Reply]) -> dict[bytes, Reply]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def stream_writes(key: bytes, full: list[Reply]) -> list[tuple[Any, ...]]:
    """The commands that rebuild a stream: entries, ids, groups, consumers, pending."""
    info = _pairs(full)
    cmds: list[tuple[Any, ...]] = []
    for entry_id, fields in info[b"entries"]:
        cmds.append(("XADD", key, entry_id, *fields))
    if not info[b"entries"]:
        cmds += [("XGROUP", "CREATE", key, "vp-adopt", "$", "MKSTREAM")]
        cmds += [("XGROUP", "DESTROY", key, "vp-adopt")]
    setid = ("XSETID", key, info[b"last-generated-id"])
    if b"entries-added" in info:
        setid += ("ENTRIESADDED", info[b"entries-added"])
        setid += ("MAXDELETEDID", info[b"max-deleted-entry-id"])
    cmds.append(setid)
    for raw in info[b"groups"]:
        group = _pairs(raw)
        name = group[b"name"]
        create = ("XGROUP", "CREATE", key, name, group[b"last-delivered-id"])
        if group.get(b"entries-read") is not None:
            create += ("ENTRIESREAD", group[b"entries-read"])
        cmds.append(create)
        for consumer in map(_pairs, group[b"consumers"]):
            cmds.append(("XGROUP", "CREATECONSUMER", key, name, consumer[b"name"]))
        for entry_id, consumer, delivered_at, count in group[b"pending"]:
            cmds.append(
                ("XCLAIM", key, name, consumer, 0, entry_id, "TIME", delivered_at)
                + ("RETRYCOUNT", count, "FORCE", "JUSTID")
            )
    return cmds


def value_writes(kind: str, key: bytes, value: Reply) -> list[tuple[Any, ...]]:
    """The commands that write `value` (as READ returned it) under `key`."""
    if kind == "string":
        return [("SET", key, value)]
    if kind == "stream":
        return stream_writes(key, value)
    if not value:  # removed between TYPE and the read: nothing to write
        return []
    verb = {"hash": "HSET", "list": "RPUSH", "set": "SADD"}.get(kind)
    if verb:
        return [(verb, key, *value)]
    scored = [x for pair in zip(value[1::2], value[::2], strict=True) for x in pair]
    return [("ZADD", key, *scored)]


def _field_ttls(redis: Conn, keys: list[bytes], values: list[Reply]) -> list[bool]:
    """Whether each hash has a field with its own TTL (Redis 7.4+; Valkey 8 has none)."""
    cmds = [
        ("HPEXPIRETIME", k, "FIELDS", len(v) // 2, *v[::2])
        for k, v in zip(keys, values, strict=True)
    ]
    replies = redis.pipeline(cmds)
    return [isinstance(r, list) and any(t > 0 for t in r) for r in replies]


def copy_keys(
    redis: Conn,
    valkey: Conn,
    db: int,
    keys: list[bytes],
    refused: Refused,
    field_ttls: bool,
    fresh: bool = False,
) -> int:
    """Copy `keys` of the selected db as they are now (a gone key is deleted); the count.

    `fresh`: the keys of the first pass over an emptied Valkey (no DEL first)."""
    meta = redis.pipeline([c for k in keys for c in (("TYPE", k), ("PEXPIRETIME", k))])
    kinds = [m.decode() for m in meta[::2]]
    expires = meta[1::2]
    wanted = [(k, t, e) for k, t, e in zip(keys, kinds, expires, strict=True) if t in COPIED]
    refused += [
        (db, k, f"type {t}") for k, t in zip(keys, kinds, strict=True) if t not in (*COPIED, "none")
    ]
    values = redis.pipeline([READ[t](k) for k, t, _ in wanted])
    hashes = [(i, w[0]) for i, w in enumerate(wanted) if w[1] == "hash" and values[i]]
    if hashes and field_ttls:
        flags = _field_ttls(redis, [k for _, k in hashes], [values[i] for i, _ in hashes])
        bad = {i for (i, _), flag in zip(hashes, flags, strict=True) if flag}
        refused += [(db, wanted[i][0], "hash fields with their own TTL") for i in bad]
        wanted = [w for i, w in enumerate(wanted) if i not in bad]
        values = [v for i, v in enumerate(values) if i not in bad]
    # A recopy replaces or removes. The first pass over an emptied Valkey writes over
    # nothing, except where SCAN returns a key twice: a list or stream would grow.
    cmds: list[tuple[Any, ...]] = []
    if not fresh:
        copied = {w[0] for w in wanted}
        cmds += [("DEL", k) for k in keys if k not in copied]
    for (key, kind, expire), value in zip(wanted, values, strict=True):
        if isinstance(value, ReplyError):
            raise AdoptError(f"reading {key!r} (db {db}) from Redis: {value}")
        if not fresh or kind in ("list", "stream"):
            cmds.append(("DEL", key))
        cmds += value_writes(kind, key, value)
        if isinstance(expire, int) and expire > 0:
            cmds.append(("PEXPIREAT", key, expire))
    errors = [r for r in valkey.pipeline(cmds) if isinstance(r, ReplyError)]
    if errors:
        raise AdoptError(f"writing db {db} to Valkey: {errors[0]} ({len(errors)} errors)")
    return len(wanted)


VERBS = {"hash": b"$4\r\nHSET\r\n", "list": b"$5\r\nRPUSH\r\n", "set": b"$4\r\nSADD\r\n"}


class Sink:
    """Writes to Valkey without waiting for them: a batch's replies are read once the
    next batch is sent, so Valkey applies one batch while Redis is read for the next.
    Every reply is still checked; `flush` before anything else uses the connection."""

    def __init__(self, valkey: Conn, db: int) -> None:
        self.valkey, self.db = valkey, db
        self.pending: list[int] = []

    def send(self, request: bytes, replies: int) -> None:
        self.valkey.send_raw(request)
        self.pending.append(replies)
        while len(self.pending) > 1:
            self._check(self.pending.pop(0))

    def flush(self) -> None:
        while self.pending:
            self._check(self.pending.pop(0))

    def _check(self, replies: int) -> None:
        errors = self.valkey.errors(replies)
        if errors:
            raise AdoptError(
                f"writing db {self.db} to Valkey: {errors[0][1:-2].decode(errors='replace')}"
                f" ({len(errors)} errors)"
            )


DEL = b"*2\r\n$3\r\nDEL\r\n"


def _fresh_write(kind: str, key: bytes, span: bytes, replace: bool) -> tuple[list[bytes], int]:
    """The request that writes one value (as Redis's reply bytes) under `key`, and its
    number of replies; values are passed on undecoded. `replace`: a later pass, where
    Valkey may hold an older value (or the key may be gone from Redis meanwhile)."""
    k = bulk(key)
    if kind == "string":
        if span == b"$-1\r\n":
            return ([DEL + k], 1) if replace else ([], 0)
        return [b"*3\r\n$3\r\nSET\r\n" + k + span], 1
    count, body = elements(span)
    if count <= 0:  # removed between TYPE and the read
        return ([DEL + k], 1) if replace else ([], 0)
    if kind == "zset":  # WITHSCORES gives member, score; ZADD takes score, member
        items = bulk_items(body, count)
        body = b"".join(items[i + 1] + items[i] for i in range(0, count, 2))
        request = b"*%d\r\n$4\r\nZADD\r\n%b%b" % (count + 2, k, body)
    else:
        request = b"*%d\r\n%b%b%b" % (count + 2, VERBS[kind], k, body)
    if replace or kind == "list":  # SCAN may return a key twice: a list would grow
        return [DEL + k, request], 2
    return [request], 1


def no_field_ttls(redis: Conn, db: int, field_ttls: bool) -> bool:
    """Whether no hash of `db` has a field with its own TTL (Redis 7.4+ counts them as
    `subexpiry` in INFO keyspace; without that count, each hash is checked)."""
    if not field_ttls:
        return True
    fields = info(redis, "keyspace").get(f"db{db}", "")
    counts = dict(item.split("=") for item in fields.split(",") if "=" in item)
    return counts.get("subexpiry") == "0"


def _xadds(k: bytes, span: bytes) -> list[bytes]:
    """XRANGE's reply bytes as one XADD per entry (id and fields passed on undecoded)."""
    count, body = elements(span)
    out, at = [], 0
    for _ in range(count):
        at += 4  # *2\r\n
        end = body.index(b"\r\n", at)
        start, at = at, end + int(body[at + 1 : end]) + 4
        entry_id = body[start:at]
        end = body.index(b"\r\n", at)
        fields, at = int(body[at + 1 : end]), end + 2
        first = at
        for _ in range(fields):
            end = body.index(b"\r\n", at)
            at = end + int(body[at + 1 : end]) + 4
        out.append(b"*%d\r\n$4\r\nXADD\r\n%b%b%b" % (fields + 3, k, entry_id, body[first:at]))
    return out


def _field(span: bytes, name: bytes) -> Reply:
    """The value after `name` in XINFO STREAM's flat reply, found without parsing it
    all (its metadata comes first: no entry's field can be met before)."""
    at = span.find(b"\r\n$%d\r\n%b\r\n" % (len(name), name))
    return None if at < 0 else decode(span, at + len(name) + 7 + len(str(len(name))))


def _stream_fresh(key: bytes, meta: bytes, span: bytes) -> tuple[list[bytes], int] | None:
    """A stream without consumer groups, from XINFO STREAM and XRANGE; None: it has
    groups (copied from XINFO STREAM FULL instead)."""
    for reply in (meta, span):
        if reply[:1] == b"-":
            raise AdoptError(f"reading stream {key!r} from Redis: {reply[1:-2]!r}")
    if _field(meta, b"groups"):
        return None
    k = bulk(key)
    out = [b"*2\r\n$3\r\nDEL\r\n" + k, *_xadds(k, span)]
    if len(out) == 1:  # no entries: XSETID needs the stream to exist
        out.append(encode([("XGROUP", "CREATE", key, "vp-adopt", "$", "MKSTREAM")]))
        out.append(encode([("XGROUP", "DESTROY", key, "vp-adopt")]))
    setid: tuple[Any, ...] = ("XSETID", key, _field(meta, b"last-generated-id"))
    added = _field(meta, b"entries-added")
    if added is not None:
        setid += ("ENTRIESADDED", added, "MAXDELETEDID", _field(meta, b"max-deleted-entry-id"))
    out.append(encode([setid]))
    return out, len(out)


def _meta(keys: list[bytes]) -> list[tuple[Any, ...]]:
    return [c for k in keys for c in (("TYPE", k), ("PEXPIRETIME", k))]


def _reads(wanted: list[tuple[bytes, str, Reply]]) -> list[tuple[Any, ...]]:
    reads: list[tuple[Any, ...]] = []
    for k, t, _ in wanted:
        reads += (
            [("XINFO", "STREAM", k), ("XRANGE", k, "-", "+")] if t == "stream" else [READ[t](k)]
        )
    return reads


def _fresh_batch(
    redis: Conn,
    db: int,
    wanted: list[tuple[bytes, str, Reply]],
    grouped: list[bytes],
    replace: bool,
) -> tuple[list[bytes], int]:
    """Read the replies to `_reads(wanted)`: Valkey's request for them, its reply count."""
    out: list[bytes] = []
    replies = 0
    for key, kind, expire in wanted:
        if kind == "stream":
            parts_n = _stream_fresh(key, redis.read_raw(), redis.read_raw())
            if parts_n is None:
                grouped.append(key)
                continue
            parts, n = parts_n
        else:
            span = redis.read_raw()
            if span[:1] == b"-":
                raise AdoptError(f"reading {key!r} (db {db}) from Redis: {span[1:-2]!r}")
            parts, n = _fresh_write(kind, key, span, replace)
        if n and isinstance(expire, int) and expire > 0:
            parts.append(b"*3\r\n$9\r\nPEXPIREAT\r\n%b%b" % (bulk(key), bulk(b"%d" % expire)))
            n += 1
        out += parts
        replies += n
    return out, replies


def copy_fresh(
    redis: Conn,
    sink: Sink,
    batches: Iterable[list[bytes]],
    refused: Refused,
    replace: bool = False,
) -> Iterator[int]:
    """Copy keys of the selected db (its hashes without field TTLs): Redis's reply
    bytes become Valkey's requests; yields the count per batch. `replace`: a later pass
    (each key deleted in Valkey first, a key gone from Redis deleted), else the first
    pass over an emptied Valkey.

    One batch ahead: the next batch's TYPE and PEXPIRETIME go out with this batch's
    reads, so Redis answers them while this process builds Valkey's request."""
    it = iter(batches)
    keys = next(it, None)
    if keys:
        redis.send(_meta(keys))
    grouped: list[bytes] = []
    while keys:
        meta = redis.read_many(2 * len(keys))
        kinds = [m.decode() for m in meta[::2]]
        wanted = [(k, t, e) for k, t, e in zip(keys, kinds, meta[1::2], strict=True) if t in COPIED]
        refused += [
            (sink.db, k, f"type {t}")
            for k, t in zip(keys, kinds, strict=True)
            if t not in (*COPIED, "none")
        ]
        gone = [DEL + bulk(k) for k, t in zip(keys, kinds, strict=True) if t == "none"]
        ahead = next(it, None)  # SCAN, while nothing else is on its way from Redis
        redis.send(_reads(wanted) + (_meta(ahead) if ahead else []))
        out, replies = _fresh_batch(redis, sink.db, wanted, grouped, replace)
        if replace and gone:
            out, replies = out + gone, replies + len(gone)
        if replies:
            sink.send(b"".join(out), replies)
        yield len(wanted)
        keys = ahead
    sink.flush()
    for i in range(0, len(grouped), 1000):  # streams with consumer groups: XINFO STREAM FULL
        chunk = grouped[i : i + 1000]
        copy_keys(redis, sink.valkey, sink.db, chunk, refused, False, not replace)


class ChangeFeed:
    """Keys Redis changed, from its keyspace notifications, gathered by a thread."""

    def __init__(self, adoption: Adoption) -> None:
        self.conn = adoption.redis.connect(timeout=None)  # type: ignore[arg-type]
        self.conn.call("PSUBSCRIBE", "__keyspace@*__:*")
        self.dirty: set[tuple[int, bytes]] = set()
        self.lock = threading.Lock()
        self.cut = False
        self.pong = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                msg = self.conn.read()
                if isinstance(msg, list) and msg and msg[0] == b"pmessage":
                    head, _, key = msg[2].partition(b"__:")
                    with self.lock:
                        self.dirty.add((int(head.rsplit(b"@", 1)[1]), key))
                elif isinstance(msg, list) and msg and msg[0] == b"pong":
                    self.pong.set()
        except (OSError, ValueError):
            self.cut = True
            self.pong.set()

    def synced(self, timeout: float = 5.0) -> None:
        """Wait until every notification sent before now has been read (a PING's pong
        comes after them on the same connection)."""
        self.pong.clear()
        self.conn.send([("PING",)])
        if not self.pong.wait(timeout) or self.cut:
            raise AdoptError("the change feed from Redis was cut: nothing was switched")

    def take(self) -> dict[int, list[bytes]]:
        """The keys changed since the last take, by db."""
        with self.lock:
            taken, self.dirty = self.dirty, set()
        if self.cut:
            raise AdoptError(
                "the change feed from Redis was cut (its pubsub output buffer limit?):"
                " nothing was switched; run the adoption again"
            )
        by_db: dict[int, list[bytes]] = {}
        for db, key in taken:
            by_db.setdefault(db, []).append(key)
        return by_db

    def close(self) -> None:
        self.conn.sock.close()


def scan(redis: Conn, batch: int) -> Iterable[list[bytes]]:
    """Every key of the selected db, `batch` at a time (SCAN, never KEYS)."""
    cursor = b"0"
    while True:
        cursor, keys = redis.call("SCAN", cursor, "COUNT", batch)
        if keys:
            yield keys
        if cursor == b"0":
            return
