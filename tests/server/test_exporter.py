"""The real exporter against a real valkey-server under the rendered aclfile.

Debian's prometheus-redis-exporter (what the deploy installs) scrapes a throwaway
server as the `exporter` ACL user, with the env file the deploy renders: /metrics has
`redis_up 1` and the keyspace, Valkey's ACL LOG shows no denied command after a few
scrapes (the exporter's rules are exactly what it runs), and a wrong password makes
`redis_up 0`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.valkey_server import ValkeyProcess, free_port
from valkey_plans.plan import Plan
from valkey_plans.plan.model import CLUSTER_BUS_OFFSET
from valkey_plans.plan.render import acl_file, exporter_environment
from valkey_plans.plan.secrets import ACL_USERS, EXPORTER_USER
from valkey_plans.verify.checks.test_exporter import samples

EXPORTER = shutil.which("prometheus-redis-exporter") or "/usr/bin/prometheus-redis-exporter"
pytestmark = pytest.mark.skipif(
    not os.access(EXPORTER, os.X_OK), reason="needs Debian's prometheus-redis-exporter"
)


def free_ports(highest: int = 65535) -> tuple[int, int]:
    """(valkey port, exporter port): both free now, the exporter's the higher, so that the
    plan's port_offset puts the exporter exactly there (machines here run many suites).
    `highest` bounds the valkey port: a cluster node's bus port is port + 10000."""
    while True:
        port, exporter_port = free_port(), free_port()
        if port < exporter_port <= port + 60000 and port <= highest:
            return port, exporter_port


def plan_for(port: int, offset: int, role: str = "cache", **exporter: object) -> Plan:
    inst = {"name": "cache", "role": role, "port": port}
    if role == "cluster-node":
        inst |= {"cluster": "c", "bind": ["127.0.0.1"], "announce_ip": "10.0.0.1"}
    return Plan.from_host_data(
        "h",
        {
            "valkey_instances": [inst],
            "valkey_app": {"cache_instance": "cache" if role == "cache" else None},
            "valkey_acl": True,
            "valkey_exporter": {"port_offset": offset, **exporter},
        },
    )


@pytest.fixture
def passwords() -> dict[str, SecretStr]:
    return {u: SecretStr(secrets.token_urlsafe(24)) for u in (*ACL_USERS, EXPORTER_USER)}


@pytest.fixture
def server(tmp_path: Path, passwords) -> Iterator[Callable[..., tuple[ValkeyProcess, Plan]]]:
    """server(**valkey_exporter) -> a real valkey-server under that plan's aclfile."""
    started: list[ValkeyProcess] = []

    def start(role: str = "cache", **exporter: object) -> tuple[ValkeyProcess, Plan]:
        port, exporter_port = free_ports(
            65535 - CLUSTER_BUS_OFFSET if role == "cluster-node" else 65535
        )
        plan = plan_for(port, exporter_port - port, role, **exporter)
        aclfile = tmp_path / f"users-{port}.acl"
        aclfile.write_text(acl_file(plan, plan.instances[0], passwords))
        admin = ("admin", passwords["admin"].get_secret_value())
        extra = {"cluster_enabled": "yes"} if role == "cluster-node" else {}
        dbs = str(plan.instances[0].databases)
        proc = ValkeyProcess(
            tmp_path / f"v{port}",
            port=port,
            login=admin,
            aclfile=str(aclfile),
            databases=dbs,
            **extra,
        )
        started.append(proc.start())
        return proc, plan

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], str]]:
    """exporter(env) -> the URL of a running exporter with exactly that environment."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> str:
        log = tmp_path / f"exporter-{len(procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([EXPORTER], env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = f"http://{env['REDIS_EXPORTER_WEB_LISTEN_ADDRESS']}/metrics"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                return url
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the exporter never answered on {url}: {log.read_text()[-2000:]}")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(url: str) -> dict[str, str]:
    return samples(urllib.request.urlopen(url, timeout=10).read().decode())


def admin_client(proc: ValkeyProcess, passwords, db: int = 0):
    return proc.client(username="admin", password=passwords["admin"].get_secret_value(), db=db)


def test_exporter_serves_up_and_keyspace_and_runs_nothing_its_acl_denies(
    server, exporter, passwords
):
    proc, plan = server()
    admin_client(proc, passwords, 0).set("a@example.com", "usr:000000000000")
    admin_client(proc, passwords, 1).set("usr:000000000001", "x", ex=600)
    url = exporter(exporter_environment(plan, plan.instances[0], passwords["exporter"]))
    for _ in range(3):
        found = scrape(url)
    assert found["redis_up"] == "1"
    assert found['redis_db_keys{db="db0"}'] == "1"
    assert found['redis_db_keys{db="db1"}'] == "1"
    assert any(f'tcp_port="{proc.port}"' in k for k in found if k.startswith("redis_instance_info"))
    assert admin_client(proc, passwords).execute_command("ACL", "LOG") == []


def test_key_patterns_report_sizes_within_read_only_key_rules(server, exporter, passwords):
    proc, plan = server(key_patterns=["db1=usr:*", "db2=ses:*", "db3=vp:*"])
    admin_client(proc, passwords, 1).set("usr:000000000001", "12")
    admin_client(proc, passwords, 2).hset("ses:000000000002", mapping={"a": "1", "b": "2"})
    admin_client(proc, passwords, 3).rpush("vp:queue", "m1", "m2", "m3")
    admin_client(proc, passwords, 3).zadd("vp:lru", {"k": 1})
    url = exporter(exporter_environment(plan, plan.instances[0], passwords["exporter"]))
    for _ in range(3):
        found = scrape(url)
    assert found["redis_up"] == "1"
    assert found['redis_key_size{db="db1",key="usr:000000000001"}'] == "2"
    assert found['redis_key_size{db="db2",key="ses:000000000002"}'] == "2"
    assert found['redis_key_size{db="db3",key="vp:queue"}'] == "3"
    assert admin_client(proc, passwords).execute_command("ACL", "LOG") == []


def test_a_wrong_password_makes_redis_up_0(server, exporter, passwords):
    proc, plan = server()
    env = exporter_environment(plan, plan.instances[0], SecretStr("not-the-password-at-all"))
    found = scrape(exporter(env))
    assert found["redis_up"] == "0"
    assert not any(k.startswith("redis_db_keys") for k in found)


def test_a_cluster_node_s_exporter_needs_nothing_beyond_its_rules(server, exporter, passwords):
    proc, plan = server("cluster-node", key_patterns=["vp:*"])
    url = exporter(exporter_environment(plan, plan.instances[0], passwords["exporter"]))
    for _ in range(3):
        found = scrape(url)
    assert found["redis_up"] == "1" and found["redis_cluster_enabled"] == "1"
    assert admin_client(proc, passwords).execute_command("ACL", "LOG") == []
