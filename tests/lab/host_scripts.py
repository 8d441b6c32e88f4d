"""Python the lab hosts run with their own python3, for the drills that compare data.

One pipelined RESP connection (1000 keys a round trip, never a valkey-cli per key),
the same against Redis and Valkey: `digest(pattern)` prints a JSON map of every key
matching `pattern` to its type, value and PEXPIRETIME; `with_login` prefixes a script
with AUTH as `admin`, reading the password from the root-only file named by argv[2].
argv[1] is always the port.
"""

from __future__ import annotations

import shlex

CONNECT = r"""
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
def enc(*a):
    a = [x.encode() for x in a]
    return b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)
def read():
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        raise SystemExit(rest.decode())
    if kind == b"+":
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else f.read(int(rest) + 2)[:-2].decode()
    if kind == b"*":
        return None if int(rest) < 0 else [read() for _ in range(int(rest))]
    raise ValueError(line)
def many(cmds):
    s.sendall(b"".join(enc(*c) for c in cmds))
    return [read() for _ in cmds]
"""

LOGIN = r"""
many([("AUTH", "admin", open(sys.argv[2]).read().strip())])
"""

_DIGEST = r"""
keys, cursor = [], "0"
while True:
    cursor, batch = many([("SCAN", cursor, "MATCH", PATTERN, "COUNT", "1000")])[0]
    keys += batch
    if cursor == "0":
        break
READ = {"string": ("GET",), "hash": ("HGETALL",), "list": ("LRANGE", "0", "-1"),
        "set": ("SMEMBERS",), "zset": ("ZRANGE", "0", "-1", "WITHSCORES"),
        "stream": ("XRANGE", "-", "+")}
out = {}
for i in range(0, len(keys), 1000):
    chunk = keys[i : i + 1000]
    types = many([("TYPE", k) for k in chunk])
    values = many([(READ[t][0], k, *READ[t][1:]) for k, t in zip(chunk, types)])
    expires = many([("PEXPIRETIME", k) for k in chunk])
    for k, t, v, e in zip(chunk, types, values, expires):
        out[k] = [t, sorted(v) if t in ("set", "hash") else v, e]
print(json.dumps(out))
"""


def digest(pattern: str, login: bool = False) -> str:
    """The digest script for keys matching `pattern` (with AUTH first when `login`)."""
    return CONNECT + (LOGIN if login else "") + f"PATTERN = {pattern!r}\n" + _DIGEST


def with_login(body: str) -> str:
    """`body` run after connecting and logging in as admin."""
    return CONNECT + LOGIN + body


def python(script: str, *args: object) -> str:
    """The shell command that runs `script` with the host's python3 and `args`."""
    return f"python3 -c {shlex.quote(script)} {' '.join(shlex.quote(str(a)) for a in args)}"
