"""In front of a managed Valkey: app hosts whose hosted tier is a service they do not deploy.

The second lab host (trixie) plays the managed service, three times over, all TLS only
with a throwaway CA made here: (b) a `primary` with ACL users per workload and `default`
off, deployed by its own inventory (tests/lab/inventories/hosted_service.py), and (a) a
plain `valkey-server` with a `requirepass` AUTH token, started by hand over SSH (the
plan refuses `requirepass`, as it should), and (c) a three-node Valkey Cluster with one
token, also started by hand, which the forky host then names in cluster mode. The first
lab host's (bookworm) plan names (b) as an external tier, per workload, reached by
address with the certificate's name as `tls_server_name`; the forky host's names (a)
with a token. After the deploy: verify passes on both, valkey-py and the README's
iovalkey recipe, built only from the rendered env file, write and read, the store's
invalidation crosses two store nodes through each tier, a rotated hosted password
reaches the settings with no restart of the local cache, and a wrong password, an
untrusted certificate and an unreachable endpoint each fail their check.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import valkey

from tests.deploy.pyinfra_run import BIN, PROJECT_DIR, pyinfra
from tests.iovalkey_node import env_of, readme_round_trip
from tests.pki import Pki, make_pki
from tests.valkey_server import ValkeyProcess
from valkey_plans.client import functions
from valkey_plans.client.cache import LocalCache
from valkey_plans.client.clients import Clients
from valkey_plans.client.settings import load_settings
from valkey_plans.client.store import Store
from valkey_plans.lab.state import Host

pytestmark = pytest.mark.lab

SERVICE = "tests/lab/inventories/hosted_service.py"
APPS = "tests/lab/inventories/hosted_apps.py"
TLS_DIR, TLS_PORT, TOKEN_PORT = "/etc/ssl/vp-hosted", 6391, 6395
#: (c): the cluster-mode service's three nodes (TLS ports; each bus at +100), and their
#: certificate, which names the host's address: cluster clients check each node by it.
CLUSTER_PORTS = (7391, 7392, 7393)
CLUSTER_TLS_DIR = "/etc/ssl/vp-cluster"
NAME = "hosted.lab"
TOKEN = "lab-token-0123456789"
#: The service's ACL users for each workload's hosted secret.
WORKLOAD_USER = {"api": "api", "blocking": "queue", "subscriber": "subscriber"}
WORKLOAD_USER["background"] = "background"
HOSTED_CHECKS = (
    "test_hosted_endpoint_reachable",
    "test_hosted_tls_verifies_certificate",
    "test_hosted_workloads_log_in",
    "test_hosted_canary_key_round_trip",
    "test_hosted_pubsub_reaches_subscriber",
)


def app_hosts(lab) -> tuple[Host, Host]:
    """The two app hosts: bookworm (per-workload logins) and forky (a token, or cluster
    mode), so that the settings and checks run on Valkey 8.0's and 9.1's hosts."""
    return lab.hosts[0], lab.host("forky")


def put(lab, host, path: str, text: str, mode: str = "644") -> None:
    """Write `text` to `path` on a lab host (a heredoc: PEM and config text only)."""
    lab.check(host, f"mkdir -p $(dirname {path}) && cat > {path} <<'VPEOF'\n{text}VPEOF\n")
    lab.check(host, f"chmod {mode} {path}")


@pytest.fixture(scope="module")
def pki(lab_hosts, tmp_path_factory) -> tuple[Pki, Pki]:
    """The service's CA and certificate (the name NAME only), and a stranger CA."""
    directory = tmp_path_factory.mktemp("hosted-pki")
    return make_pki(directory, "lab", (NAME,)), make_pki(directory, "stranger", (NAME,))


def start_token_service(lab, host, pki: Pki) -> None:
    """(a): valkey-server with requirepass, TLS only, run as the valkey user by hand."""
    config = "\n".join(
        [
            f"bind 127.0.0.1 {host.address}",
            "port 0",
            f"tls-port {TOKEN_PORT}",
            f"tls-cert-file {TLS_DIR}/server.crt",
            f"tls-key-file {TLS_DIR}/server.key",
            f"tls-ca-cert-file {TLS_DIR}/ca.crt",
            "tls-auth-clients no",
            f"requirepass {TOKEN}",
            "dir /var/lib/vp-token",
            "save ''",
            "appendonly no",
            "daemonize yes",
            "pidfile /var/lib/vp-token/valkey.pid",
            "logfile /var/lib/vp-token/valkey.log",
        ]
    )
    put(lab, host, "/etc/vp-token/valkey.conf", config + "\n", mode="640")
    lab.check(host, "chgrp valkey /etc/vp-token/valkey.conf")
    lab.check(host, "mkdir -p /var/lib/vp-token && chown valkey:valkey /var/lib/vp-token")
    lab.run(host, "[ -f /var/lib/vp-token/valkey.pid ] && kill $(cat /var/lib/vp-token/valkey.pid)")
    time.sleep(0.5)
    lab.check(host, "runuser -u valkey -- valkey-server /etc/vp-token/valkey.conf")


@pytest.fixture(scope="module")
def cluster_pki(lab_hosts, tmp_path_factory) -> Pki:
    directory = tmp_path_factory.mktemp("cluster-pki")
    return make_pki(directory, "cluster", (NAME,), (lab_hosts.hosts[1].address,))


def start_cluster_service(lab, host, pki: Pki) -> None:
    """(c): three cluster nodes, TLS only on the client port and the bus, one AUTH token.

    A managed cluster as providers hand it out: every node answers on its own address,
    a client reaches the others through the seed list and MOVED.
    """
    put(lab, host, f"{CLUSTER_TLS_DIR}/ca.crt", pki.ca.read_text())
    put(lab, host, f"{CLUSTER_TLS_DIR}/server.crt", pki.cert.read_text())
    put(lab, host, f"{CLUSTER_TLS_DIR}/server.key", pki.key.read_text())
    nodes = []
    for port in CLUSTER_PORTS:
        home = f"/var/lib/vp-cluster/{port}"
        config = [
            f"bind 127.0.0.1 {host.address}", "port 0", f"tls-port {port}",
            f"cluster-port {port + 100}", "cluster-enabled yes", "tls-cluster yes",
            f"cluster-config-file {home}/nodes.conf",
            f"tls-cert-file {CLUSTER_TLS_DIR}/server.crt",
            f"tls-key-file {CLUSTER_TLS_DIR}/server.key",
            f"tls-ca-cert-file {CLUSTER_TLS_DIR}/ca.crt",
            "tls-auth-clients no", f"requirepass {TOKEN}", f"masterauth {TOKEN}",
            f"dir {home}", "save ''", "appendonly no", "daemonize yes",
            f"pidfile {home}/valkey.pid", f"logfile {home}/valkey.log",
        ]  # fmt: skip
        lab.check(host, f"mkdir -p {home} && chown valkey:valkey {home}")
        put(lab, host, f"{home}/valkey.conf", "\n".join(config) + "\n", mode="640")
        lab.check(host, f"chgrp valkey {home}/valkey.conf")
        lab.check(host, f"runuser -u valkey -- valkey-server {home}/valkey.conf")
        nodes.append(f"{host.address}:{port}")
    cli = f"REDISCLI_AUTH={TOKEN} valkey-cli --tls --cacert {CLUSTER_TLS_DIR}/ca.crt"
    lab.check(host, f"sleep 1; {cli} --cluster create {' '.join(nodes)} --cluster-yes")
    lab.check(
        host,
        f"for i in $(seq 100); do {cli} -h {host.address} -p {CLUSTER_PORTS[-1]} cluster info"
        " | grep -q cluster_state:ok && exit 0; sleep 0.2; done; exit 1",
    )


@pytest.fixture(scope="module")
def service(lab_hosts, pki, cluster_pki) -> dict[str, str]:
    """Both services up on the second host; returns (b)'s passwords by ACL user."""
    lab, (good, _) = lab_hosts, pki
    host = lab.hosts[1]
    put(lab, host, f"{TLS_DIR}/ca.crt", good.ca.read_text())
    put(lab, host, f"{TLS_DIR}/server.crt", good.cert.read_text())
    put(lab, host, f"{TLS_DIR}/server.key", good.key.read_text())
    run = pyinfra(SERVICE)
    assert run.returncode == 0, run.output[-5000:]
    start_token_service(lab, host, good)
    start_cluster_service(lab, host, cluster_pki)
    secrets = Path(lab.state.lab_dir) / "hosted-service-secrets.json"
    return json.loads(secrets.read_text())


def hosted_data(lab, pki: Pki, tls_port: int = TLS_PORT) -> dict[str, dict]:
    """The first app host: (b) per workload, by address + server name; the second: (a)'s
    token."""
    address = lab.hosts[1].address
    first, second = app_hosts(lab)
    return {
        first.name: {
            "url": f"valkeys://{address}:{tls_port}",
            "login": "per-workload",
            "tls_ca_file": str(pki.ca),
            "tls_server_name": NAME,
        },
        second.name: {
            "url": f"valkeys://{address}:{TOKEN_PORT}",
            "login": "token",
            "tls_ca_file": str(pki.ca),
            "tls_server_name": NAME,
        },
    }


def cluster_data(lab, pki: Pki) -> dict:
    """(c) for the second app host: cluster mode, the first node as url, the others as seeds;
    no server name (refused with cluster mode): the certificate names the address."""
    address = lab.hosts[1].address
    first, *others = CLUSTER_PORTS
    return {
        "url": f"valkeys://{address}:{first}",
        "mode": "cluster",
        "seeds": [f"{address}:{port}" for port in others],
        "login": "token",
        "tls_ca_file": str(pki.ca),
    }


def app_env(hosted: dict, passwords: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    env = {"VALKEY_PLANS_LAB_HOSTED": json.dumps(hosted), "VALKEY_PLANS_SECRET_HOSTED": token}
    for workload, user in WORKLOAD_USER.items():
        env[f"VALKEY_PLANS_SECRET_HOSTED_{workload.upper()}"] = passwords[user]
    return env


def verify(env: dict[str, str]) -> dict[tuple[str, str], dict]:
    """`valkey-plans verify APPS --json`: rows by (host, check)."""
    proc = subprocess.run(
        [str(BIN / "valkey-plans"), "verify", APPS, "--json"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.stdout.strip().startswith("["), proc.stderr[-3000:]
    return {(row["host"], row["check"]): row for row in json.loads(proc.stdout)}


@pytest.fixture(scope="module")
def apps(lab_hosts, pki, service) -> dict[str, str]:
    env = app_env(hosted_data(lab_hosts, pki[0]), service)
    run = pyinfra(APPS, env=env)
    assert run.returncode == 0, run.output[-5000:]
    return env


def test_verify_passes_on_both_app_hosts(lab_hosts, apps):
    rows = verify(apps)
    for host in (h.name for h in app_hosts(lab_hosts)):
        for check in HOSTED_CHECKS:
            assert rows[(host, check)]["status"] == "pass", rows[(host, check)]
    failing = [row for row in rows.values() if row["status"] in ("fail", "error")]
    assert not failing, failing


def settings_from(lab, host, directory: Path) -> Path:
    """The rendered env file and CA of `host`, copied here; only the CA's path is local."""
    env = lab.check(host, "cat /etc/valkey-plans/shop.env")
    ca = directory / f"{host.name}-ca.pem"
    ca.write_text(lab.check(host, "cat /etc/valkey-plans/shop-hosted-ca.pem"))
    lines = [
        f"VALKEY_TLS_CA_FILE={ca}" if line.startswith("VALKEY_TLS_CA_FILE=") else line
        for line in env.splitlines()
    ]
    path = directory / f"{host.name}.env"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def store_node(directory: Path, env_file: Path, name: str) -> tuple[Store, Clients, ValkeyProcess]:
    cache = ValkeyProcess(directory / name, databases="4", maxmemory_policy="volatile-lru").start()
    functions.ensure_loaded(cache.client())
    local = LocalCache.from_clients(*(cache.client(db=n) for n in range(4)))
    clients = Clients(load_settings(env={}, env_file=env_file).hosted)
    return Store(clients.api, local, subscriber=clients.subscriber, node=name), clients, cache


def store_invalidation_crosses(env_file: Path, directory: Path, email: str) -> None:
    """Two store nodes on clients built from `env_file` alone: a save on one drops the
    other's copy through the hosted tier's pub/sub."""
    (a, ca, pa), (b, cb, pb) = (store_node(directory, env_file, n) for n in ("a", "b"))
    try:
        with a.running(), b.running():
            assert a.subscribed.wait(10) and b.subscribed.wait(10)
            key = a.save_user({"email": email, "name": "Ann"})
            assert b.get_user(key) == {"email": email, "name": "Ann"}
            a.save_user({"email": email, "name": "Bea"}, key=key)
            deadline = time.monotonic() + 10
            while b.local.users.client.exists(key) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert b.get_user(key)["name"] == "Bea"
            a.delete_user(key)
    finally:
        ca.close(), cb.close(), pa.stop(), pb.stop()


@pytest.mark.parametrize("index", [0, 1], ids=["per-workload-users", "token"])
def test_client_and_store_from_the_rendered_settings(lab_hosts, apps, tmp_path, index):
    env_file = settings_from(lab_hosts, app_hosts(lab_hosts)[index], tmp_path)
    with Clients(load_settings(env={}, env_file=env_file).hosted) as clients:
        clients.api.set("usr:0000000000ab", "{}", ex=60)
        assert clients.api.get("usr:0000000000ab") == b"{}"
        assert clients.background.delete("usr:0000000000ab") == 1
    store_invalidation_crosses(env_file, tmp_path, f"lab{index}@example.com")
    readme_round_trip(env_of(env_file), tmp_path, f"vp:canary:node:{index}")


def cache_pid(lab, host) -> str:
    return lab.check(host, "systemctl show -p MainPID --value valkey-server@cache").strip()


def test_a_rotated_password_reaches_the_settings_without_restarting_the_cache(
    lab_hosts, pki, service, apps
):
    lab, host = lab_hosts, app_hosts(lab_hosts)[0]
    before = cache_pid(lab, host)
    secrets = Path(lab.state.lab_dir) / "hosted-service-secrets.json"
    rotated = {**service, "api": "rotated-api-password-0123456789"}
    secrets.write_text(json.dumps(rotated))
    run = pyinfra(SERVICE)
    assert run.returncode == 0, run.output[-5000:]
    env = app_env(hosted_data(lab, pki[0]), rotated)
    run = pyinfra(APPS, env=env)
    assert run.returncode == 0, run.output[-5000:]
    assert "VALKEY_API_PASSWORD=rotated-api-password-0123456789" in lab.check(
        host, "cat /etc/valkey-plans/shop.env"
    )
    assert cache_pid(lab, host) == before
    rows = verify(env)
    assert rows[(host.name, "test_hosted_workloads_log_in")]["status"] == "pass"


def test_a_cluster_mode_service_from_the_rendered_settings(
    lab_hosts, pki, cluster_pki, service, tmp_path
):
    """(c): the second app host names the cluster; verify, valkey-py, the store (one slot at a
    time, client/store.py) and iovalkey reach it."""
    lab, host = lab_hosts, app_hosts(lab_hosts)[1]
    hosted = hosted_data(lab, pki[0]) | {host.name: cluster_data(lab, cluster_pki)}
    env = app_env(hosted, service)
    run = pyinfra(APPS, env=env)
    assert run.returncode == 0, run.output[-5000:]
    rows = verify(env)
    for check in HOSTED_CHECKS:
        assert rows[(host.name, check)]["status"] == "pass", rows[(host.name, check)]
    env_file = settings_from(lab, host, tmp_path)
    keys = [f"usr:{n:012x}" for n in range(20)]  # spread over the three nodes' slots
    with Clients(load_settings(env={}, env_file=env_file).hosted) as clients:
        assert isinstance(clients.api, valkey.ValkeyCluster), clients.api
        for key in keys:
            clients.api.set(key, key, ex=60)
        assert [clients.api.get(key) for key in keys] == [key.encode() for key in keys]
        owners = {clients.api.get_node_from_key(key).port for key in keys}
        assert owners == set(CLUSTER_PORTS), owners
        assert sum(clients.background.delete(key) for key in keys) == len(keys)
    store_invalidation_crosses(env_file, tmp_path, "cluster@example.com")
    readme_round_trip(env_of(env_file), tmp_path, "vp:canary:node:cluster")


def only_failure(rows: dict, host: str) -> tuple[str, str]:
    failing = [(c, rows[(host, c)]) for c in HOSTED_CHECKS if rows[(host, c)]["status"] == "fail"]
    assert len(failing) == 1, failing
    return failing[0][0], failing[0][1]["reason"]


def test_each_fault_fails_its_own_check(lab_hosts, pki, service):
    """Wrong password, untrusted CA, unreachable port: each deployed, then verified."""
    lab, (good, stranger) = lab_hosts, pki
    first = app_hosts(lab)[0].name
    secrets = Path(lab.state.lab_dir) / "hosted-service-secrets.json"
    passwords = json.loads(secrets.read_text())
    faults = [
        (hosted_data(lab, good), {**passwords, "api": "not-the-password"}, "log_in", "WRONGPASS"),
        (hosted_data(lab, stranger), passwords, "tls_verifies", "not trusted"),
        (hosted_data(lab, good, tls_port=6399), passwords, "reachable", "cannot reach"),
    ]
    for hosted, logins, check, said in faults:
        env = app_env(hosted, logins)
        run = pyinfra(APPS, env=env)
        assert run.returncode == 0, run.output[-5000:]
        name, reason = only_failure(verify(env), first)
        assert check in name and said in reason, (name, reason)
