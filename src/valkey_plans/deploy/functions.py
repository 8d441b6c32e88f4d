"""pyinfra fact and operation: the valkey_plans Functions library on each cache instance.

The library enforces the cache's exact record bounds on the server, so a cache
instance is not deployed until it carries the version this package ships. The
fact asks the running instance for its loaded version (one `FCALL_RO`); the
operation uploads the packaged Lua and loads it only when that version differs.
"""

from __future__ import annotations

from collections.abc import Generator
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation
from pyinfra.operations import files

from valkey_plans.client.functions import (
    LIBRARY_NAME,
    VERSION_FUNCTION,
    library_source,
    library_version,
)
from valkey_plans.deploy.valkey_cli import valkey_cli

DEFAULT_LIBRARY_PATH = "/etc/valkey/valkey_plans.lua"


class ValkeyLibraryVersion(FactBase[str | None]):
    """The version of the `valkey_plans` library loaded on a Valkey instance, None if absent.

    + port: the instance's TCP port
    + host_address: the address valkey-cli connects to (default 127.0.0.1)

    A refused connection fails the fact (valkey-cli exits non-zero): the deploy must
    not guess about an instance it cannot reach.
    """

    def command(
        self,
        port: int,
        host_address: str = "127.0.0.1",
        socket: str | None = None,
        auth_file: str | None = None,
    ) -> StringCommand:
        return valkey_cli(
            port,
            "FCALL_RO",
            VERSION_FUNCTION,
            "0",
            host_address=host_address,
            socket=socket,
            auth_file=auth_file,
        )

    def process(self, output: list[str]) -> str | None:
        text = "\n".join(output).strip()
        if "function not found" in text.lower():
            return None
        if text.startswith(("ERR", "NOAUTH", "WRONGPASS", "NOPERM")) or not text:
            raise ValueError(f"cannot read the {LIBRARY_NAME} library version: {text!r}")
        return text


@operation()
def library_loaded(
    port: int,
    host_address: str = "127.0.0.1",
    path: str = DEFAULT_LIBRARY_PATH,
    socket: str | None = None,
    auth_file: str | None = None,
) -> Generator[StringCommand, None, None]:
    """
    Load this package's `valkey_plans` Functions library on one running cache instance.

    + port: the cache instance's TCP port
    + host_address: the address valkey-cli connects to (default 127.0.0.1)
    + path: where the Lua source is kept on the host (uploaded when it differs)
    + socket: reach the instance over this unix socket instead of TCP
    + auth_file: root-only file with the admin password (instances with ACLs)

    Loads (`FUNCTION LOAD REPLACE`) only when the loaded version differs from the
    packaged one; otherwise a no-op.

    **Example:**

    .. code:: python

        library_loaded(name="valkey_plans library on cache", port=6380)
    """
    yield from files.put._inner(src=StringIO(library_source()), dest=path, mode="644")
    where = {"host_address": host_address, "socket": socket, "auth_file": auth_file}
    loaded = host.get_fact(ValkeyLibraryVersion, port=port, **where)
    wanted = library_version()
    if loaded == wanted:
        host.noop(f"{LIBRARY_NAME} version {wanted} already loaded on port {port}")
        return
    yield StringCommand(
        valkey_cli(port, "-x", "FUNCTION", "LOAD", "REPLACE", **where),
        "<",
        QuoteString(path),
        # valkey-cli exits 0 even on an error reply; the load succeeded only if it
        # answered with the library's name
        "| grep -qx",
        QuoteString(LIBRARY_NAME),
    )
