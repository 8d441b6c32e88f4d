"""The handover of a Sentinel group's primary role (deploy/handover.py), run by sh against a
real group on loopback: a primary, two replicas and three sentinels, each its own process,
while a client writes through Sentinel and waits for a replica (WAIT 1) after each write.

The operation's commands are what the deploy runs on the primary's host before it
upgrades that host's Valkey.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import valkey
from valkey.sentinel import Sentinel

from tests.unit.pyinfra_commands import linux_facts, planned_commands
from tests.valkey_server import ValkeyProcess, free_port
from valkey_plans.deploy.handover import primary_handed_over

GROUP = "main"


@dataclass
class Group:
    primary: ValkeyProcess
    replicas: list[ValkeyProcess]
    sentinels: list[ValkeyProcess]

    @property
    def socket(self) -> str:
        return self.primary.config["unixsocket"]

    def named(self) -> tuple[str, int]:
        host, port = Sentinel([("127.0.0.1", self.sentinels[0].port)]).discover_master(GROUP)
        return host, int(port)


def _settled(group: Group) -> bool:
    for s in group.sentinels:
        view = s.client(decode_responses=True).sentinel_master(GROUP)
        if view["num-slaves"] != 2 or view["num-other-sentinels"] != 2:
            return False
    return all(r.client().info("replication")["master_link_status"] == "up" for r in group.replicas)


def until(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    socket = tmp_path / "p.sock"
    primary = FromFile(tmp_path / "primary", unixsocket=str(socket), unixsocketperm="700")
    primary.start()
    replicas = [
        ValkeyProcess(tmp_path / f"replica{n}", replicaof=f"127.0.0.1 {primary.port}").start()
        for n in range(2)
    ]
    sentinels = []
    for n in range(3):
        workdir = tmp_path / f"sentinel{n}"
        workdir.mkdir()
        port = free_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir}/s.log\n"
            f"sentinel monitor {GROUP} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {GROUP} 5000\n"
            f"sentinel failover-timeout {GROUP} 20000\n"
        )
        sentinels.append(FromFile(workdir, conf, "--sentinel", port=port).start())
    ready = Group(primary, replicas, sentinels)
    until(lambda: _settled(ready), "the sentinels know the whole group")
    yield ready
    for proc in [*sentinels, *replicas, primary]:
        proc.stop()


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
        until(lambda: _answers(self), f"valkey-server on {self.port}", timeout)
        return self


def _answers(proc: ValkeyProcess) -> bool:
    try:
        return bool(proc.client(socket_timeout=0.5).ping())
    except valkey.ConnectionError:
        return False


def handover_command(group: Group, series: str) -> str:
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

    def run(self) -> None:
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

    def longest_pause(self, start: float, end: float) -> float:
        times = [start, *[t for t in self.ack_times if start <= t <= end], end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


def test_the_primary_role_moves_to_a_replica_and_no_waited_write_is_lost(group: Group):
    writer = Writer(group.sentinels[1].port)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    until(lambda: len(writer.acked) >= 100, "writes acknowledged before the handover")
    start = time.monotonic()
    done = subprocess.run(
        ["sh", "-c", handover_command(group, series(group.primary))],
        capture_output=True,
        text=True,
        timeout=180,
    )
    end = time.monotonic()
    until(lambda: len([t for t in writer.ack_times if t > end]) >= 100, "writes after it")
    writer.stop.set()
    thread.join(timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr

    def named() -> set[tuple[str, int]]:
        return {Sentinel([("127.0.0.1", s.port)]).discover_master(GROUP) for s in group.sentinels}

    # the other sentinels learn the new primary from the leader's hello messages
    until(lambda: len(named()) == 1, "the sentinels agree on the primary", seconds=30)
    ((host, port),) = named()
    port = int(port)
    assert port in {r.port for r in group.replicas}, "a replica is the primary now"
    old = group.primary.client(decode_responses=True, socket_timeout=2)
    replication = old.info("replication")
    assert replication["role"] == "slave" and replication["master_port"] == port
    assert replication["master_link_status"] == "up"
    with pytest.raises(valkey.ReadOnlyError):  # at once: its writes are no longer paused
        old.set("handover:after", "1")
    new = valkey.Valkey(host=host, port=port, decode_responses=True)
    lost = [k for k in writer.acked if new.get(k) is None]
    print(
        f"\nhandover {end - start:.2f} s; longest pause between waited writes"
        f" {writer.longest_pause(start, end):.2f} s; {len(writer.acked)} waited writes,"
        f" {writer.errors} errors, {len(lost)} lost"
    )
    assert not lost, f"{len(lost)} waited writes lost, e.g. {lost[:5]}"


def test_a_replica_at_another_series_stops_the_handover_before_any_pause(group: Group):
    done = subprocess.run(
        ["sh", "-c", handover_command(group, "9.9")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "runs Valkey 8." in done.stdout and "not 9.9 (upgrade it first)" in done.stdout, (
        done.stdout + done.stderr
    )
    assert group.named() == ("127.0.0.1", group.primary.port), "no failover"
    client = group.primary.client(socket_timeout=2)
    assert client.set("still", "writable"), "the primary's writes were paused"
    assert client.info("replication")["role"] == "master"
