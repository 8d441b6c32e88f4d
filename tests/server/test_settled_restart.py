"""The settled wait of every restart (deploy/restarts.py), run by sh against real servers.

A restart waits until the instance is settled, and the wait is what keeps a restart
seconds after a replica's full sync from hanging: Valkey refuses SIGTERM while it writes
its first AOF. `rdb-key-save-delay` slows that AOF so the window is seconds wide.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.unit.pyinfra_commands import shell_text
from tests.valkey_server import ValkeyProcess
from valkey_plans.deploy.restarts import settled

KEYS = 2000


def socket_of(proc: ValkeyProcess) -> str:
    return proc.config["unixsocket"]


def with_socket(
    tmp_path: Path, name: str, login: tuple[str, str] | None = None, **config: str
) -> ValkeyProcess:
    """A real server with a unix socket in its own directory (the settled wait uses it)."""
    workdir = tmp_path / name
    socket = str(workdir / "s.sock")
    return ValkeyProcess(workdir, login=login, unixsocket=socket, **config).start()


def wait_settled(socket: str, auth_file: str | None = None, seconds: int = 1):
    """Run the deploy's settled wait in sh, as the deploy runs it on a host."""
    command = shell_text(settled(socket, auth_file, seconds=seconds))
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)


def test_a_quiet_instance_is_settled(tmp_path):
    proc = with_socket(tmp_path, "quiet")
    try:
        run = wait_settled(socket_of(proc))
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        proc.stop()


def test_an_instance_that_refuses_the_login_is_never_settled(tmp_path):
    """NOAUTH is no INFO: the wait must give up, not pass."""
    password = "s3cret-password-123"
    proc = with_socket(tmp_path, "locked", ("default", password), requirepass=password)
    wrong = tmp_path / "admin"
    wrong.write_text("not-the-password")
    wrong.chmod(0o600)
    try:
        for auth_file in (None, str(wrong)):
            run = wait_settled(socket_of(proc), auth_file)
            assert run.returncode == 1, run.stdout + run.stderr
            assert "is not settled after 1 s" in run.stdout
    finally:
        proc.stop()


def test_an_instance_with_acl_users_is_settled_through_its_login_file(tmp_path):
    password = "admin-password-0123456789"
    proc = with_socket(
        tmp_path,
        "acl",
        ("admin", password),
        requirepass="the-default-users-password-42",
        user=f"admin on >{password} ~* &* +@all",
    )
    login = tmp_path / "admin"
    login.write_text(password)
    login.chmod(0o600)
    try:
        assert wait_settled(socket_of(proc)).returncode == 1, "passed with no login"
        run = wait_settled(socket_of(proc), str(login))
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        proc.stop()


def test_a_login_file_the_instance_does_not_take_is_no_stop(tmp_path):
    """A plan that turns ACLs on restarts an instance that runs without them yet: the
    new plan's admin login file is already there, and the instance answers without it."""
    proc = with_socket(tmp_path, "open")
    login = tmp_path / "admin"
    login.write_text("the-new-plans-admin-password")
    login.chmod(0o600)
    try:
        run = wait_settled(socket_of(proc), str(login))
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        proc.stop()


def test_a_replica_whose_primary_is_gone_is_not_settled(tmp_path):
    gone = with_socket(tmp_path, "gone")
    port = gone.port
    gone.stop()
    replica = with_socket(tmp_path, "orphan", replicaof=f"127.0.0.1 {port}")
    try:
        run = wait_settled(socket_of(replica))
        assert run.returncode == 1
        assert "master_link_status:down" in run.stdout, run.stdout
    finally:
        replica.stop()


def test_a_restart_right_after_a_full_sync_waits_for_the_first_aof_and_loses_nothing(tmp_path):
    primary = with_socket(tmp_path, "primary")
    replica = with_socket(
        tmp_path, "replica", appendonly="yes", rdb_key_save_delay="2000"
    )  # 2 ms a key: the replica's first AOF takes about 4 s
    try:
        primary.client().mset({f"k{i}": f"v{i}" for i in range(KEYS)})
        replica.client().replicaof("127.0.0.1", primary.port)
        client = replica.client()
        while client.info("replication")["master_link_status"] != "up":
            time.sleep(0.05)
        assert client.info("persistence")["aof_rewrite_in_progress"] == 1, "no AOF window"
        # What a blind restart meets: the SIGTERM is refused while the first AOF is written.
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert replica.proc.poll() is None, "SIGTERM was not refused: the window is gone"
        began = time.monotonic()
        run = wait_settled(socket_of(replica), seconds=60)
        waited = time.monotonic() - began
        assert run.returncode == 0, run.stdout + run.stderr
        assert client.info("persistence")["aof_rewrite_in_progress"] == 0
        assert waited > 1, f"the wait passed after {waited:.1f} s, before the AOF was written"
        replica.proc.send_signal(signal.SIGTERM)  # settled: the stop is taken at once
        replica.proc.wait(timeout=10)
        replica.start()
        again = replica.client()  # a primary now, its data read back from its own AOF
        assert again.dbsize() == KEYS
        assert again.get(f"k{KEYS - 1}") == f"v{KEYS - 1}".encode()
    finally:
        replica.stop()
        primary.stop()
