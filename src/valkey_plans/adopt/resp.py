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


class _Short(Exception):
    """The buffer ends inside a reply: read more and parse it again."""


def bulk(raw: bytes) -> bytes:
    """One argument (or bulk reply) as RESP: `$len\\r\\n...\\r\\n`."""
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


def encode(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands as one RESP request."""
    parts: list[bytes] = []
    add = parts.append
    for args in commands:
        add(b"*%d\r\n" % len(args))
        for arg in args:
            raw = arg if type(arg) is bytes else str(arg).encode()
            add(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(parts)


class Conn:
    """One connection to a Redis or Valkey server, by TCP port or unix socket.

    Replies are parsed from one big receive buffer (not line by line): the copy reads
    millions of small replies, and `read_raw` hands a reply's bytes on unparsed (a
    value read from Redis is written to Valkey as the very bytes it came in)."""

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
        self.buf = b""
        self.pos = 0
        if password is not None:
            self.call(*(["AUTH", user, password] if user else ["AUTH", password]))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, commands: list[tuple[Any, ...]]) -> None:
        """Write commands without reading their replies (a pipeline's first half)."""
        self.sock.sendall(encode(commands))

    def send_raw(self, request: bytes) -> None:
        """Write an already encoded request."""
        self.sock.sendall(request)

    def _more(self) -> None:
        """Receive more: at least 1 MB at a time, more while one reply outgrows it."""
        rest = self.buf[self.pos :]
        chunk = self.sock.recv(max(1 << 20, len(rest)))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf, self.pos = rest + chunk, 0

    def _parsed(self, parse: Any) -> Any:
        while True:
            try:
                value, end = parse(self.buf, self.pos)
            except _Short:
                self._more()
                continue
            self.pos = end
            return value

    def read(self) -> Reply:
        """One reply; an error reply is returned as a ReplyError, not raised."""
        return self._parsed(_parse)

    def read_raw(self) -> bytes:
        """One reply as the bytes it came in (an error reply too: starts with `-`)."""
        return self._parsed(_span)

    def read_many(self, count: int) -> list[Reply]:
        """`count` replies, parsed in one loop (a pipeline's second half)."""
        out: list[Reply] = []
        while len(out) < count:
            buf, at = self.buf, self.pos
            try:
                while len(out) < count:
                    value, at = _parse(buf, at)
                    out.append(value)
                    self.pos = at
            except _Short:
                self._more()
        return out

    def errors(self, count: int) -> list[bytes]:
        """Skip `count` replies; the error replies among them."""
        found: list[bytes] = []
        left = count
        while left:
            buf, at = self.buf, self.pos
            try:
                while left:
                    end = _skip(buf, at)
                    if buf[at] == 45:  # -
                        found.append(buf[at:end])
                    at = self.pos = end
                    left -= 1
            except _Short:
                self._more()
        return found

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Reply]:
        """Send every command, then read every reply (errors returned in place)."""
        if not commands:
            return []
        self.send(commands)
        return self.read_many(len(commands))

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


def _parse(buf: bytes, pos: int) -> tuple[Reply, int]:
    """(reply, end) of the reply at `pos`."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Short
    kind = buf[pos]
    if kind == 36:  # $
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        if len(buf) < end + size + 4:
            raise _Short
        return buf[end + 2 : end + 2 + size], end + size + 4
    if kind == 42:  # *
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        items, at = [], end + 2
        for _ in range(size):
            item, at = _parse(buf, at)
            items.append(item)
        return items, at
    if kind == 58:  # :
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # +
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # -
        return ReplyError(buf[pos + 1 : end].decode(errors="replace")), end + 2
    raise ConnectionError(f"unexpected reply {buf[pos : pos + 40]!r}")


def _skip(buf: bytes, pos: int) -> int:
    """The end of the reply at `pos`, nothing decoded."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Short
    kind = buf[pos]
    if kind == 36:  # $
        size = int(buf[pos + 1 : end])
        if size < 0:
            return end + 2
        if len(buf) < end + size + 4:
            raise _Short
        return end + size + 4
    if kind == 42:  # *
        at = end + 2
        for _ in range(int(buf[pos + 1 : end])):
            at = _skip(buf, at)
        return at
    return end + 2


def _span(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = _skip(buf, pos)
    return buf[pos:end], end


def decode(span: bytes, at: int = 0) -> Reply:
    """The reply at `at` of some reply's bytes (as `read_raw` returned them), parsed."""
    return _parse(span, at)[0]


def elements(span: bytes) -> tuple[int, bytes]:
    """An array reply of bulk strings: (count, the elements' bytes, each `$len\\r\\n..`),
    which are also the arguments of a command that writes them back."""
    end = span.index(b"\r\n")
    return int(span[1:end]), span[end + 2 :]


def bulk_items(body: bytes, count: int) -> list[bytes]:
    """The `count` bulk strings of `body` (as `elements` returned it), each still encoded."""
    items, at = [], 0
    for _ in range(count):
        end = body.index(b"\r\n", at)
        stop = end + int(body[at + 1 : end]) + 4
        items.append(body[at:stop])
        at = stop
    return items


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
