"""A small RESP2 client over the standard library: the adoption runs on the adopted host.

The deploy copies this package to the host and runs it with the host's own python3,
next to Redis and Valkey, so the write pause is not stretched by an SSH round trip and
the host needs no pip. Only what the adoption uses: commands, pipelines, pub/sub
messages. Replies come back raw (bytes, ints, lists), never decoded: values, scores and
stream ids are copied byte for byte.
"""

from __future__ import annotations

import socket
from typing import Any

Reply = Any


class ReplyError(Exception):
    """An error reply (`-ERR ...`) from the server."""


class Conn:
    """One connection to a Redis or Valkey server, by TCP port or unix socket."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        unix: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        if password is not None:
            self.call(*(["AUTH", user, password] if user else ["AUTH", password]))

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, commands: list[tuple[Any, ...]]) -> None:
        """Write commands without reading their replies (a pipeline's first half)."""
        parts: list[bytes] = []
        add = parts.append
        for args in commands:
            add(b"*%d\r\n" % len(args))
            for arg in args:
                raw = arg if type(arg) is bytes else str(arg).encode()
                add(b"$%d\r\n" % len(raw))
                add(raw)
                add(b"\r\n")
        self.sock.sendall(b"".join(parts))

    def read(self) -> Reply:
        """One reply; an error reply is returned as a ReplyError, not raised."""
        line = self.file.readline()
        kind = line[:1]
        if kind == b"$":
            size = int(line[1:-2])
            return None if size < 0 else self.file.read(size + 2)[:-2]
        if kind == b"*":
            size = int(line[1:-2])
            return None if size < 0 else [self.read() for _ in range(size)]
        if kind == b":":
            return int(line[1:-2])
        if kind == b"+":
            return line[1:-2]
        if kind == b"-":
            return ReplyError(line[1:-2].decode(errors="replace"))
        if not line:
            raise ConnectionError("the server closed the connection")
        raise ConnectionError(f"unexpected reply {line[:40]!r}")

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Reply]:
        """Send every command, then read every reply (errors returned in place)."""
        if not commands:
            return []
        self.send(commands)
        return [self.read() for _ in commands]

    def call(self, *args: Any) -> Reply:
        """One command; an error reply raises ReplyError."""
        reply = self.pipeline([args])[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def text(self, *args: Any) -> str:
        """One command whose reply is text (INFO, CONFIG values)."""
        reply = self.call(*args)
        return reply.decode() if isinstance(reply, bytes) else str(reply)


def info(conn: Conn, section: str = "") -> dict[str, str]:
    """INFO as a dict of `field: value` (section headers and blank lines dropped)."""
    text = conn.text("INFO", section) if section else conn.text("INFO")
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value
    return fields


def config_get(conn: Conn, name: str) -> str:
    """One CONFIG GET value as text ("" when unset)."""
    reply = conn.call("CONFIG", "GET", name)
    return reply[1].decode() if reply else ""
