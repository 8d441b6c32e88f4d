"""Replication with Sentinel on three lab hosts: deploy, verify, lose the primary's host.

inventories/replication.py: the first host of the lane runs the primary, the other two
its replicas, and every host a Sentinel; the module runs once on Valkey 8 (bookworm,
trixie, bookworm) and once on three forky hosts (Valkey 9.1). The primary's host is cut
off the lab bridge; a replica must be promoted, the workload clients built from the
rendered settings must follow it, writes acknowledged by a replica (WAIT) must all
survive, and a deploy after the failover must change nothing and restart nobody.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import valkey

from tests.deploy.pyinfra_run import pyinfra, valkey_plans
from tests.lab.downwatch import DownWatch
from valkey_plans.client.clients import Clients
from valkey_plans.client.settings import load_settings
from valkey_plans.keys import new_key
from valkey_plans.lab import net
from valkey_plans.plan.defaults import SENTINEL_DEFAULTS

pytestmark = pytest.mark.lab

INVENTORY = "inventories/replication.py"


@pytest.fixture(scope="module")
def replication(lab_hosts, lane):
    """The group deployed on the lane's first three hosts: (lab, those hosts)."""
    first = pyinfra(INVENTORY)
    assert first.returncode == 0, first.output[-5000:]
    hosts = lane.hosts[:3]
    series = "9.1." if lane.release == "forky" else "8."
    for host in hosts:
        assert f"v={series}" in lab_hosts.check(host, "valkey-server --version"), host.name
    return lab_hosts, hosts


@pytest.fixture(scope="module")
def settings_file(replication, tmp_path_factory) -> Path:
    """The env file the deploy rendered for applications on the second host."""
    lab, hosts = replication
    path = tmp_path_factory.mktemp("repl") / "repl.env"
    path.write_text(lab.check(hosts[1], "cat /etc/valkey-plans/repl.env"))
    path.chmod(0o600)
    return path


def primary_port(lab, host, password: str) -> str:
    """What the sentinel on `host` names as the primary: "ADDRESS:PORT"."""
    out = lab.check(
        host,
        f"REDISCLI_AUTH='{password}' valkey-cli --no-auth-warning -p 26379"
        " SENTINEL get-master-addr-by-name main",
    )
    return ":".join(out.split())


def test_second_run_changes_nothing(replication):
    again = pyinfra(INVENTORY)
    assert again.returncode == 0 and again.changed == 0, again.output[-5000:]


def test_verify_passes_on_the_group(replication):
    run = valkey_plans("verify", INVENTORY)
    assert run.returncode == 0, run.output[-5000:]


def test_status_sees_the_group_over_ssh(replication):
    """`status --json` reaches every instance through its tunnel and sees the replication."""
    run = valkey_plans("status", "--json", INVENTORY)
    assert run.returncode == 0, run.output[-5000:]
    snapshot = json.loads(run.output[run.output.index("{") :])
    rows = snapshot["instances"]
    assert not [r for r in rows if r["error"]], rows
    roles = sorted(r["replication"]["role"] for r in rows)
    assert roles == ["master", "slave", "slave"], rows
    (primary,) = [r for r in rows if r["replication"]["role"] == "master"]
    assert len(primary["replication"]["replicas"]) == 2, primary
    assert all(r["memory"]["max_bytes"] for r in rows), rows


KEYS = 3000
#: How long a promotion may take: down-after, then an election; one that finds no leader
#: (the two sentinels left each voted for itself) is retried only after twice the
#: failover-timeout (Sentinel's own rule), so that is the bound, plus slack.
PROMOTION_BOUND_S = (
    SENTINEL_DEFAULTS["down_after_ms"] + 2 * SENTINEL_DEFAULTS["failover_timeout_ms"]
) / 1000 + 15
CHANGED = {"VALKEY_PLANS_REPL_MAXMEMORY": "96mb", "VALKEY_PLANS_REPL_DOWN_AFTER_MS": "6000"}


def secrets(lab) -> dict[str, str]:
    return json.loads(Path(lab.state.lab_dir, "replication-secrets.json").read_text())


def admin(lab, host, timeout: float = 5) -> valkey.Valkey:
    """The admin user on `host`'s instance, from outside (the checks' view)."""
    return valkey.Valkey(
        host=host.address,
        port=6390,
        username="admin",
        password=secrets(lab)["admin"],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


def sentinel(lab, host, timeout: float = 5) -> valkey.Valkey:
    return valkey.Valkey(
        host=host.address,
        port=26379,
        password=secrets(lab)["sentinel"],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


def until(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


def full_sync_under_way(lab, primary, replica) -> None:
    """Make `replica` sync in full from `primary` now, with a first AOF that takes about
    45 s to write (15 ms a key): the window in which Valkey refuses SIGTERM, wide enough
    that the deploy reaches this replica's restart inside it.

    Valkey 9 takes a full sync it loaded from disk as its AOF base, with no rewrite
    (valkey-io/valkey#1901); one it loads from the socket it still rewrites. So on 9 the
    replica loads from the socket (`repl-diskless-load swapdb`), or there is no window."""
    p, r = admin(lab, primary), admin(lab, replica)
    full_syncs = int(p.info("stats")["sync_full"])
    r.config_set("rdb-key-save-delay", "15000")
    if int(r.info("server")["valkey_version"].split(".")[0]) >= 9:
        r.config_set("repl-diskless-load", "swapdb")
    r.execute_command("REPLICAOF", "NO", "ONE")  # a new replication id: no partial sync
    r.execute_command("REPLICAOF", primary.address, "6390")
    until(lambda: r.info("replication")["master_link_status"] == "up", "the replica linked")
    assert int(p.info("stats")["sync_full"]) > full_syncs, "the replica did not sync in full"
    assert r.info("persistence")["aof_rewrite_in_progress"] == 1, "no first AOF under way"


def _aof_written(lab, host, into: list[float]) -> None:
    """Append the moment `host`'s AOF rewrite is over (or give up after 120 s)."""
    node = admin(lab, host)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if node.info("persistence")["aof_rewrite_in_progress"] == 0:
            into.append(time.monotonic())
            return
        time.sleep(0.05)


def _socket_polls(lab, host, into: list[float], stop: threading.Event) -> None:
    """Append the moment of every INFO that `host`'s instance gets over its unix socket,
    seen through MONITOR, until `stop` or until the instance goes down.

    Only the deploy's settled wait asks INFO over the socket again and again (every 0.5 s),
    so polls shortly before the first AOF is written show that the deploy had reached this
    instance's restart and was waiting on it: pyinfra's host order is its own (a set), so
    the test cannot know in advance when that happens."""
    with admin(lab, host).monitor() as watch:
        while not stop.is_set():
            try:
                if not watch.connection.can_read(timeout=0.2):
                    continue
                seen = watch.next_command()
            except (valkey.ValkeyError, OSError):
                return
            if seen["client_type"] == "unix" and seen["command"].upper().startswith("INFO"):
                into.append(time.monotonic())


def test_a_changed_plan_restarts_one_host_at_a_time_even_right_after_a_full_sync(replication):
    """Instances, then sentinels, restart host by host, each settled first: a replica in
    the middle of its first AOF after a full sync is waited for, not stopped blind."""
    lab, hosts = replication
    primary = admin(lab, hosts[0])
    primary.mset({f"restart:{i}": str(i) for i in range(KEYS)})
    assert primary.wait(2, 5000) == 2
    pids = {h.name: admin(lab, h).info("server")["process_id"] for h in hosts}
    myids = {h.name: sentinel(lab, h).execute_command("SENTINEL", "MYID") for h in hosts}
    full_sync_under_way(lab, hosts[0], hosts[2])
    late = hosts[2].name
    instances = {h.name: admin(lab, h, timeout=0.3) for h in hosts}
    sentinels = {h.name: sentinel(lab, h, timeout=0.3) for h in hosts}
    aof_done: list[float] = []
    polls: list[float] = []
    stop_polls = threading.Event()
    try:
        with DownWatch(instances) as seen, DownWatch(sentinels) as heard:
            start = time.monotonic()
            watcher = threading.Thread(target=_aof_written, args=(lab, hosts[2], aof_done))
            poller = threading.Thread(target=_socket_polls, args=(lab, hosts[2], polls, stop_polls))
            watcher.start()
            poller.start()
            run = pyinfra(INVENTORY, env=CHANGED)
            elapsed = time.monotonic() - start
            watcher.join()
            stop_polls.set()
            poller.join()
        assert run.returncode == 0, run.output[-5000:]
        print(f"\nrolling restart of 3 instances and 3 sentinels: {elapsed:.1f} s")
        downs = {
            h.name: f"{min(seen.down_times(h.name), default=start) - start:.1f}" for h in hosts
        }
        print(f"instances first seen down (s into the deploy): {downs}")
        assert aof_done, "the replica's first AOF was never seen written"
        waited = [t for t in polls if aof_done[0] - 3 <= t <= aof_done[0]]
        assert len(waited) >= 3, (
            f"the deploy was not waiting on {late} in the 3 s before its first AOF was written"
            f" ({len(waited)} INFO over its socket; {len(polls)} in all): the test proves nothing"
        )
        assert min(seen.down_times(late)) > aof_done[0], "restarted while writing its first AOF"
        print(
            f"first AOF written {aof_done[0] - start:.1f} s into the deploy; {late} went"
            f" down {min(seen.down_times(late)) - aof_done[0]:.1f} s after it"
        )
        assert not seen.overlapping(), f"two instances down at once: {seen.overlapping()[:3]}"
        assert not heard.overlapping(), f"two sentinels down at once: {heard.overlapping()[:3]}"
        assert heard.seen_down() == set(myids), "a sentinel was not restarted"
        for h in hosts:
            node = admin(lab, h)
            assert node.info("server")["process_id"] != pids[h.name], f"{h.name} not restarted"
            assert node.config_get("maxmemory")["maxmemory"] == str(96 << 20)
            assert node.dbsize() == KEYS, f"{h.name} holds {node.dbsize()} keys, not {KEYS}"
            watcher = sentinel(lab, h)
            assert watcher.execute_command("SENTINEL", "MYID") == myids[h.name]
            assert watcher.sentinel_master("main")["num-other-sentinels"] == 2, "a stale peer"
            assert watcher.sentinel_master("main")["down-after-milliseconds"] == 6000
        assert primary_port(lab, hosts[1], secrets(lab)["sentinel"]).startswith(hosts[0].address)
        again = pyinfra(INVENTORY, env=CHANGED)
        assert again.returncode == 0 and again.changed == 0, again.output[-5000:]
    finally:
        for client in [*instances.values(), *sentinels.values()]:
            client.close()
        restored = pyinfra(INVENTORY)
    assert restored.returncode == 0, restored.output[-5000:]


def test_losing_the_primary_host_promotes_a_replica_and_loses_no_waited_write(
    replication, settings_file
):
    lab, hosts = replication
    primary_loss_drill(lab, hosts, settings_file)


def primary_loss_drill(lab, hosts: list, settings_file: Path) -> None:
    """The group of inventories/replication.py on `hosts` loses its primary's host: a
    replica is promoted, the client writes there, no waited write is lost, the old
    primary rejoins as a replica, and the plan again changes nothing."""
    settings = load_settings(env_file=settings_file).hosted
    assert settings.mode == "sentinel"
    password = settings.sentinel_password.get_secret_value()
    old_primary = hosts[0]
    witness = hosts[1]
    assert primary_port(lab, witness, password) == f"{old_primary.address}:6390"

    waited: list[str] = []
    with Clients(settings) as clients:
        api = clients.api
        for _ in range(200):
            key = new_key("usr")
            api.set(key, "1")
            if api.wait(1, 1000) >= 1:
                waited.append(key)
        assert len(waited) == 200, "replicas did not acknowledge writes before the failure"

        net.cut_off(old_primary.veth)
        cut = time.monotonic()
        try:
            promoted = None
            while time.monotonic() - cut < PROMOTION_BOUND_S:
                named = primary_port(lab, witness, password)
                if not named.startswith(old_primary.address):
                    promoted = named
                    break
                time.sleep(0.25)
            assert promoted, (
                f"no replica was promoted within {PROMOTION_BOUND_S:.0f} s of losing the"
                " primary's host"
            )
            failover_s = time.monotonic() - cut

            after, longest, calls = None, 0.0, []
            while time.monotonic() - cut < failover_s + 60 and after is None:
                started = time.monotonic()
                try:
                    key = new_key("usr")
                    api.set(key, "2")
                    after, outcome = key, "ok"
                except (valkey.ConnectionError, valkey.TimeoutError, valkey.ReadOnlyError) as e:
                    outcome = type(e).__name__
                    time.sleep(0.25)
                longest = max(longest, time.monotonic() - started)
                calls.append(f"{started - cut:.1f}-{time.monotonic() - cut:.1f} s {outcome}")
            print("\ncalls after the cut: " + "; ".join(calls))
            assert after, "the api client never wrote to the new primary"
            written_s = time.monotonic() - cut
            lost = [k for k in waited if api.get(k) != b"1"]
            assert not lost, f"{len(lost)} writes acknowledged by a replica were lost"
            print(f"\nfailover: primary named {promoted} {failover_s:.1f} s after the cut")
            print(
                f"first write through the client {written_s:.1f} s after the cut"
                f" ({written_s - failover_s:+.1f} s after Sentinel named the new primary),"
                f" longest call {longest:.1f} s"
            )
            # README's stall bound ("Bounded stalls"): a read's socket timeout, the
            # retry budget and one connect, plus slack for Sentinel's answers; a hang
            # fails this, not a speed.
            bound = settings.command_timeout + 5.0
            bound += settings.retry_budget + settings.connect_timeout
            assert longest < bound, f"one call stalled {longest:.1f} s"
        finally:
            net.reconnect(old_primary.veth)

    # The old primary comes back as a replica of the new one.
    deadline = time.monotonic() + 60
    role = ""
    while time.monotonic() < deadline:
        role = lab.check(
            old_primary,
            'REDISCLI_AUTH="$(cat /var/lib/valkey-plans/auth/main/checks)" valkey-cli'
            " --no-auth-warning --user checks -p 6390 INFO replication | grep '^role:'",
        ).strip()
        if role == "role:slave":
            break
        time.sleep(0.5)
    assert role == "role:slave", f"the old primary says {role!r} after rejoining, not a replica"

    # Sentinel owns the topology now: the same plan changes nothing, restarts nobody.
    pid = lab.check(witness, "systemctl show -p MainPID --value valkey-server@main").strip()
    rerun = pyinfra(INVENTORY)
    assert rerun.returncode == 0 and rerun.changed == 0, rerun.output[-5000:]
    assert lab.check(witness, "systemctl show -p MainPID --value valkey-server@main").strip() == pid
