"""The cache instance's Functions library: its source, its version, loading and checking it.

The Lua file shipped in the package is the one source: the version clients require
is read out of it, so the library a client expects and the library the deploy loads
cannot drift apart.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import valkey

from valkey_plans.client.commands import Call, Client, Reply, run

LIBRARY_NAME = "valkey_plans"
VERSION_FUNCTION = "vp_version"
_VERSION_LINE = re.compile(r"^local VERSION = '([^']+)'$", re.MULTILINE)

REDEPLOY_HINT = (
    "redeploy with pyinfra (`pyinfra INVENTORY deploy.py`), which loads the library "
    "shipped with this package on every cache instance"
)


class LibraryVersionError(RuntimeError):
    """The cache instance lacks the library, or runs a version this package cannot use."""


@cache
def library_source() -> str:
    """The Lua library as shipped in this package (`valkey_plans/client/lua/cache.lua`)."""
    return (
        resources.files("valkey_plans.client").joinpath("lua/cache.lua").read_text(encoding="utf-8")
    )


@cache
def library_version() -> str:
    """The version this package needs, as declared inside the Lua source."""
    match = _VERSION_LINE.search(library_source())
    if match is None:
        raise LibraryVersionError("lua/cache.lua declares no `local VERSION = '...'` line")
    return match.group(1)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _where(client: Client) -> str:
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _none_if_missing(error: valkey.ResponseError) -> None:
    """No such function means no library loaded: an answer, not a failure."""
    if "function not found" in str(error).lower():
        return None
    raise error


def _mismatch(client: Client, loaded: str | None) -> str:
    found = (
        "no library valkey_plans" if loaded is None else f"library valkey_plans version {loaded}"
    )
    return (
        f"cache instance on {_where(client)} has {found}, "
        f"this package needs version {library_version()}: {REDEPLOY_HINT}"
    )


def version_call() -> Call[str | None]:
    """FCALL_RO vp_version: the loaded library's version, None when there is no library."""
    return Call(("FCALL_RO", VERSION_FUNCTION, 0), _text, refused=_none_if_missing)


def version_check(client: Client) -> Call[str]:
    """`version_call`, raising `LibraryVersionError` unless it names this package's version."""

    def required(loaded: str | None) -> str:
        if loaded != library_version():
            raise LibraryVersionError(_mismatch(client, loaded))
        return loaded

    return version_call().then(required)


def loaded_version(client: Client) -> Reply[str | None]:
    """The version of the library loaded on this instance, or None when there is none."""
    return run(client, version_call())


def ensure_loaded(client: valkey.Valkey) -> bool:
    """Load (or replace) the library unless the same version is already there.

    Returns True when it loaded something. This is what the deploy does on each cache
    instance; tests call it to set up a server the same way.
    """
    if loaded_version(client) == library_version():
        return False
    client.function_load(library_source(), replace=True)
    return True


def require_version(client: Client) -> Reply[str]:
    """Fail loudly at start when the instance was not deployed with this package's library
    (on an asyncio client, when the returned awaitable is awaited)."""
    return run(client, version_check(client))
