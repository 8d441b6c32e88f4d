"""Real valkey-server processes for tests: each on a free loopback port in its own directory.

Tests never use a fake server. This starts Debian's `valkey-server` binary with a
throwaway config so that tests can run beside the deployed instances (6379/6380).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import valkey

VALKEY_SERVER = shutil.which("valkey-server") or "/usr/bin/valkey-server"


def free_port() -> int:
    """Ask the kernel for a free loopback port (racy in theory, fine on a test machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_port() -> int:
    """A free port that a plan accepts for a cluster node: its bus port (+10000) exists
    (at most 65535) and is free too."""
    while True:
        port = free_port()
        if port <= 55535:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class ValkeyProcess:
    """One valkey-server child process; `restart()` keeps port and data directory."""

    #: The server program (tests.adopt_servers runs redis-server the same way).
    server = VALKEY_SERVER

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        login: tuple[str, str] | None = None,
        **config: str,
    ) -> None:
        self.workdir = workdir
        # (username, password) for the readiness ping when the default user is off.
        self.login = login
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "dir": str(self.workdir),
            "save": "",
            "appendonly": "no",
            "databases": "16",
            "logfile": str(self.workdir / "valkey.log"),
            **{k.replace("_", "-"): v for k, v in config.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"valkey://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> valkey.Valkey:
        return valkey.Valkey(host="127.0.0.1", port=self.port, **kwargs)

    def start(self, timeout: float = 10.0) -> ValkeyProcess:
        args = [self.server, "--daemonize", "no"]
        for key, value in self.config.items():
            args += [f"--{key}", *value.split(" ")] if value else [f"--{key}", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.workdir / "valkey.log"
                raise RuntimeError(
                    f"valkey-server exited with {self.proc.returncode}: {err}"
                    f"{log.read_text()[-2000:] if log.exists() else ''}"
                )
            try:
                user, password = self.login or (None, None)
                if self.client(socket_timeout=0.5, username=user, password=password).ping():
                    return self
            except valkey.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"valkey-server on port {self.port} did not answer within {timeout}s")

    def stop(self) -> None:
        """SIGTERM: valkey-server saves (if persistence is on) and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> ValkeyProcess:
        self.stop()
        return self.start()


def replicated_cluster(start: Callable[..., ValkeyProcess]) -> list[ValkeyProcess]:
    """Three primaries, each with a replica, failing over within about a second, every
    replica linked: `start(name, **config)` starts one node (a test's `valkey_factory`)."""
    nodes = [
        start(
            f"node{n}",
            cluster_enabled="yes",
            cluster_port=str(free_port()),
            cluster_node_timeout="1000",
            cluster_replica_validity_factor="0",
        )
        for n in range(6)
    ]
    subprocess.run(
        ["valkey-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes)]
        + ["--cluster-replicas", "1", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 60
    while not all(n.client().cluster("info")["cluster_state"] == "ok" for n in nodes) or not all(
        linked(n) for n in nodes
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster never had cluster_state:ok and every replica linked")
        time.sleep(0.05)
    return nodes


def linked(node: ValkeyProcess) -> bool:
    """A primary, or a replica whose link to its primary is up."""
    info = node.client(socket_timeout=0.5).info("replication")
    return info["role"] == "master" or info.get("master_link_status") == "up"
