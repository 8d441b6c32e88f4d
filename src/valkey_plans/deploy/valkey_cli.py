"""The one builder of `valkey-cli` command lines, for the deploy (pyinfra) and the checks.

Both run valkey-cli on a Valkey host as root, so both must log in the same way and
quote the same way. `cli_pieces` writes the command once, as literal shell text and
the values that must each reach the shell as one quoted word; `valkey_cli` hands it to
pyinfra (QuoteString pieces), `cli_format` to testinfra (`host.run(fmt, *values)`).

A password is never in a command line: with an `auth_file` (a root-only file the deploy
wrote) valkey-cli reads it on the host through `REDISCLI_AUTH="$(cat FILE)"`.

The checks import this module too; the client never does (an import contract in
tests/unit/test_packaging.py keeps the client off everything in deploy/).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypedDict, Unpack

from pyinfra.api import QuoteString, StringCommand


@dataclass(frozen=True)
class Quoted:
    """A value that reaches the shell as one quoted word (a path, a user, an argument)."""

    value: str | StringCommand


Piece = str | Quoted

#: The ACL user the deploy and the checks log in as.
ADMIN_USER = "admin"


def cli_pieces(
    port: int | None,
    *args: str | StringCommand,
    host_address: str = "127.0.0.1",
    socket: str | None = None,
    auth_file: str | None = None,
    user: str = ADMIN_USER,
) -> list[Piece]:
    """
    The one valkey-cli command line: its login, its target, its arguments.

    + port: the instance's TCP port, reached at `host_address`; None with neither port nor
      `socket`: the arguments name the nodes themselves (`-h`/`-p`, `--cluster create ...`)
    + args: valkey-cli's arguments, each one quoted word; a StringCommand (a shell
      expansion such as `"$@"`, or a node id read on the host) is kept as written
    + socket: reach the instance over its unix socket instead (works with TCP off, TLS only)
    + auth_file: root-only file with `user`'s password (None: no login, no ACLs)
    + user: the ACL user to log in as

    **Example:** ``cli_pieces(None, "PING", socket="/run/valkey-cache/valkey-server.sock")``
    """
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise ValueError(f"valkey port {port!r} is not a TCP port; allowed: an int 1..65535")
    pieces: list[Piece] = []
    if auth_file:
        pieces += ['REDISCLI_AUTH="$(cat ', Quoted(auth_file), ')" ']
    pieces.append("valkey-cli")
    if auth_file:
        pieces += [" --no-auth-warning --user ", Quoted(user)]
    if socket:
        pieces += [" -s ", Quoted(socket)]
    elif port is not None:
        pieces += [" -h ", Quoted(host_address), " -p ", Quoted(str(port))]
    for arg in args:
        pieces += [" ", Quoted(arg)]
    return pieces


class Where(TypedDict, total=False):
    """The keyword arguments of `cli_pieces`, for the two forms that hand them on."""

    host_address: str
    socket: str | None
    auth_file: str | None
    user: str


def valkey_cli(
    port: int | None, *args: str | StringCommand, **where: Unpack[Where]
) -> StringCommand:
    """`cli_pieces` as a pyinfra command: each value a QuoteString, a StringCommand as is."""
    pieces = cli_pieces(port, *args, **where)
    return StringCommand(*(_pyinfra(piece) for piece in pieces), _separator="")


def on_sentinel(port: int, address: str, auth_file: str | None) -> Callable[..., StringCommand]:
    """valkey-cli against a sentinel at `address`:`port`: `on_sentinel(...)(*args)`. A
    sentinel's password is its default user's (`auth_file`, None without ACLs)."""
    return partial(valkey_cli, port, host_address=address, auth_file=auth_file, user="default")


def _pyinfra(piece: Piece) -> str | StringCommand | QuoteString:
    if not isinstance(piece, Quoted):
        return piece
    if isinstance(piece.value, StringCommand):
        return piece.value
    return QuoteString(piece.value)


def cli_format(port: int | None, *args: str, **where: Unpack[Where]) -> tuple[str, ...]:
    """`cli_pieces` for testinfra: `host.run(*cli_format(...))` quotes every value itself.

    The first item is the format, the rest its values (the literal pieces are this
    module's own text, which holds no `%`).
    """
    pieces = cli_pieces(port, *args, **where)
    words = "".join(p if isinstance(p, str) else "%s" for p in pieces)
    return (words, *(str(p.value) for p in pieces if isinstance(p, Quoted)))
