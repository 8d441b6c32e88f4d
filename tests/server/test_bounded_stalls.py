"""Bounded stalls: a call on a lost server ends within the tier's retry budget.

A vanished host does not refuse connections, it drops them: every connect waits its
whole timeout. On loopback that is a listener whose accept queue is full (Linux then
drops the SYNs). A lost cluster primary is a node killed while its replica takes over:
one call made during the failover must ride it out and succeed on the new primary,
and with no budget it must fail at once instead.

The bounds below are the settings' own (budget + one connect + one backoff step,
plus a margin for a loaded machine), not speed targets: they prove there is no hang.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest
import valkey

from tests.server.workload_helpers import tier_for, wait_until
from tests.valkey_server import ValkeyProcess, free_port, replicated_cluster
from valkey_plans.client.clients import BACKOFF_CAP, AsyncClients, Clients
from valkey_plans.client.settings import SettingsError, load_settings

#: Slack for a loaded 2-core machine on top of a bound computed from the settings.
MARGIN = 2.0
CONNECT = 0.3


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose connects hang: a listener with its accept queue full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.3)
    with pytest.raises(TimeoutError):  # the premise: a connect here hangs
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    for sock in (*fillers, listener):
        sock.close()


def lost_tier(port: int, budget: float):
    return load_settings(
        {
            "VALKEY_PORT": str(port),
            "VALKEY_CONNECT_TIMEOUT": str(CONNECT),
            "VALKEY_RETRY_BUDGET": str(budget),
        }
    ).hosted


@pytest.mark.parametrize("budget", [0.0, 2.0])
def test_a_call_to_a_vanished_host_ends_within_its_budget(blackhole, budget):
    with Clients(lost_tier(blackhole, budget)) as clients:
        started = time.monotonic()
        with pytest.raises((valkey.ConnectionError, valkey.TimeoutError)):
            clients.api.get("usr:x")
        took = time.monotonic() - started
    assert took >= budget, f"gave up after {took:.2f} s, before its {budget} s budget"
    assert took < budget + CONNECT + BACKOFF_CAP + MARGIN, f"stalled {took:.2f} s"


def test_an_async_call_to_a_vanished_host_ends_within_its_budget(blackhole):
    async def call() -> float:
        async with AsyncClients(lost_tier(blackhole, 2.0)) as clients:
            started = time.monotonic()
            with pytest.raises((valkey.ConnectionError, valkey.TimeoutError)):
                await clients.api.get("usr:x")
            return time.monotonic() - started

    took = asyncio.run(call())
    assert 2.0 <= took < 2.0 + CONNECT + BACKOFF_CAP + MARGIN, f"took {took:.2f} s"


@pytest.mark.parametrize("timeout", [0.5, 1.5])
def test_a_call_in_flight_to_a_server_that_stops_answering_ends_at_its_command_timeout(
    valkey_factory, timeout
):
    """A host that vanishes mid-call sends no reset: the reply wait is the only bound, and
    a timed-out command is not retried (it may have run), so the error comes at once."""
    server = valkey_factory("frozen")
    tier = tier_for(server, command_timeout=str(timeout), retry_budget="10")
    with Clients(tier) as clients:
        clients.api.set("usr:frozen", "1")  # a pooled connection, as on a busy app
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(valkey.TimeoutError):
                clients.api.get("usr:frozen")
            took = time.monotonic() - started
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert clients.api.get("usr:frozen") == b"1"
    assert timeout <= took < timeout + MARGIN, f"took {took:.2f} s for a {timeout} s timeout"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "601", "soon"])
def test_command_timeout_must_be_a_sane_number(value):
    with pytest.raises(SettingsError, match="VALKEY_COMMAND_TIMEOUT="):
        load_settings({"VALKEY_COMMAND_TIMEOUT": value})


def test_a_cluster_seed_on_a_vanished_host_costs_one_connect(valkey_factory, blackhole):
    node = valkey_factory("seed", cluster_enabled="yes", cluster_port=str(free_port()))
    node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    wait_until(lambda: node.client().cluster("info")["cluster_state"] == "ok", "cluster ok")
    tier = tier_for(
        node,
        mode="cluster",
        port=str(blackhole),
        cluster_nodes=f"127.0.0.1:{node.port}",
        connect_timeout=str(CONNECT),
    )
    started = time.monotonic()
    with Clients(tier) as clients:
        clients.api.set("usr:seeded", "1")
    took = time.monotonic() - started
    assert took < CONNECT + MARGIN, f"a dead seed cost {took:.2f} s"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "61", "soon"])
def test_connect_timeout_must_be_a_sane_number(value):
    with pytest.raises(SettingsError, match="VALKEY_CONNECT_TIMEOUT="):
        load_settings({"VALKEY_CONNECT_TIMEOUT": value})


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "601", "later"])
def test_retry_budget_must_be_a_sane_number(value):
    with pytest.raises(SettingsError, match="VALKEY_RETRY_BUDGET="):
        load_settings({"VALKEY_RETRY_BUDGET": value})


def primary_of(nodes: list[ValkeyProcess], key: str) -> tuple[ValkeyProcess, ValkeyProcess]:
    """The node that owns `key`'s slot and the node that replicates it."""
    slot = nodes[0].client().cluster("keyslot", key)
    ranges = nodes[0].client().execute_command("CLUSTER SLOTS")
    port = next(primary[1] for lo, hi, primary, *_ in ranges if lo <= slot <= hi)
    owner = next(n for n in nodes if n.port == port)
    heir = next(n for n in nodes if n.client().info("replication").get("master_port") == port)
    return owner, heir


def test_one_cluster_call_rides_out_a_failover_within_its_budget(valkey_factory):
    nodes = replicated_cluster(valkey_factory)
    key = "usr:failover"
    owner, heir = primary_of(nodes, key)
    tier = tier_for(nodes[0], mode="cluster", retry_budget="30")
    with Clients(tier) as clients, Clients(tier.model_copy(update={"retry_budget": 0})) as none:
        clients.api.set(key, "before")
        none.api.get(key)
        owner.proc.kill()
        owner.proc.wait()
        killed = time.monotonic()
        with pytest.raises(valkey.ConnectionError):
            none.api.get(key)  # no budget: the caller hears of the loss at once
        assert time.monotonic() - killed < MARGIN
        assert clients.api.set(key, "after")  # one call, made while the slot has no primary
        written = time.monotonic()
        print(f"[stall figures] cluster call across a failover: {written - killed:.2f} s")
        assert heir.client().info("replication")["role"] == "master"
        assert heir.client().get(key) == b"after"
    assert written - killed < 30, "the call took its whole budget"


def test_one_async_cluster_call_rides_out_a_failover(valkey_factory):
    nodes = replicated_cluster(valkey_factory)
    key = "usr:async-failover"
    owner, heir = primary_of(nodes, key)
    tier = tier_for(nodes[0], mode="cluster", retry_budget="30")

    async def write() -> float:
        async with AsyncClients(tier) as clients:
            await clients.api.set(key, "before")
            owner.proc.kill()
            owner.proc.wait()
            killed = time.monotonic()
            assert await clients.api.set(key, "after")
            return time.monotonic() - killed

    took = asyncio.run(write())
    print(f"[stall figures] async cluster call across a failover: {took:.2f} s")
    assert heir.client().get(key) == b"after"
    assert took < 30, "the call took its whole budget"
