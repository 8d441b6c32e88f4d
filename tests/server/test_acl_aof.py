"""Writes survive a restart of an AOF instance under the plan's ACL file.

Valkey replays the AOF as the `default` user and re-checks ACL permissions at EXEC
(valkey-io/valkey#3983). With `default` stripped of every command, each MULTI/EXEC
in the AOF (the store's transactions, and every Functions call, whose effects are
logged as MULTI/EXEC) was refused at load: those writes were silently gone after a
restart. This runs the rendered aclfile on a real server and restarts it.
"""

from __future__ import annotations

import secrets

import pytest
import valkey
from pydantic import SecretStr

from valkey_plans.client import functions
from valkey_plans.client.cache import fcall, run
from valkey_plans.plan import Plan
from valkey_plans.plan.render import acl_file
from valkey_plans.plan.secrets import ACL_USERS

PLAN = {
    "valkey_instances": [{"name": "hosted", "role": "primary", "port": 6380, "appendonly": True}],
    "valkey_app": {"name": "shop", "hosted_instance": "hosted", "cache_instance": None},
    "valkey_acl": True,
}


@pytest.fixture
def passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(16) for user in ACL_USERS}


@pytest.fixture
def aclfile(tmp_path, passwords):
    """The aclfile the deploy renders for the plan's hosted instance."""
    plan = Plan.from_host_data("h", PLAN)
    hashed = {user: SecretStr(password) for user, password in passwords.items()}
    path = tmp_path / "users.acl"
    path.write_text(acl_file(plan, plan.instance("hosted"), hashed))
    return path


def test_transactions_and_function_calls_in_the_aof_survive_a_restart(
    valkey_factory, aclfile, passwords
):
    server = valkey_factory(
        "aof",
        login=("admin", passwords["admin"]),
        aclfile=str(aclfile),
        appendonly="yes",
        appendfsync="always",
        databases="1",
    )
    admin = server.client(username="admin", password=passwords["admin"])
    functions.ensure_loaded(admin)
    api = server.client(username="api", password=passwords["api"])
    with api.pipeline(transaction=True) as tx:
        tx.set("vp:email:ada@example.com", "usr:8Dv2i2j9diSr")
        tx.set("usr:8Dv2i2j9diSr", '{"name": "Ada"}')
        tx.execute()
    lru = ("vp:lru:users", "vp:lru:clock", "usr:8Dv2i2j9diSs")
    run(api, fcall("vp_lru_put", lru, ('{"name": "Bob"}', 60_000, 100), str))
    written = ("vp:email:ada@example.com", "usr:8Dv2i2j9diSr", "usr:8Dv2i2j9diSs")
    before = {key: api.get(key) for key in written}
    assert all(before.values()), before

    server.restart()

    api = server.client(username="api", password=passwords["api"])
    after = {k: api.get(k) for k in before}
    assert after == before, "writes made in MULTI/EXEC or by a Function were lost on restart"
    log = (server.workdir / "valkey.log").read_text()
    assert "AOF-loading-client" not in log, log[-2000:]


def test_nobody_can_log_in_as_default(valkey_factory, aclfile, passwords):
    """`default` keeps its command rights for the AOF replay only: it stays off."""
    server = valkey_factory("acl", login=("admin", passwords["admin"]), aclfile=str(aclfile))
    with pytest.raises(valkey.AuthenticationError):
        server.client().ping()  # a new connection starts unauthenticated
    for password in ("x", "nopass", passwords["admin"]):
        with pytest.raises(valkey.AuthenticationError):
            server.client(username="default", password=password).ping()
