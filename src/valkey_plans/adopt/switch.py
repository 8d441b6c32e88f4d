"""One adoption from start to switch: copy or replicate, pause, settle, take the port.

Until Redis lets go of its port, every failure leaves Redis serving: its write pause is
lifted (and bounded by CLIENT PAUSE's own timeout if this process dies), the settings
changed for the adoption are put back, and Valkey is left where the next run picks it
up. From then on Valkey holds every key; a run killed there is finished by the next
(`__main__` reads the switch file).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict

from . import logical, replicate
from .core import AdoptError, Adoption, Report, keyspace, preflight
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
    saved = _saved(adoption)
    for name, value in saved.items():
        redis.call("CONFIG", "SET", name, value)
    if saved:
        shown = ", ".join(f"{name} {value!r}" for name, value in saved.items())
        adoption.progress(f"Redis's settings from before an interrupted run put back: {shown}")
    if adoption.state_file and os.path.exists(adoption.state_file):
        os.unlink(adoption.state_file)


def switch(
    adoption: Adoption,
    redis: Conn,
    valkey: Conn,
    settle: Callable[[], None],
    undo: Callable[[], None],
    report: Report,
) -> float:
    """Pause writes on Redis, settle (Valkey gets the last changes), then in one step
    Redis lets go of its port and drops its clients, and Valkey takes the port. Returns
    the pause in seconds, as clients saw it.

    Nothing slow sits between the pause and the port: Redis is saved and stopped only
    after Valkey serves (`retire`), since clients can no longer reach it."""
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
    _let_go(adoption, redis, report)
    try:
        valkey.call("CONFIG", "SET", "port", adoption.port)
    except ReplyError as exc:
        redis.call("CONFIG", "SET", "port", adoption.redis.port)
        redis.call("CLIENT", "UNPAUSE")
        undo()
        _forget_switch(adoption)
        raise AdoptError(f"Valkey could not take port {adoption.port}: {exc}") from exc
    return time.monotonic() - start


def _let_go(adoption: Adoption, redis: Conn, report: Report) -> None:
    """Redis closes its TCP port and drops its (paused) clients in one transaction:
    no write can reach Redis after this, and a run killed here is finished by the next
    one (the switch file says so)."""
    if adoption.switch_file:
        with open(adoption.switch_file, "w") as out:
            json.dump({"redis": adoption.redis_ident, "report": asdict(report)}, out)
    replies = redis.pipeline(
        [
            ("MULTI",),
            ("CONFIG", "SET", "port", 0),
            ("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"),
            ("EXEC",),
        ]
    )
    done = replies[-1]
    if not isinstance(done, list) or any(isinstance(r, ReplyError) for r in done):
        _forget_switch(adoption)
        raise AdoptError(f"Redis did not let go of its port: {replies}")


def _forget_switch(adoption: Adoption) -> None:
    if adoption.switch_file and os.path.exists(adoption.switch_file):
        os.unlink(adoption.switch_file)


def retire(adoption: Adoption, redis: Conn) -> float:
    """After the switch: SAVE on Redis (no client reaches it any more), so that its kept
    data dir holds every key as of the switch, then stop it without a second save.
    Returns how long it took (off the clients' path)."""
    began = time.monotonic()
    redis.call("SAVE")
    redis.call("CONFIG", "SET", "save", "")
    adoption.stop_redis()
    return time.monotonic() - began


def _answers(adoption: Adoption) -> bool:
    try:
        with adoption.redis.connect(timeout=1) as conn:
            return conn.call("PING") == b"PONG"
    except (OSError, ReplyError):
        return False


def _replicated(adoption: Adoption, redis: Conn, valkey: Conn, report: Report) -> tuple[float, int]:
    replicate.follow(adoption, valkey)
    replicate.steady(adoption, redis, valkey)

    def settle() -> None:
        replicate.caught_up(redis, valkey, adoption.pause_ms / 1000 * SETTLE_SHARE)
        replicate.promote(valkey)

    def undo() -> None:
        if info(valkey, "replication").get("role") == "master":
            replicate.rejoin(adoption, valkey)

    return switch(adoption, redis, valkey, settle, undo, report), 0


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
        batches = [keys[i : i + adoption.batch] for i in range(0, len(keys), adoption.batch)]
        if not fresh and logical.no_field_ttls(redis, db, ttls):
            sink = logical.Sink(valkey, db)
            copied += sum(logical.copy_fresh(redis, sink, batches, refused, replace=True))
            continue
        for batch in batches:
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


def _copied(adoption: Adoption, redis: Conn, valkey: Conn, report: Report) -> tuple[float, int]:
    """The logical copy: a first pass, catch-up passes for changed keys, the switch."""
    major, minor = (int(x) for x in (report.redis_version.split(".") + ["0"])[:2])
    ttls = (major, minor) >= (7, 4)
    flags = set(config_get(redis, "notify-keyspace-events")) | set("KA")
    redis.call("CONFIG", "SET", "notify-keyspace-events", "".join(sorted(flags)))
    feed = logical.ChangeFeed(adoption)
    try:
        valkey.call("FLUSHALL")  # what an interrupted run left: start clean
        total = sum(keyspace(redis).values())
        copied = 0
        for db in sorted(keyspace(redis)):
            copied = _first_pass(adoption, redis, valkey, db, ttls, copied, total)
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

        return switch(adoption, redis, valkey, settle, lambda: None, report), passes
    finally:
        feed.close()


def _first_pass(
    adoption: Adoption, redis: Conn, valkey: Conn, db: int, ttls: bool, copied: int, total: int
) -> int:
    """Copy every key of `db` into the emptied Valkey, with progress; the count so far.

    Redis's replies are passed on as Valkey's requests, unless hashes in `db` have
    fields with their own TTL (each hash is then checked, and such keys refused)."""
    redis.call("SELECT", db)
    valkey.call("SELECT", db)
    sink = logical.Sink(valkey, db)
    fast = logical.no_field_ttls(redis, db, ttls)
    every = adoption.batch * 20
    refused = logical.Refused()
    batches = logical.scan(redis, adoption.batch)
    if fast:
        counts: Iterable[int] = logical.copy_fresh(redis, sink, batches, refused)
    else:
        counts = (_copy_pass(adoption, redis, valkey, {db: k}, ttls, fresh=True) for k in batches)
    for n in counts:
        copied += n
        if copied // every != (copied - n) // every:
            adoption.progress(f"copied {copied} of about {total} keys")
    _refuse(refused)
    return copied


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
            report.pause_s, report.passes = run(adoption, redis, valkey, report)
        except BaseException:
            if _answers(adoption):
                restore(adoption, redis)
            raise
        # Redis retires: the settings it had for the adoption need no repair any more.
        if adoption.state_file and os.path.exists(adoption.state_file):
            os.unlink(adoption.state_file)
        report.total_s = time.monotonic() - began
        adoption.progress(
            f"switched: Valkey serves port {adoption.port};"
            f" writes paused {report.pause_s * 1000:.0f} ms; saving and stopping Redis"
        )
        try:
            report.retire_s = retire(adoption, redis)
        except Exception as exc:
            raise AdoptError(
                f"Valkey serves port {adoption.port} with every key, but Redis could not be"
                f" saved and stopped ({exc}); run the adoption again to finish"
            ) from exc
    return report
