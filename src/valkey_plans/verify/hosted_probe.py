"""Probe an external hosted tier from the app host, with the rendered settings only.

`valkey-plans verify` runs this file on the application host (`python3 -c SOURCE
ENV_FILE CANARY_KEY`), so it proves what the application itself will meet there:
the app host's network path, its CA store or installed CA file, and the logins in the
env file the deploy wrote. It therefore imports nothing but the standard library
(the app host needs python3, not valkey-plans) and speaks RESP2 over a socket.

It never prints a password. It prints one JSON object: one entry per step (`reach`,
`tls`, `login`, `canary`, `pubsub`), each `{"ok": bool, "error": str}` plus what the
operator-side check needs to say what to fix; a step that could not run after an
earlier failure is absent.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from typing import Any

TIMEOUT = 5.0
WORKLOADS = ("api", "blocking", "subscriber", "background")


class ServerError(Exception):
    """An error reply (`-WRONGPASS ...`): the text is the server's own."""


def read_env(path: str) -> dict[str, str]:
    """KEY=value lines of the deploy's env file (it writes no quotes or exports)."""
    values = {}
    with open(path, encoding="utf-8") as env:
        for line in env:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key] = value
    return values


class Resp:
    """One RESP2 connection: commands out as arrays of bulk strings, replies parsed back."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, *args: str) -> None:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))

    def reply(self) -> Any:
        line = self.file.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        kind, rest = line[:1], line[1:-2].decode(errors="replace")
        if kind == b"-":
            raise ServerError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if rest == "-1" else self.file.read(int(rest) + 2)[:-2].decode()
        if kind == b"*":
            return None if rest == "-1" else [self.reply() for _ in range(int(rest))]
        return rest

    def call(self, *args: str) -> Any:
        self.send(*args)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Tier:
    """The hosted tier as the env file describes it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.host = env.get("VALKEY_HOST", "")
        self.port = int(env.get("VALKEY_PORT", "0") or 0)
        self.tls = env.get("VALKEY_TLS") == "1"
        self.ca_file = env.get("VALKEY_TLS_CA_FILE") or None
        self.server_name = env.get("VALKEY_TLS_SERVERNAME") or self.host

    def context(self) -> ssl.SSLContext:
        """What the application's client does: the chain and the name are both checked."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def connect(self, host: str | None = None, port: int | None = None) -> Resp:
        sock = socket.create_connection((host or self.host, port or self.port), timeout=TIMEOUT)
        if self.tls:
            try:
                sock = self.context().wrap_socket(sock, server_hostname=self.server_name)
            except BaseException:
                sock.close()
                raise
        return Resp(sock)

    def login(self, workload: str, host: str | None = None, port: int | None = None) -> Resp:
        """A connection logged in as `workload` (a token: AUTH with the password alone)."""
        user = self.env.get(f"VALKEY_{workload.upper()}_USER")
        password = self.env.get(f"VALKEY_{workload.upper()}_PASSWORD")
        conn = self.connect(host, port)
        try:
            if password:
                conn.call("AUTH", *([user] if user else []), password)
        except BaseException:
            conn.close()
            raise
        return conn


def reach(tier: Tier) -> dict[str, Any]:
    try:
        socket.create_connection((tier.host, tier.port), timeout=TIMEOUT).close()
    except OSError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc.strerror or exc}"}
    return {"ok": True, "error": ""}


def tls(tier: Tier) -> dict[str, Any]:
    if not tier.tls:
        return {"ok": True, "error": "", "plain": True}
    try:
        conn = tier.connect()
    except ssl.SSLCertVerificationError as exc:
        return {"ok": False, "error": exc.verify_message or str(exc), "verify": True}
    except (OSError, ssl.SSLError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "verify": False}
    peer = conn.sock.getpeercert() or {}  # type: ignore[attr-defined]
    conn.close()
    subject = dict(pair for rdn in peer.get("subject", ()) for pair in rdn)
    return {"ok": True, "error": "", "subject": subject.get("commonName", "")}


def whoami(conn: Resp) -> str:
    """The logged-in user: ACL WHOAMI, or CLIENT INFO's `user=` where a workload's ACL
    (this plan's own, or a provider's) allows @connection commands but not ACL WHOAMI."""
    try:
        return conn.call("ACL", "WHOAMI")
    except ServerError:
        pass
    try:
        info = conn.call("CLIENT", "INFO")
    except ServerError as exc:
        conn.call("PING")  # the login still holds: only who it is stays unknown
        return f"(ACL WHOAMI refused: {exc})"
    return next((f[5:] for f in str(info).split() if f.startswith("user=")), "")


def login(tier: Tier) -> dict[str, Any]:
    """Each workload logs in; WHOAMI is the user the settings name (token: `default`)."""
    seen: dict[str, str] = {}
    for workload in WORKLOADS:
        expected = tier.env.get(f"VALKEY_{workload.upper()}_USER") or "default"
        try:
            conn = tier.login(workload)
            user = whoami(conn)
            conn.close()
        except (ServerError, OSError, ConnectionError) as exc:
            return {"ok": False, "workload": workload, "user": expected, "error": str(exc)}
        seen[workload] = user
        if user != expected and not user.startswith("(ACL WHOAMI refused"):
            return {"ok": False, "workload": workload, "user": expected, "whoami": user,
                    "error": f"logged in as {user!r}"}  # fmt: skip
    return {"ok": True, "error": "", "whoami": seen}


def _on_owner(tier: Tier, *command: str) -> Any:
    """`command` as the api workload; in cluster mode, on the node a MOVED reply names."""
    conn = tier.login("api")
    try:
        return conn.call(*command)
    except ServerError as exc:
        if not str(exc).startswith("MOVED "):
            raise
        host, _, port = str(exc).split()[2].rpartition(":")
        conn.close()
        conn = tier.login("api", host, int(port))
        return conn.call(*command)
    finally:
        conn.close()


def canary(tier: Tier, key: str) -> dict[str, Any]:
    """SET (with a TTL, so even a killed run leaves nothing for long), GET, DEL."""
    value = f"canary {time.time():.6f}"
    try:
        wrote = _on_owner(tier, "SET", key, value, "PX", "60000")
        read = _on_owner(tier, "GET", key)
        removed = _on_owner(tier, "DEL", key)
    except (ServerError, OSError, ConnectionError) as exc:
        return {"ok": False, "error": str(exc)}
    if wrote != "OK" or read != value or removed != 1:
        return {"ok": False, "error": f"SET {wrote!r}, GET {read!r}, DEL {removed!r}"}
    return {"ok": True, "error": ""}


def pubsub(tier: Tier, channel: str) -> dict[str, Any]:
    """The subscriber workload receives what the api workload publishes on `channel`."""
    message = f"canary {time.time():.6f}"
    try:
        sub = tier.login("subscriber")
        sub.call("SUBSCRIBE", channel)
        receivers = _on_owner(tier, "PUBLISH", channel, message)
        got = sub.reply()
        sub.close()
    except (ServerError, OSError, ConnectionError) as exc:
        return {"ok": False, "error": str(exc)}
    if got != ["message", channel, message]:
        return {"ok": False, "error": f"PUBLISH reached {receivers}; the subscriber got {got!r}"}
    return {"ok": True, "error": "", "receivers": receivers}


def main(env_file: str, key: str) -> dict[str, Any]:
    tier = Tier(read_env(env_file))
    steps: dict[str, Any] = {"reach": reach(tier)}
    if not steps["reach"]["ok"]:
        return steps
    steps["tls"] = tls(tier)
    if not steps["tls"]["ok"]:
        return steps
    steps["login"] = login(tier)
    if not steps["login"]["ok"]:
        return steps
    steps["canary"] = canary(tier, key)
    steps["pubsub"] = pubsub(tier, key)
    return steps


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
