"""An external hosted tier as a managed service hands it out: TLS, a token or users.

Real `valkey-server`s play the service (TLS with a throwaway CA; `requirepass`, or ACL
users per workload with `default` off). The application side is built only from what
the plan renders: the env file, loaded by `valkey_plans.client.settings`, and the
hosted-tier probe that `verify` runs on the app host.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import valkey
from pydantic import SecretStr

from tests.iovalkey_node import env_of, readme_round_trip
from tests.pki import Pki, make_pki
from tests.valkey_server import free_port
from valkey_plans.client import functions
from valkey_plans.client.cache import LocalCache
from valkey_plans.client.clients import Clients
from valkey_plans.client.settings import load_settings
from valkey_plans.client.store import Store
from valkey_plans.plan import Plan
from valkey_plans.plan.acl import acl_lines
from valkey_plans.plan.app_settings import app_environment
from valkey_plans.plan.secrets import ACL_USERS
from valkey_plans.verify import hosted_probe
from valkey_plans.verify.checks import test_hosted as checks

TOKEN = "s3rvice-token-1"
NAME = "hosted.test"
USERS = {"api": "api", "queue": "blocking", "subscriber": "subscriber", "background": "background"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "service", (NAME,), ("127.0.0.1",))


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> Pki:
    """A certificate for NAME only: reached at 127.0.0.1, only the server name verifies."""
    return make_pki(tmp_path_factory.mktemp("named"), "named", (NAME,))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory) -> Pki:
    """A second CA: its certificate is the "untrusted" one."""
    return make_pki(tmp_path_factory.mktemp("stranger"), "stranger", (NAME,), ("127.0.0.1",))


def tls_config(pki: Pki) -> dict[str, str]:
    tls = {"tls_port": str(free_port()), "tls_cert_file": str(pki.cert)}
    tls |= {"tls_key_file": str(pki.key), "tls_ca_cert_file": str(pki.ca)}
    return tls | {"tls_auth_clients": "no"}


def env_file(tmp_path: Path, hosted: dict, port: int, secrets: dict[str, str]) -> Path:
    """The env file the deploy would write for an app host naming this tier."""
    env_dir = tmp_path / "settings"
    data = {"valkey_app": {"name": "shop", "env_dir": str(env_dir), "hosted": hosted}}
    plan = Plan.from_host_data("web-1", data)
    env = app_environment(plan, hosted_passwords={k: SecretStr(v) for k, v in secrets.items()})
    env_dir.mkdir(exist_ok=True)
    if plan.app.hosted_ca_path():
        shutil.copy(hosted["tls_ca_file"], plan.app.hosted_ca_path())  # what the deploy installs
    path = env_dir / "shop.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


@pytest.fixture
def token_tier(valkey_factory, named):
    tls = tls_config(named)
    proc = valkey_factory("token", requirepass=TOKEN, login=("default", TOKEN), **tls)
    return proc, int(tls["tls_port"])


@pytest.fixture
def users_tier(valkey_factory, pki):
    """The ACL users this plan itself deploys (plan/acl.py), `default` off: the service."""
    tls = tls_config(pki)
    proc = valkey_factory("users", **tls)
    plan = Plan.from_host_data("svc", {"valkey_acl": True})
    passwords = {user: SecretStr(f"{user}-password") for user in ACL_USERS}
    admin = proc.client()
    lines = acl_lines(plan, plan.instances[0], passwords)
    for line in lines[1:] + lines[:1]:  # `default` goes off last
        admin.execute_command("ACL", "SETUSER", *line.split()[1:])
    return proc, int(tls["tls_port"])


def token_hosted(pki: Pki, port: int) -> dict:
    url = f"valkeys://127.0.0.1:{port}"
    return {"url": url, "login": "token", "tls_ca_file": str(pki.ca), "tls_server_name": NAME}


def per_workload(pki: Pki, port: int) -> tuple[dict, dict[str, str]]:
    hosted = {"url": f"valkeys://127.0.0.1:{port}", "login": "per-workload"}
    hosted["tls_ca_file"] = str(pki.ca)
    secrets = {f"hosted_{workload}": f"{user}-password" for user, workload in USERS.items()}
    return hosted, secrets


def store_node(valkey_factory, hosted: Clients, name: str) -> Store:
    cache = valkey_factory(name, databases="4", maxmemory_policy="volatile-lru")
    functions.ensure_loaded(cache.client())
    local = LocalCache.from_clients(*(cache.client(db=n) for n in range(4)))
    return Store(hosted.api, local, subscriber=hosted.subscriber, node=name)


def prove_store(valkey_factory, path: Path) -> None:
    """Two store nodes on clients built from the env file alone; invalidation crosses."""
    a_clients, b_clients = (Clients(load_settings(env={}, env_file=path).hosted) for _ in "ab")
    a, b = store_node(valkey_factory, a_clients, "a"), store_node(valkey_factory, b_clients, "b")
    with a.running(), b.running():
        assert a.subscribed.wait(5) and b.subscribed.wait(5)
        key = a.save_user({"email": "ann@example.com", "name": "Ann"})
        assert b.get_user(key) == {"email": "ann@example.com", "name": "Ann"}
        a.save_user({"email": "ann@example.com", "name": "Ann B"}, key=key)
        deadline = time.monotonic() + 5
        while b.local.users.client.exists(key) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert b.get_user(key) == {"email": "ann@example.com", "name": "Ann B"}
    a_clients.close(), b_clients.close()


def test_the_readme_node_recipe_reaches_a_token_tier_by_server_name(tmp_path, token_tier, named):
    _, port = token_tier
    path = env_file(tmp_path, token_hosted(named, port), port, {"hosted": TOKEN})
    readme_round_trip(env_of(path), tmp_path, "vp:canary:node:token")


def test_the_readme_node_recipe_logs_in_per_workload(tmp_path, users_tier, pki):
    _, port = users_tier
    hosted, secrets = per_workload(pki, port)
    path = env_file(tmp_path, hosted, port, secrets)
    readme_round_trip(env_of(path), tmp_path, "vp:canary:node:users")


def test_token_login_with_a_ca_file_and_server_name(tmp_path, token_tier, named, valkey_factory):
    _, port = token_tier
    path = env_file(tmp_path, token_hosted(named, port), port, {"hosted": TOKEN})
    text = path.read_text()
    assert f"VALKEY_API_PASSWORD={TOKEN}\n" in text and "VALKEY_API_USER" not in text
    assert f"VALKEY_TLS_SERVERNAME={NAME}\n" in text and "VALKEY_TLS=1\n" in text
    clients = Clients(load_settings(env={}, env_file=path).hosted)
    clients.api.set("vp:test", "1")
    assert clients.api.get("vp:test") == b"1" and clients.background.delete("vp:test") == 1
    clients.close()
    steps = hosted_probe.main(str(path), "vp:canary:hosted:test")
    assert all(step["ok"] for step in steps.values()), steps
    assert steps["login"]["whoami"] == dict.fromkeys(hosted_probe.WORKLOADS, "default")
    prove_store(valkey_factory, path)


def test_a_user_per_workload_logs_in_as_its_own_user(tmp_path, users_tier, pki, valkey_factory):
    _, port = users_tier
    hosted, secrets = per_workload(pki, port)
    path = env_file(tmp_path, hosted, port, secrets)
    steps = hosted_probe.main(str(path), "vp:canary:hosted:test")
    assert all(step["ok"] for step in steps.values()), steps
    assert steps["login"]["whoami"]["blocking"] == "queue"
    settings = load_settings(env={}, env_file=path).hosted
    assert settings.credentials("blocking").user == "queue"
    prove_store(valkey_factory, path)


def test_one_user_with_every_permission_serves_every_workload(tmp_path, pki, valkey_factory):
    """A typical managed service: one ACL user granted everything, `default` off."""
    tls = tls_config(pki)
    admin = valkey_factory("one-user", **tls).client()
    admin.execute_command("ACL", "SETUSER", "app", "on", ">app-password-1", "~*", "&*", "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "off")
    port = int(tls["tls_port"])
    hosted = {"url": f"valkeys://127.0.0.1:{port}", "login": "user", "user": "app"}
    hosted["tls_ca_file"] = str(pki.ca)
    path = env_file(tmp_path, hosted, port, {"hosted": "app-password-1"})
    steps = hosted_probe.main(str(path), "vp:canary:hosted:one")
    assert all(step["ok"] for step in steps.values()), steps
    assert steps["login"]["whoami"] == dict.fromkeys(hosted_probe.WORKLOADS, "app")
    readme_round_trip(env_of(path), tmp_path, "vp:canary:node:one")
    prove_store(valkey_factory, path)


def failing_check(steps: dict, plan: Plan) -> list[str]:
    """Run every check on the probe's steps: (check, outcome, message) lines."""
    outcomes = []
    for name in dir(checks):
        if name.startswith("test_hosted_"):
            try:
                getattr(checks, name)(steps, plan)
                outcomes.append(f"{name}: pass")
            except pytest.skip.Exception as exc:
                outcomes.append(f"{name}: skip {exc}")
            except (AssertionError, pytest.fail.Exception) as exc:
                outcomes.append(f"{name}: FAIL {exc}")
    return [line for line in outcomes if ": FAIL" in line]


def plan_of(path: Path, hosted: dict) -> Plan:
    data = {"valkey_app": {"name": "shop", "env_dir": str(path.parent), "hosted": hosted}}
    return Plan.from_host_data("web-1", data)


def test_a_wrong_password_fails_the_login_check_and_says_which_secret(tmp_path, token_tier, named):
    _, port = token_tier
    hosted = token_hosted(named, port)
    path = env_file(tmp_path, hosted, port, {"hosted": "rotated-elsewhere"})
    (line,) = failing_check(hosted_probe.main(str(path), "vp:canary:x"), plan_of(path, hosted))
    assert line.startswith("test_hosted_workloads_log_in: FAIL"), line
    assert "WRONGPASS" in line and "VALKEY_PLANS_SECRET_HOSTED" in line, line


def test_an_untrusted_certificate_fails_the_tls_check(tmp_path, token_tier, stranger):
    _, port = token_tier
    hosted = token_hosted(stranger, port)  # the app trusts another CA than the service's
    path = env_file(tmp_path, hosted, port, {"hosted": TOKEN})
    (line,) = failing_check(hosted_probe.main(str(path), "vp:canary:x"), plan_of(path, hosted))
    assert line.startswith("test_hosted_tls_verifies_certificate: FAIL"), line
    assert "not trusted" in line and "tls_ca_file" in line, line


def test_a_wrong_server_name_fails_the_tls_check(tmp_path, token_tier, named):
    _, port = token_tier
    hosted = token_hosted(named, port) | {"tls_server_name": "other.test"}
    path = env_file(tmp_path, hosted, port, {"hosted": TOKEN})
    (line,) = failing_check(hosted_probe.main(str(path), "vp:canary:x"), plan_of(path, hosted))
    assert line.startswith("test_hosted_tls_verifies_certificate: FAIL"), line
    assert "Hostname mismatch" in line or "hostname" in line.lower(), line


def test_an_unreachable_endpoint_fails_the_reach_check(tmp_path, pki):
    port = free_port()
    hosted = token_hosted(pki, port)
    path = env_file(tmp_path, hosted, port, {"hosted": TOKEN})
    (line,) = failing_check(hosted_probe.main(str(path), "vp:canary:x"), plan_of(path, hosted))
    assert line.startswith("test_hosted_endpoint_reachable: FAIL"), line
    assert "cannot reach" in line and "allow-list" in line, line


def test_the_probe_runs_with_the_standard_library_only():
    """It runs on app hosts that have python3 but not valkey-plans."""
    imported = {
        line.split()[1].split(".")[0]
        for line in Path(hosted_probe.__file__).read_text().splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imported <= {"__future__", "json", "socket", "ssl", "sys", "time", "typing"}


def test_async_clients_check_the_certificate_by_the_server_name(tmp_path, token_tier, named):
    import asyncio

    from valkey_plans.client.clients import AsyncClients

    _, port = token_tier
    good = env_file(tmp_path, token_hosted(named, port), port, {"hosted": TOKEN})

    async def main(path: Path) -> bytes | None:
        async with AsyncClients(load_settings(env={}, env_file=path).hosted) as clients:
            await clients.api.set("vp:test:async", "1", ex=10)
            return await clients.api.get("vp:test:async")

    assert asyncio.run(main(good)) == b"1"
    other = tmp_path / "other"
    other.mkdir()
    bad_hosted = token_hosted(named, port) | {"tls_server_name": "other.test"}
    bad = env_file(other, bad_hosted, port, {"hosted": TOKEN})
    with pytest.raises(valkey.ConnectionError, match="certificate verify failed|Hostname mismatch"):
        asyncio.run(main(bad))


def test_a_cluster_mode_service_with_a_token(tmp_path, valkey_factory):
    """mode cluster: VALKEY_CLUSTER_NODES from the url and the seeds; clients and probe."""
    node = valkey_factory(
        "cluster",
        cluster_enabled="yes",
        cluster_port=str(free_port()),
        cluster_announce_ip="127.0.0.1",  # a lone node never learns its address from a peer
        requirepass=TOKEN,
        login=("default", TOKEN),
    )
    admin = node.client(password=TOKEN)
    admin.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    deadline = time.monotonic() + 10
    while admin.cluster("info")["cluster_state"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.05)
    down = free_port()  # the url names a node that is down: the seed must carry the client
    hosted = {"url": f"valkey://127.0.0.1:{down}", "mode": "cluster", "login": "token"}
    hosted["seeds"] = [f"127.0.0.1:{node.port}"]
    path = env_file(tmp_path, hosted, down, {"hosted": TOKEN})
    assert f"VALKEY_CLUSTER_NODES=127.0.0.1:{down},127.0.0.1:{node.port}\n" in path.read_text()
    with Clients(load_settings(env={}, env_file=path).hosted) as clients:
        assert isinstance(clients.api, valkey.ValkeyCluster)
        clients.api.set("usr:cluster", "1")
        assert clients.api.get("usr:cluster") == b"1"
    hosted["url"], hosted["seeds"] = f"valkey://127.0.0.1:{node.port}", []
    path = env_file(tmp_path, hosted, node.port, {"hosted": TOKEN})
    steps = hosted_probe.main(str(path), "vp:canary:hosted:cluster")
    assert all(step["ok"] for step in steps.values()), steps
    readme_round_trip(env_of(path), tmp_path, "vp:canary:node:cluster")
