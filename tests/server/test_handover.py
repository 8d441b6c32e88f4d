"""The handover of a Sentinel group's primary role (deploy/handover.py), run by sh against a
real group on loopback (tests/sentinel_group.py) while a client writes through Sentinel
and waits for a replica (WAIT 1) after each write.

The operation's commands are what the deploy runs on the primary's host before it
upgrades that host's Valkey.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import valkey

from tests.sentinel_group import (
    Group,
    Writer,
    handed_over,
    handover_command,
    start_group,
    until,
)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    ready = start_group(tmp_path)
    yield ready
    ready.stop()


def test_the_primary_role_moves_to_a_replica_and_no_waited_write_is_lost(group: Group):
    writer = Writer(group.sentinels[1].port).start()
    run = handed_over(group, writer)
    until(lambda: writer.after(run.end) >= 100, "writes acknowledged after it")
    writer.join()
    assert run.done.returncode == 0, run.done.stdout + run.done.stderr

    # the other sentinels learn the new primary from the leader's hello messages
    until(lambda: len(group.named()) == 1, "the sentinels agree on the primary", seconds=30)
    ((host, port),) = group.named()
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
        f"\nhandover {run.end - run.start:.2f} s; longest pause between waited writes"
        f" {writer.longest_pause(run.start, run.end):.2f} s; {len(writer.acked)} waited writes,"
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
    assert "runs Valkey 8." in done.stdout and "not 9.9 (upgrade it first)" in done.stdout
    assert group.named() == {("127.0.0.1", group.primary.port)}, "no failover"
    client = group.primary.client(socket_timeout=2)
    assert client.set("still", "writable"), "the primary's writes were paused"
    assert client.info("replication")["role"] == "master"
