"""One adoption from start to switch: copy or replicate, pause, settle, take the port.

Until Redis is stopped, every failure leaves Redis serving: its write pause is lifted
(and bounded by CLIENT PAUSE's own timeout if this process dies), the settings changed
for the adoption are put back, and Valkey is left where the next run picks it up.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from . import logical, replicate
from .core import AdoptError, Adoption, Report, keyspace, preflight, wait_port_free
from .resp import Conn, ReplyError, config_get, info

#: The part of CLIENT PAUSE's bound the settle step may use: Redis must still be paused
#: when it is stopped, or a write could land on Redis after Valkey's last copy.
SETTLE_SHARE = 0.5


def _remember(adoption: Adoption, redis: Conn, names: tuple[str, ...]) -> dict[str, str]:
    """Redis's settings the adoption changes, kept in the state file (first run wins)."""
    saved = _saved(adoption)
    if not saved:
        saved = {name: config_get(redis, name) for name in names}
        if adoption.state_file:
            with open(adoption.state_file, "w") as out:
                json.dump(saved, out)
    return saved


def _saved(adoption: Adoption) -> dict[str, str]:
    if adoption.state_file and os.path.exists(adoption.state_file):
        with open(adoption.state_file) as src:
            return json.load(src)
    return {}


def restore(adoption: Adoption, redis: Conn) -> None:
    """Put back Redis's settings from an earlier (failed or killed) run, if any."""
    for name, value in _saved(adoption).items():
        redis.call("CONFIG", "SET", name, value)
    if adoption.state_file and os.path.exists(adoption.state_file):
        os.unlink(adoption.state_file)


def switch(
    adoption: Adoption,
    redis: Conn,
    valkey: Conn,
    settle: Callable[[], None],
    undo: Callable[[], None],
) -> float:
    """Pause writes on Redis, settle (Valkey gets the last changes), stop Redis, move
    Valkey onto the port. Returns the pause in seconds, as clients saw it."""
    if adoption.final_snapshot:
        _snapshot(redis)
    # Redis's own save at exit would hold the port (and the pause) for as long as it
    # takes; the snapshot just taken is its last.
    redis.call("CONFIG", "SET", "save", "")
    start = time.monotonic()
    redis.call("CLIENT", "PAUSE", adoption.pause_ms, "WRITE")
    try:
        settle()
        took = time.monotonic() - start
        if took > adoption.pause_ms / 1000 * SETTLE_SHARE:
            raise AdoptError(f"settling took {took:.2f} s, too close to the pause's bound")
    except BaseException:
        redis.call("CLIENT", "UNPAUSE")
        undo()
        raise
    try:
        adoption.stop_redis()
    except Exception as exc:
        if _answers(adoption):
            redis.call("CLIENT", "UNPAUSE")
            undo()
            raise AdoptError(f"Redis could not be stopped ({exc}); it keeps serving") from exc
    wait_port_free(adoption.port)
    valkey.call("CONFIG", "SET", "port", adoption.port)
    return time.monotonic() - start


def _answers(adoption: Adoption) -> bool:
    try:
        with adoption.redis.connect(timeout=1) as conn:
            return conn.call("PING") == b"PONG"
    except (OSError, ReplyError):
        return False


def _replicated(adoption: Adoption, redis: Conn, valkey: Conn) -> tuple[float, int]:
    replicate.follow(adoption, valkey)

    def settle() -> None:
        replicate.caught_up(redis, valkey, adoption.pause_ms / 1000 * SETTLE_SHARE)
        replicate.promote(valkey)

    def undo() -> None:
        if info(valkey, "replication").get("role") == "master":
            replicate.rejoin(adoption, valkey)

    return switch(adoption, redis, valkey, settle, undo), 0


def _copy_pass(
    adoption: Adoption,
    redis: Conn,
    valkey: Conn,
    by_db: dict[int, list[bytes]],
    ttls: bool,
    fresh: bool = False,
) -> int:
    """Copy the given keys per db (after the first pass: the keys changed meanwhile)."""
    refused = logical.Refused()
    copied = 0
    for db, keys in sorted(by_db.items()):
        redis.call("SELECT", db)
        valkey.call("SELECT", db)
        for i in range(0, len(keys), adoption.batch):
            batch = keys[i : i + adoption.batch]
            copied += logical.copy_keys(redis, valkey, db, batch, refused, ttls, fresh)
    _refuse(refused)
    return copied


def _refuse(refused: logical.Refused) -> None:
    if refused:
        shown = "; ".join(
            f"db {db} {key.decode(errors='replace')!r}: {why}" for db, key, why in refused[:20]
        )
        more = f" and {len(refused) - 20} more" if len(refused) > 20 else ""
        raise AdoptError(
            f"{len(refused)} keys cannot be copied to Valkey: {shown}{more}; remove or convert"
            " them in Redis, then run again (nothing was switched; Redis keeps serving)"
        )


def _snapshot(redis: Conn, timeout: float = 3600.0) -> None:
    """BGSAVE on Redis and wait for it: Redis's data dir then holds its data as of
    seconds before the switch (it is kept, never removed)."""
    fields = info(redis, "persistence")
    # rdb_saves counts every save (Redis 7+); the save time has a resolution of seconds.
    mark = "rdb_saves" if "rdb_saves" in fields else "rdb_last_save_time"
    before = fields.get(mark)
    try:
        redis.call("BGSAVE")
    except ReplyError as exc:  # one already running: wait for it, then ours
        if "in progress" not in str(exc):
            raise
        time.sleep(0.1)
        return _snapshot(redis, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = info(redis, "persistence")
        if fields.get("rdb_bgsave_in_progress") == "0" and fields.get(mark) != before:
            if fields.get("rdb_last_bgsave_status") != "ok":
                raise AdoptError("Redis's BGSAVE before the switch failed: see Redis's log")
            return None
        time.sleep(0.01)
    raise AdoptError("Redis's BGSAVE before the switch did not finish")


def _copied(adoption: Adoption, redis: Conn, valkey: Conn, version: str) -> tuple[float, int]:
    """The logical copy: a first pass, catch-up passes for changed keys, the switch."""
    major, minor = (int(x) for x in (version.split(".") + ["0"])[:2])
    ttls = (major, minor) >= (7, 4)
    flags = set(config_get(redis, "notify-keyspace-events")) | set("KA")
    redis.call("CONFIG", "SET", "notify-keyspace-events", "".join(sorted(flags)))
    feed = logical.ChangeFeed(adoption)
    try:
        valkey.call("FLUSHALL")  # what an interrupted run left: start clean
        total = sum(keyspace(redis).values())
        copied = 0
        for db in sorted(keyspace(redis)):
            redis.call("SELECT", db)
            for keys in logical.scan(redis, adoption.batch):
                copied += _copy_pass(adoption, redis, valkey, {db: keys}, ttls, fresh=True)
                if copied // (adoption.batch * 20) != (copied - len(keys)) // (adoption.batch * 20):
                    adoption.progress(f"copied {copied} of about {total} keys")
        adoption.progress(f"copied {copied} keys; copying the keys changed meanwhile")
        passes = 1
        for passes in range(2, 7):
            changed = feed.take()
            if not changed:
                break
            n = _copy_pass(adoption, redis, valkey, changed, ttls)
            adoption.progress(f"pass {passes}: {n} changed keys copied again")
            if n < adoption.batch:
                break

        def settle() -> None:
            feed.synced()
            _copy_pass(adoption, redis, valkey, feed.take(), ttls)
            _same_keyspace(redis, valkey)

        return switch(adoption, redis, valkey, settle, lambda: None), passes
    finally:
        feed.close()


def _same_keyspace(redis: Conn, valkey: Conn) -> None:
    """Keys per db equal, but for keys past their expiry: paused Redis keeps them until
    touched, Valkey drops them at once (never more than Redis's keys with a TTL)."""
    have = keyspace(valkey)
    for name, value in info(redis, "keyspace").items():
        db = int(name[2:])
        counts = dict(item.split("=") for item in value.split(","))
        keys, expiring = int(counts["keys"]), int(counts.get("expires", 0))
        if not keys - expiring <= have.get(db, 0) <= keys:
            raise AdoptError(
                f"db {db}: Redis holds {keys} keys ({expiring} with a TTL), Valkey"
                f" {have.get(db, 0)} after the copy: nothing was switched"
            )
    extra = set(have) - set(keyspace(redis))
    if extra:
        raise AdoptError(f"Valkey holds keys in db {sorted(extra)}, Redis none: nothing switched")


def adopt(adoption: Adoption) -> Report:
    """Move every key of the running Redis into the Valkey instance, which then serves
    on `adoption.port`; Redis is stopped and disabled, its files kept."""
    began = time.monotonic()
    with adoption.redis.connect() as redis, adoption.valkey.connect() as valkey:
        version, method = preflight(adoption, redis, valkey)
        restore(adoption, redis)
        report = Report(method, version, keyspace(redis), 0.0, 0.0)
        report.redis_dir = config_get(redis, "dir")
        report.redis_config = info(redis, "server").get("config_file", "")
        _remember(adoption, redis, ("save", "notify-keyspace-events"))
        adoption.progress(f"Redis {version}, {sum(report.keys.values())} keys: by {method}")
        try:
            run = _replicated if method == "replication" else _copied
            args = (adoption, redis, valkey) + (() if run is _replicated else (version,))
            report.pause_s, report.passes = run(*args)  # type: ignore[operator]
        except BaseException:
            if _answers(adoption):
                restore(adoption, redis)
            raise
    if adoption.state_file and os.path.exists(adoption.state_file):
        os.unlink(adoption.state_file)
    report.total_s = time.monotonic() - began
    adoption.progress(
        f"switched: Valkey serves port {adoption.port};"
        f" writes paused {report.pause_s * 1000:.0f} ms"
    )
    return report
