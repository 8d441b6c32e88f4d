"""Least privilege on a real deployed instance: ACL users, secrets, exposure rules, TLS."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import valkey

from tests.deploy.pyinfra_run import pyinfra
from tests.deploy.test_local_deploy import pid_of, read_root_file, root_output
from tests.valkey_server import free_port
from valkey_plans.plan.secrets import ACL_USERS, ENV_PREFIX, EXPORTER_USER

SUDO = [] if os.geteuid() == 0 else ["sudo", "-n"]


@pytest.fixture
def passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(24) for user in (*ACL_USERS, EXPORTER_USER)}


def secret_env(passwords: dict[str, str]) -> dict[str, str]:
    return {f"{ENV_PREFIX}{user.upper()}": value for user, value in passwords.items()}


@pytest.fixture
def acl_instance(test_plan, passwords):
    """vpt-cache/vpt-primary deployed with ACL users; returns (port, inventory)."""
    inventory = test_plan(valkey_acl=True)
    run = pyinfra(inventory, "-vvv", "--diff", env=secret_env(passwords))
    assert run.returncode == 0, run.output[-4000:]
    return test_plan.ports["vpt-cache"], inventory, run


def login(port: int, user: str, password: str, **kw) -> valkey.Valkey:
    return valkey.Valkey(port=port, username=user, password=password, **kw)


def refused(call) -> bool:
    try:
        call()
    except (valkey.exceptions.NoPermissionError, valkey.exceptions.AuthenticationError):
        return True
    except valkey.exceptions.ResponseError as exc:
        return "NOPERM" in str(exc) or "NOAUTH" in str(exc)
    return False


def subscribe(client: valkey.Valkey, channel: str) -> None:
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel)
        message = pubsub.get_message(timeout=2)
        assert message and message["type"] == "subscribe", message
    finally:
        pubsub.close()


def test_each_workload_user_does_its_job_and_nothing_else(acl_instance, passwords):
    port, _, _ = acl_instance
    api = login(port, "api", passwords["api"], db=1)
    assert api.set("usr:000000000abc", "1") and api.get("usr:000000000abc") == b"1"
    assert api.publish("vp:inval:users", "usr:000000000abc") == 0
    for name, call in {
        "FLUSHALL": api.flushall,
        "CONFIG SET": lambda: api.config_set("maxmemory", "1mb"),
        "KEYS": lambda: api.keys("*"),
        "key outside the plan": lambda: api.set("stray", "1"),
        "SUBSCRIBE": lambda: subscribe(api, "other:channel"),
    }.items():
        assert refused(call), f"api may run {name}"

    queue = login(port, "queue", passwords["queue"], db=3)
    queue.lpush("vp:queue:messages", "m1")
    assert queue.blmove("vp:queue:messages", "vp:queue:messages:processing", 1) == b"m1"
    assert refused(lambda: queue.set("usr:000000000abd", "1")), "queue may SET strings"

    subscriber = login(port, "subscriber", passwords["subscriber"])
    pubsub = subscriber.pubsub()
    pubsub.subscribe("vp:inval:users")
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    other = login(port, "subscriber", passwords["subscriber"])
    assert refused(lambda: subscribe(other, "elsewhere")), (
        "subscriber may subscribe outside the plan's channels"
    )
    assert refused(lambda: subscriber.get("usr:000000000abc")), "subscriber may read keys"
    pubsub.close()

    background = login(port, "background", passwords["background"], db=1)
    assert b"usr:000000000abc" in list(background.scan_iter(count=100))
    assert background.delete("usr:000000000abc") == 1
    assert refused(background.flushdb) and refused(lambda: background.keys("*"))

    checks = login(port, "checks", passwords["checks"])
    assert checks.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
    assert "redis_version" in checks.info("server") or "valkey_version" in checks.info("server")
    assert refused(lambda: checks.set("usr:000000000abe", "1")), "checks may write"

    assert refused(lambda: valkey.Valkey(port=port).ping()), "the default user may connect"
    assert refused(lambda: login(port, "api", "wrong-" + passwords["api"]).ping())


def test_passwords_never_show_in_output_or_world_readable_files(acl_instance, passwords, tmp_path):
    _, inventory, run = acl_instance
    for user, password in passwords.items():
        assert password not in run.output, f"{user}'s password in pyinfra -vvv --diff output"
    listing = subprocess.run(
        [
            *SUDO,
            "find",
            "/etc/valkey",
            "/var/lib/valkey-plans",
            str(Path(inventory).parent),
            "-type",
            "f",
            "-perm",
            "-o=r",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in listing:
        content = subprocess.run([*SUDO, "cat", path], capture_output=True, text=True).stdout
        for user, password in passwords.items():
            assert password not in content, f"{user}'s password in world-readable {path}"
    acl = subprocess.run(
        [*SUDO, "cat", "/etc/valkey/users-vpt-cache.acl"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(p not in acl for p in passwords.values()), "plaintext password in the aclfile"
    env_file = str(Path(inventory).parent / "app-settings" / "vptest.env")
    assert root_output("stat", "-c", "%a", env_file).strip() == "640"
    assert f"VALKEY_API_PASSWORD={passwords['api']}" in read_root_file(env_file)


def test_changed_password_is_applied_with_acl_load_without_restart(
    acl_instance, passwords, test_plan
):
    port, inventory, _ = acl_instance
    pid = pid_of("vpt-cache")
    rotated = {**passwords, "api": secrets.token_urlsafe(24)}
    run = pyinfra(inventory, env=secret_env(rotated))
    assert run.returncode == 0, run.output[-4000:]
    assert "ACL LOAD on vpt-cache" in run.output
    assert pid_of("vpt-cache") == pid, "the instance restarted for an ACL change"
    assert login(port, "api", rotated["api"]).ping()
    assert refused(lambda: login(port, "api", passwords["api"]).ping()), "old password still works"
    assert pyinfra(inventory, env=secret_env(rotated)).changed == 0


def test_missing_password_stops_before_any_change(test_plan, passwords):
    partial = secret_env(passwords)
    del partial[f"{ENV_PREFIX}CHECKS"]
    run = pyinfra(test_plan(valkey_acl=True), env=partial)
    assert run.returncode != 0
    assert "no password for ACL users checks" in run.output
    assert "Starting operation" not in run.output


def test_binding_beyond_loopback_without_passwords_is_refused_before_any_change(test_plan):
    run = pyinfra(test_plan(cache={"bind": ["0.0.0.0"]}))
    assert run.returncode != 0
    assert "bind beyond loopback without passwords" in run.output
    assert "Starting operation" not in run.output
    assert subprocess.call([*SUDO, "test", "-e", "/etc/valkey/valkey-vpt-cache.conf"]) != 0


def make_certificates(directory: Path) -> dict[str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1, readable by valkey."""
    directory.mkdir(mode=0o755)
    ca_key, ca, key, csr, cert = (
        str(directory / n) for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "2",
        "-subj",
        "/CN=valkey-plans test CA",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        "/CN=127.0.0.1",
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    for path in (ca, cert, key):
        os.chmod(path, 0o644)
    return {"cert_file": cert, "key_file": key, "ca_cert_file": ca}


@pytest.fixture
def tls_dir():
    """Certificates where the valkey user can read them (pytest's tmp_path is root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="vp-tls-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_tls_only_instance_refuses_plain_connections(test_plan, tls_dir):
    certs = make_certificates(tls_dir / "tls")
    tls_port = free_port()
    inventory = test_plan(cache={"tls": {"port": tls_port, "only": True, **certs}})
    run = pyinfra(inventory)
    assert run.returncode == 0, run.output[-4000:]
    plain_port = test_plan.ports["vpt-cache"]
    with pytest.raises(valkey.exceptions.ConnectionError):
        valkey.Valkey(port=plain_port, socket_connect_timeout=2).ping()
    secure = valkey.Valkey.from_url(
        f"valkeys://127.0.0.1:{tls_port}", ssl_ca_certs=certs["ca_cert_file"]
    )
    assert secure.ping()
    env = read_root_file(str(Path(inventory).parent / "app-settings" / "vptest.env"))
    assert f"VALKEY_CACHE_PORT={tls_port}\n" in env and "VALKEY_CACHE_TLS=1\n" in env


def test_certificates_valkey_cannot_load_are_refused_before_going_live(test_plan, tmp_path):
    certs = make_certificates(tmp_path / "tls")  # under pytest's root-only tmp dir
    run = pyinfra(test_plan(cache={"tls": {"port": free_port(), **certs}}))
    assert run.returncode != 0
    assert "rejected" in run.output, run.output[-3000:]
    assert subprocess.call([*SUDO, "test", "-e", "/etc/valkey/valkey-vpt-cache.conf"]) != 0
