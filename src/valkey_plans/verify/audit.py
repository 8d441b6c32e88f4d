"""Keyspace audit: classify every key of every db of an instance, read-only.

SCAN (never KEYS) walks each db; for each batch of names the audit asks the server
for the type and TTL of every key (and, in dbs of small strings, their values: one
MGET tells the type of every string at once and gives the user index's values,
which are checked). The audit keeps the server busy and Python off the critical
path (bench/audit.py: about 2x the bare scan on a million keys, and the server's own
SCAN/TYPE/PTTL/MGET time is most of it):

- commands are packed by hand, a whole batch in one CRLF join, and pipelined on one
  valkey-py connection (valkey-py's Pipeline costs several microseconds of Python per
  command: about 10x the bare scan);
- each write carries the next SCAN first, then the batch in hand, so the next cursor
  comes back before the batch's replies and the next write goes out while the server
  is still busy;
- replies are drained from libvalkey's reader in C-level loops, and a batch of
  conforming names is recognised whole, with one regex over the joined names.

valkey-py still owns the connection: AUTH as the read-only `checks` user, SELECT,
TLS, timeouts, error replies.

Nothing here writes: the commands sent are SCAN, MGET, PTTL, TYPE and INFO, all of
which the `checks` ACL user may run.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import valkey

from valkey_plans.client.cache import MAX_EMAIL_LENGTH
from valkey_plans.keys import KEY_LENGTH, TXKEY_LENGTH
from valkey_plans.plan import Instance, Plan
from valkey_plans.verify.audit_rules import (
    BAD_INDEX_VALUE,
    CONFORMING,
    INDEXED_DOMAIN,
    OVER_CAP,
    VIOLATION,
    Classifier,
    DbRules,
    instance_rules,
    unplanned,
)

#: Keys per SCAN call (a hint to the server) and so per pipelined batch.
SCAN_COUNT = 1000
#: Violations kept with their key and reason; the rest are only counted.
SAMPLE = 20
VANISHED = "vanished"

ClientForDb = Callable[[int], valkey.Valkey]
Progress = Callable[[int], None]

_TXKEY = rb"[0-9A-Za-z]{%d}" % TXKEY_LENGTH
_RECORD = re.compile(rb"[a-z]{3}:" + _TXKEY)
_EMAIL = re.compile(rb"[^@\sA-Z]+@[^@\sA-Z]+\.[^@\s.A-Z]+")
#: A user index entry's value: a record key of the indexed domain (`usr:`).
_USR = re.compile(re.escape(f"{INDEXED_DOMAIN}:".encode()) + _TXKEY)


def _each(pattern: re.Pattern[bytes]) -> re.Pattern[bytes]:
    """`pattern` for every line of a newline-joined batch (its lines never hold a newline)."""
    return re.compile(rb"(?:%b\n)*%b" % (pattern.pattern, pattern.pattern))


_EMAILS, _USRS = _each(_EMAIL), _each(_USR)


def _each_line_is(lines: re.Pattern[bytes], joined: bytes, n: int, length: int) -> bool:
    """Whether `joined`, n names of a fixed-length pattern joined by newlines, matches
    `lines` (an `_each` pattern). The exact length leaves room for n lines and no other
    newline, so each name is one line: none can hide a newline of its own."""
    return len(joined) == n * (length + 1) - 1 and lines.fullmatch(joined) is not None


@dataclass(frozen=True)
class Violation:
    db: int
    key: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"db {self.db} {self.key!r}: {self.reason}"


@dataclass
class DbCount:
    """How many keys of one db fell into each class, and their types."""

    db: int
    name: str
    classes: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)

    @property
    def keys(self) -> int:
        return sum(self.classes.values())


@dataclass
class InstanceAudit:
    """The audit of one instance: counts per db and class, the first violations with reasons."""

    instance: str
    role: str
    dbs: dict[int, DbCount] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    sample: list[Violation] = field(default_factory=list)
    limit: int = SAMPLE

    @property
    def violations(self) -> int:
        return sum(self.kinds.values())

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def violate(self, db: int, key: str, kind: str, reason: str, per_key: bool = True) -> None:
        """Record a violation; `per_key=False` for one about the db as a whole (its cap)."""
        self.kinds[kind] += 1
        if per_key:
            self.dbs[db].classes[VIOLATION] += 1
        if len(self.sample) < self.limit:
            self.sample.append(Violation(db, key, kind, reason))

    def verdict(self) -> str:
        """One line: what is wrong (first violations) or how many keys conform."""
        keys = sum(d.keys for d in self.dbs.values())
        if self.ok:
            return f"{self.instance}: {keys} keys, no violations"
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common())
        first = "; ".join(str(v) for v in self.sample[:3])
        return f"{self.instance}: {self.violations} violations of {keys} keys ({kinds}): {first}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "role": self.role,
            "ok": self.ok,
            "violations": self.violations,
            "kinds": dict(self.kinds),
            "dbs": {
                str(d.db): {
                    "name": d.name,
                    "keys": d.keys,
                    "classes": dict(d.classes),
                    "types": dict(d.types),
                }
                for d in self.dbs.values()
            },
            "first": [v.__dict__ for v in self.sample],
        }


# --- wire: commands packed once per batch ------------------------------------------------

_PTTL_HEAD = b"*2\r\n$4\r\nPTTL\r\n$%d"
_TYPE_HEAD = b"*2\r\n$4\r\nTYPE\r\n$%d"


def _scan(cursor: bytes) -> bytes:
    count = str(SCAN_COUNT).encode()
    return b"*4\r\n$4\r\nSCAN\r\n$%d\r\n%b\r\n$5\r\nCOUNT\r\n$%d\r\n%b\r\n" % (
        len(cursor),
        cursor,
        len(count),
        count,
    )


def _each_key(keys: list[bytes], before: bytes, between: bytes = b"") -> bytes:
    """`before` key (`between` key) CRLF for every key, each of `before` and `between`
    ending in a bulk-string header `$%d` for the key's length, CRLF-joined in one call.

    The parts go into one list by slice assignment, the headers from a table per
    length: no Python loop or formatting per key."""
    lengths = list(map(len, keys))
    step = 4 if between else 2
    parts: list[bytes] = [b""] * (step * len(keys))
    heads = {n: before % n for n in set(lengths)}
    parts[0::step] = map(heads.__getitem__, lengths)
    parts[1::step] = keys
    if between:
        mids = {n: between % n for n in heads}
        parts[2::step] = map(mids.__getitem__, lengths)
        parts[3::step] = keys
    return b"\r\n".join(parts) + b"\r\n"


def _batch(keys: list[bytes], strings: bool) -> bytes:
    if not keys:
        return b""
    if strings:
        mget = b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)
        return mget + _each_key(keys, b"$%d") + _each_key(keys, _PTTL_HEAD)
    return _each_key(keys, _TYPE_HEAD, _PTTL_HEAD)


class _Replies:
    """The replies on one connection, in order; straight from libvalkey's reader when
    valkey-py uses it.

    `Connection.read_response` costs ~1 us of Python per reply, as much as the
    server spends on the command; a million keys have two million replies. The
    fast path drains every reply the reader has parsed in one C-level loop
    (`iter(gets, NOT_ENOUGH_DATA)`) and holds those beyond the ones asked for: the
    next SCAN's reply often comes in with a batch's. valkey-py still feeds the reader
    from the socket (`read_from_socket`, which raises its own ConnectionError or
    TimeoutError) and owns the connection.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        parser = getattr(conn, "_parser", None)
        self.reader = getattr(parser, "_reader", None)
        self.idle = getattr(sys.modules.get(type(parser).__module__), "NOT_ENOUGH_DATA", None)
        self.fast = (
            self.reader is not None
            and self.idle is not None
            and getattr(parser, "_next_response", None) is self.idle
        )
        self.held: list = []

    def take(self, n: int) -> list:
        """The next n replies; an error reply among them is raised."""
        if not self.fast:
            replies = [self.conn.read_response() for _ in range(n)]
        else:
            held, more = self.held, self.conn._parser.read_from_socket
            held.extend(iter(self.reader.gets, self.idle))
            while len(held) < n:
                more()
                held.extend(iter(self.reader.gets, self.idle))
            replies, self.held = held[:n], held[n:]
        if any(issubclass(kind, Exception) for kind in set(map(type, replies))):
            # an error reply (NOPERM...) or a ConnectionError from the reader
            raise next(reply for reply in replies if isinstance(reply, Exception))
        return replies

    def batch(self, keys: list[bytes], strings: bool) -> tuple[list, list, list]:
        """(types or None per key, ttls, values or []) for a batch sent by `_batch`."""
        if not keys:
            return [], [], []
        if strings:
            values, *ttls = self.take(1 + len(keys))
            return [b"string" if v is not None else None for v in values], ttls, values
        replies = self.take(2 * len(keys))
        return replies[0::2], replies[1::2], []


# --- the audit -----------------------------------------------------------------------------


class _DbAudit:
    """Classifies the batches of one db; the common cases are tested inline (hot path)."""

    def __init__(
        self, report: InstanceAudit, rules: DbRules, classifier: Classifier, client: valkey.Valkey
    ) -> None:
        self.report = report
        self.rules = rules
        self.classifier = classifier
        self.client = client
        self.count = report.dbs.setdefault(rules.db, DbCount(rules.db, rules.name))
        self.prefix = f"{rules.domain}:".encode() if rules.domain else None
        self.record_type = (rules.record_type or "").encode()
        self._records = _each(re.compile(re.escape(self.prefix or b"") + _TXKEY))

    def batch(self, keys: list[bytes], types: list, ttls: list, values: list) -> None:
        if keys and self._all_conforming(keys, types, ttls, values):
            self.count.classes[CONFORMING] += len(keys)
            self.count.types[types[0].decode()] += len(keys)
            return
        rules, count = self.rules, self.count
        missing = [k for k, t in zip(keys, types, strict=True) if t is None]
        found = self._types(missing) if missing else {}
        conforming = 0
        for i, key in enumerate(keys):
            type_ = types[i] or found.get(key)
            ttl = ttls[i]
            if ttl == -2 or type_ in (None, b"none"):
                count.classes[VANISHED] += 1
                continue
            # Hot path: a well-formed record of this db's domain and type, TTL as required.
            if (
                self.prefix is not None
                and key.startswith(self.prefix)
                and type_ == self.record_type
                and (ttl >= 0 or not rules.ttl_required)
                and _RECORD.fullmatch(key)
            ):
                conforming += 1
                count.types[type_.decode()] += 1
                continue
            if (
                rules.is_index
                and ttl == -1
                and type_ == b"string"
                and len(key) <= MAX_EMAIL_LENGTH
                and _EMAIL.fullmatch(key)
                and _USR.fullmatch(values[i] or b"")
            ):
                conforming += 1
                count.types["string"] += 1
                continue
            self._slow(key, type_.decode(), ttl, values[i] if values else None)
        count.classes[CONFORMING] += conforming

    def _all_conforming(self, keys: list[bytes], types: list, ttls: list, values: list) -> bool:
        """The common batch, whole: every key passes the per-key hot path in `batch`.

        The same tests as there, each over the whole batch in a few calls that run in C
        (one regex over the newline-joined names instead of one per name): Python's
        per-key loop was the audit's bottleneck, not the server. Any other batch takes
        the per-key path, so the counts and violations are the same either way.
        """
        n, rules = len(keys), self.rules
        if self.prefix is not None:
            return (
                types.count(self.record_type) == n
                and min(ttls) >= (0 if rules.ttl_required else -1)
                and _each_line_is(self._records, b"\n".join(keys), n, KEY_LENGTH)
            )
        if not rules.is_index or len(values) != n:
            return False
        joined = b"\n".join(keys)
        return (
            types.count(b"string") == n
            and ttls.count(-1) == n
            and max(map(len, keys)) <= MAX_EMAIL_LENGTH
            and joined.count(b"\n") == n - 1
            and _EMAILS.fullmatch(joined) is not None
            and None not in values
            and _each_line_is(_USRS, b"\n".join(values), n, KEY_LENGTH)
        )

    def _slow(self, key_bytes: bytes, type_: str, ttl: int, value: bytes | None) -> None:
        key = key_bytes.decode("utf-8", "backslashreplace")
        self.count.types[type_] += 1
        klass, kind, reason = self.classifier.name(self.rules, key, type_, ttl)
        if klass == CONFORMING and self.rules.is_index:
            problem = self.classifier.index_value(value)
            if problem:
                klass, kind, reason = VIOLATION, BAD_INDEX_VALUE, problem
        if klass == VIOLATION:
            self.report.violate(self.rules.db, key, kind, reason)
        else:
            self.count.classes[klass] += 1

    def _types(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """TYPE of the keys MGET found not to be strings (structural keys: few)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
        return {
            k: t if isinstance(t, bytes) else t.encode()
            for k, t in zip(keys, pipe.execute(), strict=True)
        }

    def finish(self) -> None:
        cap = self.rules.cap
        records = self.count.classes[CONFORMING]
        if cap is not None and records > cap:
            self.report.violate(
                self.rules.db,
                "",
                OVER_CAP,
                f"{self.rules.name} holds {records} {self.rules.domain}: records, cap {cap}",
                per_key=False,
            )


#: Sent first on a cluster node's connection: a replica answers MOVED to reads of its
#: keys otherwise (SCAN lists them, TYPE would not read them); a primary ignores it.
READONLY = b"*1\r\n$8\r\nREADONLY\r\n"


def scan_db(
    client: valkey.Valkey,
    work: _DbAudit,
    progress: Progress | None = None,
    cluster_node: bool = False,
) -> None:
    """Walk one db with SCAN, keeping the server busy: each write carries the next SCAN
    first and then the commands for the batch in hand. The next cursor so comes back
    before that batch's replies, and the following write goes out while the server
    still works on it; Python reads and classifies one batch behind."""
    pool = client.connection_pool
    conn = pool.get_connection("SCAN")
    strings = work.rules.strings
    try:
        replies = _Replies(conn)
        if cluster_node:
            conn.send_packed_command([READONLY])
            replies.take(1)
        conn.send_packed_command([_scan(b"0")])
        ((cursor, keys),) = replies.take(1)
        in_flight: list[bytes] | None = None  # the batch whose replies come next
        while True:
            more = cursor != b"0"
            conn.send_packed_command([(_scan(cursor) if more else b"") + _batch(keys, strings)])
            if in_flight is not None:
                work.batch(in_flight, *replies.batch(in_flight, strings))
                if progress is not None:
                    progress(len(in_flight))
            in_flight = keys
            if not more:
                break
            ((cursor, keys),) = replies.take(1)
        work.batch(in_flight, *replies.batch(in_flight, strings))
        if progress is not None:
            progress(len(in_flight))
    except BaseException:
        conn.disconnect()  # replies may still be in flight: never reuse this connection
        raise
    finally:
        pool.release(conn)
    work.finish()


def dbs_with_keys(client: valkey.Valkey) -> dict[int, int]:
    """db number -> key count, from INFO keyspace (dbs without keys are not listed)."""
    info = client.info("keyspace")
    return {int(name[2:]): int(stats["keys"]) for name, stats in info.items()}


def audit_instance(
    plan: Plan,
    inst: Instance,
    client_for_db: ClientForDb,
    limit: int = SAMPLE,
    progress: Progress | None = None,
) -> InstanceAudit:
    """Audit every planned db of `inst`, and every other db that holds keys."""
    report = InstanceAudit(inst.name, inst.role, limit=limit)
    classifier = Classifier(plan, inst)
    rules = instance_rules(plan, inst)
    present = dbs_with_keys(client_for_db(0))
    # One db after another: threads per db were measured slower (the GIL, 2 cores).
    for db in sorted(set(rules) | set(present)):
        client = client_for_db(db)
        work = _DbAudit(report, rules.get(db) or unplanned(db), classifier, client)
        scan_db(client, work, progress, cluster_node=inst.role == "cluster-node")
    return report


def total_keys(client: valkey.Valkey) -> int:
    """How many keys the audit will walk (for a progress bar)."""
    return sum(dbs_with_keys(client).values())
