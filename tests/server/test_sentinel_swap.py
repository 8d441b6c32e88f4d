"""A sentinel's config swap (deploy/restarts.py `sentinel_swapped`), run by sh against a
real group: a primary and three sentinels on loopback, each sentinel its own process.

The operation's one command is what the deploy runs on a host; here its stop and start
are the sentinel's pidfile and `valkey-server CONF --sentinel`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import valkey

from tests.sentinel_group import until
from tests.unit.pyinfra_commands import linux_facts, planned_commands
from tests.valkey_server import ValkeyProcess, free_port
from valkey_plans.deploy import restarts
from valkey_plans.deploy.restarts import sentinel_swapped
from valkey_plans.deploy.service import VALKEY_SERVER

PASSWORD = "sentinel-password-0123456789"
GROUP = "main"


@dataclass
class Sentinel:
    workdir: Path
    port: int
    primary_port: int

    @property
    def config(self) -> Path:
        return self.workdir / "sentinel.conf"

    @property
    def planned(self) -> Path:
        return self.workdir / "planned.conf"

    def plan(self, down_after_ms: int) -> None:
        """The deploy's planned config (the record it swaps in)."""
        self.planned.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize yes\n"
            f"pidfile {self.workdir}/s.pid\nlogfile {self.workdir}/s.log\ndir {self.workdir}\n"
            f"sentinel monitor {GROUP} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {GROUP} {down_after_ms}\n"
            f"sentinel sentinel-pass {PASSWORD}\nrequirepass {PASSWORD}\n"
        )

    def client(self) -> valkey.Valkey:
        return valkey.Valkey(port=self.port, password=PASSWORD, decode_responses=True)

    def swap(self, auth_file: Path) -> subprocess.CompletedProcess[str]:
        """Run the deploy's swap of this sentinel's planned config in sh."""
        pid = f"{self.workdir}/s.pid"
        stop = (
            f"[ ! -s {pid} ] || {{ kill $(cat {pid}) && while kill -0 $(cat {pid}) 2>/dev/null;"
            f" do sleep 0.1; done; rm -f {pid}; }}"
        )
        start = f"{VALKEY_SERVER} {self.config} --sentinel"

        def deploy() -> None:
            sentinel_swapped(
                name="swap",
                source=str(self.planned),
                dest=str(self.config),
                stop=stop,
                start=start,
                address="127.0.0.1",
                port=self.port,
                group=GROUP,
                auth_file=str(auth_file),
            )

        ((_, (command,)),) = planned_commands(deploy, linux_facts(), {})
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300)

    def stop(self) -> None:
        pid = self.workdir / "s.pid"
        if pid.exists() and pid.read_text().strip():
            subprocess.run(["kill", pid.read_text().strip()], check=False)
            time.sleep(0.3)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[tuple[ValkeyProcess, list[Sentinel], Path]]:
    """A primary and three sentinels, each first started by the swap (nothing runs yet)."""
    primary = ValkeyProcess(tmp_path / "primary").start()
    auth_file = tmp_path / "sentinel-auth"
    auth_file.write_text(PASSWORD)
    auth_file.chmod(0o600)
    sentinels = []
    for n in range(3):
        workdir = tmp_path / f"sentinel-{n}"
        workdir.mkdir()
        sentinels.append(Sentinel(workdir, free_port(), primary.port))
    yield primary, sentinels, auth_file
    for s in sentinels:
        s.stop()
    primary.stop()


def knows_all(s: Sentinel) -> bool:
    return s.client().sentinel_master(GROUP)["num-other-sentinels"] == 2


def test_first_swap_starts_then_a_rolling_swap_keeps_the_ids_and_leaves_no_stale_peer(group):
    primary, sentinels, auth_file = group
    for s in sentinels:
        s.plan(down_after_ms=2000)
        run = s.swap(auth_file)  # not running: copied in and started, no quorum wait
        assert run.returncode == 0, run.stdout + run.stderr
    for s in sentinels:
        until(lambda s=s: knows_all(s), "every sentinel knows the other two")
    ids = [s.client().execute_command("SENTINEL", "MYID") for s in sentinels]
    for s in sentinels:
        s.plan(down_after_ms=3000)
        run = s.swap(auth_file)
        assert run.returncode == 0, run.stdout + run.stderr
        assert knows_all(s), "counted as back before it saw the others again"
    for s, myid in zip(sentinels, ids, strict=True):
        client = s.client()
        assert client.execute_command("SENTINEL", "MYID") == myid
        master = client.sentinel_master(GROUP)
        assert master["down-after-milliseconds"] == 3000
        assert master["num-other-sentinels"] == 2, "a stale peer is left"
    assert primary.client().ping()


def test_a_sentinel_is_not_stopped_while_a_peer_is_down(group, monkeypatch):
    _, sentinels, auth_file = group
    for s in sentinels:
        s.plan(down_after_ms=1000)
        assert s.swap(auth_file).returncode == 0
    for s in sentinels:
        until(lambda s=s: knows_all(s), "every sentinel knows the other two")
    sentinels[2].stop()
    first = sentinels[0]
    until(
        lambda: "s_down" in str(first.client().sentinel_sentinels(GROUP)),
        "the stopped sentinel is seen down",
    )
    pid = (first.workdir / "s.pid").read_text().strip()
    monkeypatch.setattr(restarts, "SETTLE_SECONDS", 2)
    first.plan(down_after_ms=4000)
    run = first.swap(auth_file)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"sentinel {GROUP} on port {first.port}:" in run.stdout, run.stdout
    assert (first.workdir / "s.pid").read_text().strip() == pid, "it was stopped anyway"
    assert first.client().sentinel_master(GROUP)["down-after-milliseconds"] == 1000
