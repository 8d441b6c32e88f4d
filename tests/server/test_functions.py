"""Loading the library and the clear error when an instance has none or another version."""

from __future__ import annotations

import pytest

from valkey_plans.client import functions
from valkey_plans.client.cache import LocalCache


def test_missing_library_is_named_with_where_and_how_to_fix(valkey_server) -> None:
    client = valkey_server.client()
    with pytest.raises(functions.LibraryVersionError) as raised:
        functions.require_version(client)
    message = str(raised.value)
    assert f":{valkey_server.port} has no library valkey_plans" in message
    assert f"needs version {functions.library_version()}" in message
    assert "redeploy with pyinfra" in message


def test_other_version_is_refused_then_replaced(valkey_server) -> None:
    client = valkey_server.client()
    old = functions.library_source().replace(
        f"local VERSION = '{functions.library_version()}'", "local VERSION = 'old-0'"
    )
    client.function_load(old)
    with pytest.raises(functions.LibraryVersionError, match="version old-0, this package needs"):
        LocalCache.from_clients(*(valkey_server.client(db=n) for n in range(4)))
    assert functions.ensure_loaded(client) is True
    assert functions.ensure_loaded(client) is False
    assert functions.require_version(client) == functions.library_version()
    # functions are per instance, not per db: every db's client sees the library
    LocalCache.from_clients(*(valkey_server.client(db=n) for n in range(4)))


def test_version_comes_from_the_shipped_lua() -> None:
    source = functions.library_source()
    assert source.startswith("#!lua name=valkey_plans\n")
    assert f"local VERSION = '{functions.library_version()}'" in source
