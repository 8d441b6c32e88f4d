"""What one adoption needs and reports; the checks that run before anything changes."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .resp import Conn, ReplyError, info

#: Redis majors whose replication stream Valkey follows; from 8 on, a logical copy.
REPLICATED_MAJORS = (5, 6, 7)


class AdoptError(RuntimeError):
    """The adoption stopped; Redis keeps serving (the message says what to do)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a server answers: a TCP port on `host`, or a unix socket (`unix`)."""

    port: int | None = None
    host: str = "127.0.0.1"
    unix: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def connect(self, timeout: float = 30.0) -> Conn:
        return Conn(self.port, self.host, self.unix, self.user, self.password, timeout)


def _log(message: str) -> None:
    print(f"adopt: {message}", file=sys.stderr, flush=True)


@dataclass
class Adoption:
    """One Redis to move into one Valkey instance, which then takes over `port`.

    + redis: the running Redis (its password, if any, from a root-only file)
    + valkey: the Valkey instance, running on its spare port (or reached by its socket)
    + port: the port Valkey listens on after the switch (usually Redis's own)
    + databases: Valkey's databases; Redis keys in a db at or above it are refused
    + stop_redis: stops Redis (its service), after Valkey has taken the port
    + method: "auto" (replication from Redis <= 7, a logical copy from 8), or "copy"
    + pause_ms: the bound of CLIENT PAUSE on Redis: if the switch dies, Redis resumes
      writes by itself after this long
    + state_file: where Redis's settings changed for the adoption are remembered, so
      that a run killed halfway restores them on the next run
    + switch_file: written just before Redis lets go of its port (the report so far and
      `redis_ident`), so that a run killed during the switch is finished by the next one
    + redis_ident: how to find Redis's process again when it no longer has a port
    """

    redis: Endpoint
    valkey: Endpoint
    port: int
    databases: int
    stop_redis: Callable[[], None]
    method: str = "auto"
    pause_ms: int = 5000
    batch: int = 1000
    sync_timeout: float = 3600.0
    state_file: str | None = None
    switch_file: str | None = None
    redis_ident: dict[str, object] = field(default_factory=dict)
    progress: Callable[[str], None] = _log


@dataclass
class Report:
    """What an adoption did, for the deploy's output and the host's record."""

    method: str
    redis_version: str
    keys: dict[int, int]
    pause_s: float
    total_s: float
    redis_dir: str = ""
    redis_config: str = ""
    passes: int = 0
    #: The SAVE on Redis after the switch (its kept data dir current), and its stop.
    retire_s: float = 0.0
    resumed: bool = False


def server_version(conn: Conn) -> tuple[str, str]:
    """(name, version) from INFO server: ("redis", "7.0.15") or ("valkey", "8.0.1")."""
    fields = info(conn, "server")
    if "valkey_version" in fields or fields.get("server_name") == "valkey":
        return "valkey", fields.get("valkey_version", fields.get("redis_version", ""))
    return "redis", fields.get("redis_version", "")


def choose_method(version: str, asked: str) -> str:
    """Replication where Valkey can read Redis's stream (<= 7.x), else the logical copy."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise AdoptError(f"cannot read Redis's version {version!r} from INFO server") from None
    if asked == "copy":
        return "copy"
    if asked != "auto":
        raise AdoptError(f"method {asked!r}: allowed: auto, copy")
    return "replication" if major in REPLICATED_MAJORS else "copy"


def keyspace(conn: Conn) -> dict[int, int]:
    """Keys per db from INFO keyspace ({0: 1200, 3: 5})."""
    dbs = {}
    for name, value in info(conn, "keyspace").items():
        if name.startswith("db"):
            dbs[int(name[2:])] = int(value.split(",")[0].split("=")[1])
    return dbs


def preflight(adoption: Adoption, redis: Conn, valkey: Conn) -> tuple[str, str]:
    """Refuse before any change: the wrong servers, a Redis user lacking permissions,
    or keys Valkey has no db for. Returns (Redis version, method)."""
    user = adoption.redis.user
    if user:
        _allowed(redis, user)
    try:
        return _preflight(adoption, redis, valkey)
    except ReplyError as exc:
        if not user or not str(exc).startswith("NOPERM"):
            raise
        raise AdoptError(
            f"Redis's ACL user {user!r}: {exc}; allow it every command (e.g. ACL SETUSER"
            f" {user} +@all ~* &*) or adopt as another user: nothing was changed"
        ) from None


def _preflight(adoption: Adoption, redis: Conn, valkey: Conn) -> tuple[str, str]:
    rname, rversion = server_version(redis)
    vname, _ = server_version(valkey)
    if rname != "redis":
        raise AdoptError(f"the server on port {adoption.redis.port} is {rname}, not Redis")
    if vname != "valkey":
        raise AdoptError(f"the adopting server is {vname}, not Valkey: nothing was changed")
    if info(redis, "server").get("run_id") == info(valkey, "server").get("run_id"):
        raise AdoptError("Redis and Valkey endpoints reach the same server")
    outside = {db: n for db, n in keyspace(redis).items() if db >= adoption.databases}
    if outside:
        shown = ", ".join(f"db {db} ({n} keys)" for db, n in sorted(outside.items()))
        raise AdoptError(
            f"Redis holds keys in {shown}, which the planned instance has no db for"
            f" (databases {adoption.databases}); move them (MOVE/COPY ... DB) or plan more"
            " dbs (role cache): nothing was changed"
        )
    if (
        adoption.redis.user
        and rversion.split(".")[0].isdigit()
        and int(rversion.split(".")[0]) >= 7
    ):
        _allowed(redis, adoption.redis.user)
    return rversion, choose_method(rversion, adoption.method)


#: What the adoption runs on Redis (either path), as ACL DRYRUN checks it: any key and
#: any channel, since every key is read and every key's changes are followed.
NEEDED = (
    ("INFO",),
    ("CONFIG", "GET", "save"),
    ("CONFIG", "SET", "save", ""),
    ("CLIENT", "PAUSE", "1", "WRITE"),
    ("CLIENT", "UNPAUSE"),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("SAVE",),
    ("SELECT", "0"),
    ("SCAN", "0"),
    ("TYPE", "vp-adopt-any-key"),
    ("PEXPIRETIME", "vp-adopt-any-key"),
    ("HGETALL", "vp-adopt-any-key"),
    ("XINFO", "STREAM", "vp-adopt-any-key"),
    ("PSUBSCRIBE", "__keyspace@*__:*"),
    ("PSYNC", "?", "-1"),
    ("REPLCONF", "capa", "eof"),
)


def _allowed(redis: Conn, user: str) -> None:
    """Refuse, naming them, the commands Redis's ACL user `user` may not run."""
    denied = []
    for args in NEEDED:
        reply = redis.pipeline([("ACL", "DRYRUN", user, *args)])[0]
        if isinstance(reply, ReplyError) and "dryrun" in str(reply).lower():
            return  # Redis < 7, or the user may not ask: the first command denied says
        if reply != b"OK":
            denied.append(
                f"{' '.join(args[:2] if args[0] in ('CONFIG', 'CLIENT') else args[:1])} ({reply})"
            )
    if denied:
        raise AdoptError(
            f"Redis's ACL user {user!r} may not run: {'; '.join(denied)}; allow them"
            f" (e.g. ACL SETUSER {user} +@all ~* &*) or adopt as another user: nothing was"
            " changed"
        )


def wait_port_free(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Until nothing accepts connections on `port` (Redis has let it go)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                pass
        except OSError:
            return
        time.sleep(0.002)
    raise AdoptError(f"port {port} is still taken {timeout:.0f} s after Redis was stopped")
