"""Sentinel mode: the workload clients follow the group to its new primary after a failover."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import valkey

from tests.sentinel_group import GROUP, start_group
from tests.server.workload_helpers import tier_for
from tests.valkey_server import VALKEY_SERVER, free_port
from valkey_plans.client.clients import Clients


@pytest.fixture
def sentinel_group(valkey_factory, tmp_path: Path):
    """A real primary, a real replica and one real Sentinel on loopback."""
    primary = valkey_factory("primary", appendonly="yes")
    replica = valkey_factory("replica", replicaof=f"127.0.0.1 {primary.port}")
    deadline = time.monotonic() + 20
    while replica.client().info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never synced with its primary"
        time.sleep(0.1)
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor main 127.0.0.1 {primary.port} 1\n"
        "sentinel down-after-milliseconds main 1000\nsentinel failover-timeout main 5000\n"
    )
    proc = subprocess.Popen([VALKEY_SERVER, str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    sentinel = valkey.Valkey(port=port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if sentinel.sentinel_slaves("main"):
                break
        except valkey.ConnectionError:
            pass
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the sentinel never saw the replica")
    yield primary, replica, port, sentinel
    proc.terminate()
    proc.wait(10)


def role(server) -> str | None:
    """The server's replication role; None while it drops its clients to change role."""
    try:
        return server.client().info("replication")["role"]
    except valkey.ConnectionError:
        return None


def test_clients_follow_the_primary_sentinel_names_across_a_failover(sentinel_group):
    primary, replica, port, sentinel = sentinel_group
    tier = tier_for(primary, mode="sentinel", sentinels=f"127.0.0.1:{port}", sentinel_name="main")
    with Clients(tier) as clients:
        clients.api.set("usr:before", "1")
        assert clients.api.wait(1, 1000) == 1, "the replica did not acknowledge the write"
        assert replica.client().get("usr:before") == b"1"

        sentinel.execute_command("SENTINEL", "FAILOVER", "main")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sentinel.sentinel_get_master_addr_by_name("main")[1] == replica.port:
                break
            time.sleep(0.2)
        else:
            pytest.fail("Sentinel did not promote the replica")
        while role(primary) != "slave":
            assert time.monotonic() < deadline, "Sentinel never demoted the old primary"
            time.sleep(0.2)

        written = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not written:
            try:
                clients.api.set("usr:after", "2")
                written = 1
            except (valkey.ConnectionError, valkey.ReadOnlyError):
                time.sleep(0.2)  # the old primary turns replica; the pool asks Sentinel again
        assert written, "the api client never wrote to the new primary"
        assert replica.client().get("usr:after") == b"2", (
            "the write did not land on the new primary"
        )
        assert replica.client().get("usr:before") == b"1"


@pytest.fixture
def group(tmp_path: Path):
    """A primary, two replicas and three sentinels that call the primary down after 1 s."""
    started = start_group(tmp_path, down_after_ms=1000)
    yield started
    for server in [started.primary, *started.replicas, *started.sentinels]:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
    started.stop()


@pytest.mark.parametrize("silent_sentinel", [False, True], ids=["", "first sentinel silent"])
def test_a_call_hung_on_a_primary_that_stops_answering_ends_on_the_new_one(group, silent_sentinel):
    """The primary is frozen (SIGSTOP: its connections hang, as a cut-off host's do) while
    a call waits on it. The command timeout is 60 s; the call ends on the new primary as
    soon as Sentinel announces it (the switch watch closes the pooled connections), and
    so does a call begun afterwards. With the sentinel the watch listens to frozen too
    (one of three: the other two still fail over), the watch moves to another one."""
    sentinels = ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels)
    tier = tier_for(
        group.primary,
        mode="sentinel",
        sentinels=sentinels,
        sentinel_name=GROUP,
        command_timeout="60",
        retry_budget="30",
    )
    with Clients(tier) as clients:
        clients.api.set("usr:before", "1")
        assert clients.api.wait(2, 1000) == 2
        if silent_sentinel:
            os.kill(group.sentinels[0].proc.pid, signal.SIGSTOP)
            time.sleep(3)  # the watch's PING goes unanswered; it subscribes to another
        os.kill(group.primary.proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        clients.api.set("usr:during", "2")  # sent to the frozen primary: it hangs there
        ended = time.monotonic() - frozen
        promoted = [r for r in group.replicas if r.client().info("replication")["role"] == "master"]
        assert len(promoted) == 1, "no failover happened"
        new = promoted[0]
        assert new.client().get("usr:during") == b"2", "the call did not land on the new primary"
        assert new.client().get("usr:before") == b"1"
        assert ended < 60, f"the call waited out its command timeout ({ended:.1f} s)"
        begun = time.monotonic()
        clients.api.set("usr:after", "3")
        assert new.client().get("usr:after") == b"3"
        after = time.monotonic() - begun
        watch = clients._watch
        assert watch is not None and watch.switches >= 1
    alive = [t for t in threading.enumerate() if t.name.startswith("valkey-plans switch watch")]
    assert not alive, "the switch watch outlived Clients.close()"
    print(
        f"\ncall on the frozen primary ended on the new one after {ended:.1f} s; next {after:.2f} s"
    )
