"""A real Sentinel group on loopback (a primary, two replicas, three sentinels, each its
own process) and a client that writes through it, waiting for a replica after each
write: what tests/server/test_handover.py and bench/switchover.py run against.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import valkey
from valkey.sentinel import Sentinel

from tests.unit.pyinfra_commands import linux_facts, planned_commands
from tests.valkey_server import ValkeyProcess, free_port
from valkey_plans.deploy.handover import primary_handed_over

GROUP = "main"


def until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except (valkey.ValkeyError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


class FromFile(ValkeyProcess):
    """valkey-server on a config file, as a deployed instance runs (CONFIG REWRITE needs
    one); `conf` given: that file as it is (a sentinel's, which Sentinel rewrites)."""

    def __init__(self, workdir: Path, conf: Path | None = None, *args: str, **config: Any):
        super().__init__(workdir, **config)
        self.conf = conf or workdir / "valkey.conf"
        self.args = args
        if conf is None:
            lines = (f"{k} {v}" if v else f'{k} ""' for k, v in self.config.items())
            self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> FromFile:
        args = [self.server, str(self.conf), *self.args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        until(lambda: bool(self.client(socket_timeout=0.5).ping()), f"{self.port}", timeout)
        return self


@dataclass
class Group:
    primary: ValkeyProcess
    replicas: list[ValkeyProcess]
    sentinels: list[ValkeyProcess]

    @property
    def socket(self) -> str:
        return self.primary.config["unixsocket"]

    def named(self) -> set[tuple[str, int]]:
        """The primary each sentinel names (one element once they agree)."""
        return {
            (host, int(port))
            for host, port in (
                Sentinel([("127.0.0.1", s.port)]).discover_master(GROUP) for s in self.sentinels
            )
        }

    def settled(self) -> bool:
        for s in self.sentinels:
            view = s.client(decode_responses=True).sentinel_master(GROUP)
            if view["num-slaves"] != 2 or view["num-other-sentinels"] != 2:
                return False
        return all(
            r.client().info("replication")["master_link_status"] == "up" for r in self.replicas
        )

    def stop(self) -> None:
        for proc in [*self.sentinels, *self.replicas, self.primary]:
            proc.stop()


def start_group(tmp: Path, down_after_ms: int = 5000) -> Group:
    """The group, every sentinel knowing every replica and sentinel."""
    primary = FromFile(tmp / "primary", unixsocket=str(tmp / "p.sock"), unixsocketperm="700")
    primary.start()
    replicas = [
        ValkeyProcess(tmp / f"replica{n}", replicaof=f"127.0.0.1 {primary.port}").start()
        for n in range(2)
    ]
    sentinels: list[ValkeyProcess] = []
    for n in range(3):
        workdir = tmp / f"sentinel{n}"
        workdir.mkdir()
        port = free_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir}/s.log\n"
            f"sentinel monitor {GROUP} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {GROUP} {down_after_ms}\n"
            f"sentinel failover-timeout {GROUP} 20000\n"
        )
        sentinels.append(FromFile(workdir, conf, "--sentinel", port=port).start())
    group = Group(primary, replicas, sentinels)
    until(group.settled, "the sentinels know the whole group")
    return group


def handover_command(group: Group, series: str) -> str:
    """The deploy's handover on the primary's host (deploy/handover.py), as sh runs it."""

    def deploy() -> None:
        primary_handed_over(
            name="handover",
            socket=group.socket,
            auth_file=None,
            address="127.0.0.1",
            port=group.primary.port,
            series=series,
            group=GROUP,
            sentinel_address="127.0.0.1",
            sentinel_port=group.sentinels[0].port,
        )

    facts = linux_facts(ReplicationRole=lambda **kwargs: "master")
    ((_, commands),) = planned_commands(deploy, facts, {})
    return "\n".join(commands)


@dataclass
class Handover:
    """One run of the handover while the writer writes: its result and when it ran."""

    done: subprocess.CompletedProcess[str]
    start: float
    end: float


def handed_over(group: Group, writer: Writer, before: int = 100) -> Handover:
    """Run the handover by sh once `writer` has `before` waited writes acknowledged."""
    until(lambda: len(writer.acked) >= before, "waited writes before the handover")
    start = time.monotonic()
    done = subprocess.run(
        ["sh", "-c", handover_command(group, series(group.primary))],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return Handover(done, start, time.monotonic())


def series(proc: ValkeyProcess) -> str:
    version = proc.client(decode_responses=True).info("server")["valkey_version"]
    return ".".join(version.split(".")[:2])


@dataclass
class Writer:
    """Writes through Sentinel, each write waited for by a replica; what was acknowledged."""

    sentinel_port: int
    acked: list[str] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Writer:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def join(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=30)

    def _run(self) -> None:
        sentinel = Sentinel([("127.0.0.1", self.sentinel_port)], socket_timeout=2)
        client = sentinel.master_for(GROUP, socket_timeout=2, decode_responses=True)
        n = 0
        while not self.stop.is_set():
            key = f"handover:{n}"
            n += 1
            try:
                client.set(key, "1")
                if client.wait(1, 1000) >= 1:
                    self.acked.append(key)
                    self.ack_times.append(time.monotonic())
            except (valkey.ValkeyError, OSError):
                self.errors += 1
                time.sleep(0.05)

    def after(self, moment: float) -> int:
        return sum(t > moment for t in self.ack_times)

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time between two acknowledged writes from `start` to `end`."""
        times = [start, *[t for t in self.ack_times if start <= t <= end], end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))
