"""Valkey Cluster from inventories/cluster.py on three lab hosts, and the loss of one host.

The module runs once per lane: on Valkey 8 (bookworm, trixie, bookworm) and on three
forky hosts (Valkey 9.1).

The user's commands, as they are: `pyinfra -y inventories/cluster.py deploy.py` and
`valkey-plans verify inventories/cluster.py`. Then an application writes through
`valkey_plans.client.clients` with the settings the deploy rendered, one primary's host is cut
off the lab bridge, a replica takes over, the writes go on, and the host comes back as
a replica. Figures (creation, rerun, failover time, writes lost) are printed, never
compared with a time limit; run with `-s` (or `-rP`) to see them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import valkey
from valkey.exceptions import ValkeyError

from tests.lab.downwatch import DownWatch
from tests.lab.pyinfra_lab import PROJECT, Run, checks, deploy, hosts_url
from tests.valkey_server import ValkeyProcess
from valkey_plans.client import functions
from valkey_plans.client.cache import LocalCache
from valkey_plans.client.clients import Clients
from valkey_plans.client.settings import load_settings
from valkey_plans.client.store import Store, email_key
from valkey_plans.deploy import cluster_nodes
from valkey_plans.deploy.cluster_nodes import Member
from valkey_plans.keys import new_key
from valkey_plans.lab import net
from valkey_plans.verify.checks.test_scaleout import LAG_SECONDS
from valkey_plans.verify.store_links import ORPHAN, store_links

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

INVENTORY = "inventories/cluster.py"
HOSTS = 3
PORTS = (7000, 7001)
SLOTS = 16384
INITIAL_KEYS = 10_000
#: Acknowledged writes each writer must make while the host is cut off (after the
#: promotion) and again after it is back, before the test moves on.
WRITES_PER_PHASE = 20
#: WAIT 1 <ms> after each durable write: the api client accepts barriers up to 1 s.
WAIT_MS = 500
#: Seconds the lab may add to README's stall bound: each slot-map refresh during the cut
#: can meet the cut host's other node on an idle connection (one socket timeout).
STALL_SLACK = 10.0
#: Bounds on waiting for the cluster to change, so a broken cluster fails the test
#: instead of hanging it (not performance limits: the figures are printed).
PATIENCE = 240.0

T = TypeVar("T")


def figure(text: str) -> None:
    print(f"[cluster figures] {text}", flush=True)


def cluster_env(hosts: int = HOSTS) -> dict[str, str]:
    """inventories/cluster.py over the first `hosts` lab hosts."""
    return {**os.environ, "COLUMNS": "250", "VALKEY_PLANS_CLUSTER_HOSTS": str(hosts)}


def valkey_plans_cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`valkey-plans ARGS inventories/cluster.py` from the project dir, as an operator runs it."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "valkey-plans"), *args, INVENTORY],
        cwd=PROJECT,
        env=cluster_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_deploy(hosts: int = HOSTS) -> tuple[Run, float]:
    start = time.monotonic()
    run = deploy(cluster_env(hosts), inventory=INVENTORY)
    return run, time.monotonic() - start


def parse_nodes(text: str) -> dict[str, Member]:
    return {m.id: m for m in cluster_nodes.parse(text)}


class Admin:
    """A plain connection to one node as the admin user, to watch the cluster from outside."""

    def __init__(self, lab, address: str, port: int, timeout: float = 2) -> None:
        password = json.loads(Path(lab.state.lab_dir, "cluster-secrets.json").read_text())["admin"]
        self.where = f"{address}:{port}"
        self.client = valkey.Valkey(
            host=address,
            port=port,
            username="admin",
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )

    def info(self) -> dict[str, str]:
        text = self.client.execute_command("CLUSTER", "INFO")
        pairs = (line.partition(":") for line in text.splitlines())
        return {k.strip(): v.strip() for k, sep, v in pairs if sep}

    def nodes(self) -> dict[str, Member]:
        return parse_nodes(self.client.execute_command("CLUSTER", "NODES"))

    def replication(self) -> dict:
        return self.client.info("replication")

    def close(self) -> None:
        self.client.close()


def wait_for(what: str, probe: Callable[[], T | None], patience: float = PATIENCE) -> T:
    """Poll `probe` every 50 ms until it returns something truthy; fail after `patience`."""
    deadline = time.monotonic() + patience
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (ValkeyError, OSError) as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"gave up after {patience:.0f} s waiting for {what} (last error: {last!r})")


@dataclass
class Writer:
    """One thread writing fresh `usr:` keys through the cluster client until stopped.

    durable=True: SET then `WAIT 1 WAIT_MS` on the same connection (one pipeline to the
    key's primary); only writes whose WAIT saw a replica count as durable.
    """

    clients: Clients
    durable: bool
    #: Makes each written key; by default fresh `usr:` keys all over the slots.
    make_key: Callable[[], str] = field(default=partial(new_key, "usr"))
    acked: list[tuple[str, float]] = field(default_factory=list)
    #: When each acknowledged write's call began (in the order of `acked`).
    began: list[float] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    errors: int = 0
    longest_call: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=PATIENCE)
        assert not self.thread.is_alive(), "a writer did not stop"

    def acked_since(self, moment: float) -> int:
        return sum(1 for _, t in self.acked if t >= moment)

    def _run(self) -> None:
        rc = self.clients.api
        while not self.stop.is_set():
            key = self.make_key()
            started = time.monotonic()
            try:
                if self.durable:
                    primary = rc.get_node_from_key(key)
                    pipe = primary.valkey_connection.pipeline(transaction=False)
                    pipe.set(key, key)
                    pipe.execute_command("WAIT", 1, WAIT_MS)
                    ok, replicas = pipe.execute()
                    if ok and replicas >= 1:
                        self.acked.append((key, time.monotonic()))
                    elif ok:
                        self.unconfirmed.append(key)
                elif rc.set(key, key):
                    self.acked.append((key, time.monotonic()))
                    self.began.append(started)
            except (ValkeyError, OSError):
                self.errors += 1
                if self.durable:
                    try:  # the slot map may have moved (MOVED from the old node, or it is gone)
                        rc.nodes_manager.initialize()
                    except (ValkeyError, OSError):
                        time.sleep(0.1)
            self.longest_call = max(self.longest_call, time.monotonic() - started)


def keys_in(member: Member, clients: Clients) -> Callable[[], str]:
    """Fresh `usr:` keys whose slots `member` serves, to time its shard's failover."""
    bounds = [entry.partition("-") for entry in member.slots if "[" not in entry]
    ranges = [(int(lo), int(hi or lo)) for lo, _, hi in bounds]

    def make() -> str:
        while True:
            key = new_key("usr")
            slot = clients.api.keyslot(key)
            if any(lo <= slot <= hi for lo, hi in ranges):
                return key

    return make


def missing(clients: Clients, keys: list[str]) -> int:
    """How many of `keys` the cluster no longer has (pipelined GETs per slot owner)."""
    gone = 0
    for start in range(0, len(keys), 1000):
        pipe = clients.api.pipeline()
        batch = keys[start : start + 1000]
        for key in batch:
            pipe.get(key)
        gone += sum(1 for value in pipe.execute() if value is None)
    return gone


@pytest.fixture(scope="module")
def cluster(lab_hosts, lane):
    """The first deploy of inventories/cluster.py on the lane's hosts; stopped afterwards."""
    run, elapsed = run_deploy()
    assert run.returncode == 0, run.tail()
    figure(f"first deploy, cluster created: {elapsed:.1f} s")
    yield run
    # Should a later test deploy another plan to these hosts, leave them only its own.
    for host in lab_hosts.hosts:
        net.reconnect(host.veth)
        lab_hosts.run(host, "systemctl disable --now valkey-server@n0 valkey-server@n1")


@pytest.fixture
def hosts(lane):
    return lane.hosts[:HOSTS]


def test_first_deploy_forms_three_primaries_with_replicas_on_other_hosts(lab_hosts, hosts, cluster):
    first = hosts[0].name
    assert any("Valkey Cluster main formed" in op for op in cluster.changed_operations(first)), (
        cluster.tail()
    )
    for host in hosts:
        admin = Admin(lab_hosts, host.address, PORTS[0])
        info, nodes = admin.info(), admin.nodes()
        admin.close()
        assert info["cluster_state"] == "ok", f"{host.name}: {info}"
        assert int(info["cluster_slots_ok"]) == SLOTS, f"{host.name}: {info}"
        assert int(info["cluster_known_nodes"]) == HOSTS * len(PORTS), f"{host.name}: {info}"
        primaries = [n for n in nodes.values() if n.primary and n.slots]
        replicas = [n for n in nodes.values() if "slave" in n.flags]
        assert (len(primaries), len(replicas)) == (3, 3), f"{host.name}: {nodes}"
        for replica in replicas:
            primary = nodes[replica.primary_id]
            assert primary.ip != replica.ip, f"{replica.address} replicates {primary.address}"


def test_second_deploy_changes_nothing(hosts, cluster):
    again, elapsed = run_deploy()
    figure(f"second deploy (no change): {elapsed:.1f} s")
    assert again.returncode == 0, again.tail()
    for host in hosts:
        assert not again.changed_operations(host.name), again.changed_operations(host.name)
        assert again.count(host.name, "No changes") > 0, again.tail()


def test_verify_passes(cluster):
    start = time.monotonic()
    done = valkey_plans_cli("verify", timeout=900)
    figure(f"valkey-plans verify {INVENTORY}: {time.monotonic() - start:.1f} s")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "test_every_primary_has_its_replicas_on_other_hosts" in done.stdout, done.stdout


def test_status_sees_every_node_and_the_cluster_ok(cluster):
    """`status --json` over the inventory: six nodes, each reporting cluster_state ok."""
    done = valkey_plans_cli("status", "--json", timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    rows = json.loads(done.stdout)["instances"]
    assert len(rows) >= 6 and not [r for r in rows if r["error"]], rows
    assert {r["cluster_state"] for r in rows} == {"ok"}, rows
    assert sorted({r["replication"]["role"] for r in rows}) == ["master", "slave"], rows


def owns(member: Member, slot: int) -> bool:
    """Whether `member` serves `slot` (its CLUSTER NODES ranges; open-slot marks skipped)."""
    for part in member.slots:
        if part.startswith("["):
            continue
        first, _, last = part.partition("-")
        if int(first) <= slot <= int(last or first):
            return True
    return False


def test_a_slot_move_left_open_by_a_killed_deploy_is_finished_by_the_next(
    lab_hosts, hosts, cluster
):
    """What a deploy killed during a rebalance leaves: one slot MIGRATING on its owner and
    IMPORTING on its target, half of its keys moved. The next deploy finds it open
    (`--cluster check`), closes it with `--cluster fix`, and every key reads back."""
    admins = {(h.address, p): Admin(lab_hosts, h.address, p) for h in hosts for p in PORTS}
    try:
        first = admins[(hosts[0].address, PORTS[0])]
        keys = [f"{{half-moved}}:{i}" for i in range(200)]
        slot = int(first.client.execute_command("CLUSTER", "KEYSLOT", keys[0]))
        primaries = [m for m in first.nodes().values() if m.primary and m.slots]
        owner = next(m for m in primaries if owns(m, slot))
        target = next(m for m in primaries if m.id != owner.id)
        source = admins[(owner.ip, int(owner.address.rsplit(":", 1)[1]))].client
        dest = admins[(target.ip, int(target.address.rsplit(":", 1)[1]))].client
        for key in keys:
            source.set(key, key)
        dest.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", owner.id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
        password = json.loads(Path(lab_hosts.state.lab_dir, "cluster-secrets.json").read_text())
        host, port = target.address.rsplit(":", 1)
        source.execute_command(
            "MIGRATE", host, port, "", 0, 5000, "AUTH2", "admin", password["admin"],
            "KEYS", *keys[:100],
        )  # fmt: skip
        run, elapsed = run_deploy()
        figure(f"deploy that closes an open slot: {elapsed:.1f} s")
        assert run.returncode == 0, run.tail()
        assert any("formed" in op for op in run.changed_operations(hosts[0].name)), run.tail()
        for admin in admins.values():
            marks = [p for m in admin.nodes().values() for p in m.slots if p.startswith("[")]
            assert not marks, f"{admin.where} still has open slots: {marks}"
        holders = [m for m in first.nodes().values() if m.primary and owns(m, slot)]
        assert len(holders) == 1, holders
        holder = admins[(holders[0].ip, int(holders[0].address.rsplit(":", 1)[1]))].client
        assert holder.mget(keys) == keys, "a key of the half-moved slot was lost"
        holder.delete(*keys)  # off the keyspace the audit reads (they follow no domain)
        again, _ = run_deploy()
        assert again.returncode == 0, again.tail()
        assert not any(again.changed_operations(h.name) for h in hosts), again.tail()
    finally:
        for admin in admins.values():
            admin.close()


#: A store process that saves one user through the lab cluster, as an application does
#: (the rendered settings, its own local cache), until the test kills it.
STORE_WRITER = """
import sys, valkey
from pathlib import Path
from valkey_plans.client.cache import LocalCache
from valkey_plans.client.clients import Clients
from valkey_plans.client.settings import load_settings
from valkey_plans.client.store import Store
settings = load_settings(env={"VALKEY_HOST": sys.argv[1]}, env_file=Path(sys.argv[2]))
local = LocalCache.from_clients(*(valkey.Valkey(port=int(sys.argv[3]), db=n) for n in range(4)))
store = Store(Clients(settings.hosted).api, local, node="writer")
print("ready", flush=True)
key, email = sys.stdin.readline().split()
store.save_user({"email": email, "name": "Killed"}, key=key)
print("done", flush=True)
"""


def lab_cache(valkey_factory, name: str) -> ValkeyProcess:
    """A store node's local cache on this machine (a cache-role server, library loaded)."""
    cache = valkey_factory(name, databases="4", maxmemory_policy="volatile-lru")
    functions.ensure_loaded(cache.client())
    return cache


def lab_to_repair(lab, clients: Clients) -> dict[str, list[str]]:
    """The audit's store walk over every primary, each on its own admin connection."""
    nodes = [Admin(lab, n.host, n.port) for n in clients.api.get_primaries()]
    links = store_links(*(node.client for node in nodes))
    for node in nodes:
        node.close()
    return links.sample


def test_a_store_save_killed_between_its_writes_is_reported_then_repaired(
    lab_hosts, hosts, cluster, tmp_path, valkey_factory
):
    """A real store process saving through the lab cluster is held on its record's node
    (CLIENT PAUSE WRITE) after its index write, then SIGKILLed: the audit's walk sees the
    entry without its record, a reader's lookup ignores and deletes it, nothing is left."""
    seed = hosts[1]
    env_file = tmp_path / "app.env"
    env_file.write_text(lab_hosts.check(seed, "cat /etc/valkey-plans/app.env"))
    env_file.chmod(0o600)
    settings = load_settings(env={"VALKEY_HOST": seed.address}, env_file=env_file)
    clients = Clients(settings.hosted)
    email = f"killed-{new_key('usr')[4:].lower()}@example.com"
    entry = email_key(email)
    key = new_key("usr")
    while clients.api.get_node_from_key(key).name == clients.api.get_node_from_key(entry).name:
        key = new_key("usr")
    cache = lab_cache(valkey_factory, "writer-cache")
    args = [sys.executable, "-c", STORE_WRITER, seed.address, str(env_file), str(cache.port)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    owner = clients.api.get_node_from_key(key)
    held = Admin(lab_hosts, owner.host, owner.port)
    held.client.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        proc.stdin.write(f"{key} {email}\n")
        proc.stdin.flush()
        wait_for(
            "the writer held on its record's node",
            lambda: any("b" in c.get("flags", "") for c in held.client.client_list()),
            patience=20,
        )
        proc.kill()
        proc.wait(10)
    finally:
        held.client.execute_command("CLIENT", "UNPAUSE")
        held.close()
    assert clients.api.get(entry) == key.encode() and clients.api.get(key) is None
    assert lab_to_repair(lab_hosts, clients) == {ORPHAN: [entry]}
    audit = valkey_plans_cli("audit", "--json", timeout=600)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    (store,) = [row for row in json.loads(audit.stdout) if "store" in row]
    assert store["store_links"]["sample"] == {ORPHAN: [entry]}, store
    reader_cache = lab_cache(valkey_factory, "reader-cache")
    local = LocalCache.from_clients(*(reader_cache.client(db=n) for n in range(4)))
    reader = Store(clients.api, local, node="reader")
    assert reader.find_user(email) is None  # ignored ...
    assert clients.api.get(entry) is None  # ... and cleaned
    assert lab_to_repair(lab_hosts, clients) == {}
    clients.close()


def heard(node: Admin) -> bool:
    """A primary, or a replica linked and heard from within verify's LAG_SECONDS."""
    info = node.replication()
    if info.get("role") != "slave":
        return True
    silent = int(info.get("master_last_io_seconds_ago", -1))
    return info.get("master_link_status") == "up" and 0 <= silent <= LAG_SECONDS


def test_losing_a_primary_s_host(lab_hosts, hosts, cluster, tmp_path):
    victim_host, seed, third = hosts[0], hosts[1], hosts[2]
    # The application's settings exactly as the deploy rendered them on a host; only the
    # address differs, because this test runs outside the lab hosts (where 127.0.0.1 is).
    env_file = tmp_path / "app.env"
    env_file.write_text(lab_hosts.check(seed, "cat /etc/valkey-plans/app.env"))
    env_file.chmod(0o600)
    settings = load_settings(env={"VALKEY_HOST": seed.address}, env_file=env_file)
    assert settings.hosted.mode == "cluster", settings.hosted
    seeds = {(h.address, port) for h in hosts for port in PORTS}
    assert set(settings.hosted.cluster_addresses) == seeds, settings.hosted.cluster_nodes
    observer = Admin(lab_hosts, seed.address, PORTS[0])
    before = observer.nodes()
    victim = next(
        n for n in before.values() if n.ip == victim_host.address and n.primary and n.slots
    )
    (heir,) = [n for n in before.values() if n.primary_id == victim.id]
    assert heir.ip != victim_host.address

    with Clients(settings.hosted) as clients:
        start = time.monotonic()
        initial = []
        for _ in range(INITIAL_KEYS // 1000):
            pipe = clients.api.pipeline()
            batch = [new_key("usr") for _ in range(1000)]
            for key in batch:
                pipe.set(key, key)
            assert all(pipe.execute()), "an initial write was refused"
            initial += batch
        figure(f"{INITIAL_KEYS} keys written (pipelines of 1000): {time.monotonic() - start:.2f} s")
        assert missing(clients, initial) == 0

        plain, durable = Writer(clients, durable=False), Writer(clients, durable=True)
        shard = Writer(clients, durable=False, make_key=keys_in(victim, clients))
        for writer in (plain, durable, shard):
            writer.start()
        wait_for("writes before the cut", lambda: plain.acked and durable.acked and shard.acked)

        cut = time.monotonic()
        net.cut_off(victim_host.veth)
        cut_done = time.monotonic()  # from here no write can reach the old primary
        try:
            failed_at = wait_for(
                f"{victim.address} flagged fail",
                lambda: "fail" in observer.nodes()[victim.id].flags and time.monotonic(),
            )
            promoted_at = wait_for(
                f"{heir.address} promoted",
                lambda: observer.nodes()[heir.id].primary and time.monotonic(),
            )
            figure(f"cut -> {victim.address} flagged fail: {failed_at - cut:.2f} s")
            figure(f"cut -> replica {heir.address} promoted: {promoted_at - cut:.2f} s")
            view = observer.nodes()
            assert view[heir.id].slots == victim.slots, (view[heir.id], victim)
            # verify must notice: the lost host's nodes and the shard without a replica.
            outage = checks(
                cluster_env(),
                hosts_url(lab_hosts, [seed, third]),
                inventory=INVENTORY,
                paths=("checks/test_scaleout.py",),
            )
            assert outage.returncode != 0, f"checks passed with a host cut off:\n{outage.tail()}"
            assert "FAILED checks/test_scaleout.py::test_cluster_members_are_the_planned" in (
                outage.output
            ), outage.tail()
            assert "FAILED checks/test_scaleout.py::test_every_primary_has_its_replicas" in (
                outage.output
            ), outage.tail()
            wait_for(
                "writes while the host is cut off",
                lambda: all(
                    w.acked_since(promoted_at) >= WRITES_PER_PHASE for w in (plain, durable, shard)
                ),
            )
            first = min(
                t for (_, t), b in zip(shard.acked, shard.began, strict=False) if b > cut_done
            )
            figure(
                f"cut -> first write to the lost primary's slots through the client:"
                f" {first - cut:.2f} s ({first - promoted_at:+.2f} s after the promotion)"
            )
            during = {w.durable: w.acked_since(cut) for w in (plain, durable)}
        finally:
            net.reconnect(victim_host.veth)
        restored = time.monotonic()
        figure(f"host cut off for {restored - cut:.1f} s")

        def rejoined() -> bool:
            view = observer.nodes()
            old = view[victim.id]
            return (
                "slave" in old.flags
                and old.primary_id == heir.id
                and not any(n.failing for n in view.values())
                and observer.info()["cluster_state"] == "ok"
            )

        wait_for(f"{victim.address} back as a replica of {heir.address}", rejoined)
        figure(f"restore -> old primary back as a replica: {time.monotonic() - restored:.2f} s")
        old_primary = Admin(lab_hosts, victim_host.address, int(victim.address.rsplit(":")[1]))
        wait_for(
            "the old primary's link to its new primary",
            lambda: old_primary.replication().get("master_link_status") == "up",
        )
        old_primary.close()
        # Every replica on the host that was cut off hears from its primary again: its
        # link may still say "up" while TCP retransmits after a backoff of tens of seconds.
        for port in PORTS:
            node = Admin(lab_hosts, victim_host.address, port)
            wait_for(f"{victim_host.address}:{port} hearing from its primary", partial(heard, node))
            node.close()
        figure(
            f"restore -> every replica of the cut host in touch: {time.monotonic() - restored:.2f} s"
        )
        after_restore = time.monotonic()
        wait_for(
            "writes after the restore",
            lambda: all(w.acked_since(after_restore) >= WRITES_PER_PHASE for w in (plain, durable)),
        )
        for writer in (plain, durable, shard):
            writer.finish()

        lost_initial = missing(clients, initial)
        lost_plain = missing(clients, [k for k, _ in plain.acked])
        lost_unconfirmed = missing(clients, durable.unconfirmed)
        lost_durable = missing(clients, [k for k, _ in durable.acked])
    observer.close()

    figure(
        f"plain writes: {len(plain.acked)} acknowledged ({during[False]} after the cut),"
        f" {plain.errors} errors, longest call {plain.longest_call:.1f} s"
    )
    figure(
        f"SET+WAIT writes: {len(durable.acked)} confirmed on a replica ({during[True]} after"
        f" the cut), {len(durable.unconfirmed)} acknowledged without a replica,"
        f" {durable.errors} errors, longest call {durable.longest_call:.1f} s"
    )
    figure(
        f"writes to the lost primary's slots: {len(shard.acked)} acknowledged,"
        f" {shard.errors} errors, longest call {shard.longest_call:.1f} s"
    )
    # The stall bound README states ("Bounded stalls"): one read's socket timeout, the
    # retry budget, one connect; the lab gets STALL_SLACK on top for its slot-map
    # refreshes that meet the cut host's other node. A hang, not a speed, fails this.
    tier = settings.hosted
    bound = tier.command_timeout + tier.retry_budget
    bound += tier.connect_timeout + STALL_SLACK
    for writer in (plain, shard):
        assert writer.longest_call < bound, f"a call stalled {writer.longest_call:.1f} s"
    figure(
        f"lost: {lost_initial} of {INITIAL_KEYS} initial keys, {lost_plain} of"
        f" {len(plain.acked)} plain acknowledged writes, {lost_unconfirmed} of"
        f" {len(durable.unconfirmed)} WAIT-unconfirmed writes, {lost_durable} of"
        f" {len(durable.acked)} WAIT-confirmed writes"
    )
    assert lost_durable == 0, f"{lost_durable} writes that a replica had confirmed were lost"

    # Back to the plan: verify's scale-out checks pass again, and the deploy leaves the
    # failed-over cluster alone.
    healed = checks(
        cluster_env(),
        hosts_url(lab_hosts, hosts),
        inventory=INVENTORY,
        paths=("checks/test_scaleout.py",),
    )
    assert healed.returncode == 0, healed.tail()
    again, elapsed = run_deploy()
    figure(f"deploy after the failover: {elapsed:.1f} s")
    assert again.returncode == 0, again.tail()
    for host in hosts:
        assert not again.changed_operations(host.name), again.changed_operations(host.name)


def test_a_config_change_restarts_one_node_at_a_time(lab_hosts, hosts, cluster):
    """A changed value restarts every node, host by host: never two nodes down at once,
    no failover, and the rerun changes nothing."""
    nodes = [(h.address, port) for h in hosts for port in PORTS]
    admins = {node: Admin(lab_hosts, *node) for node in nodes}
    pids = {node: a.client.info("server")["process_id"] for node, a in admins.items()}
    primaries = {n.address for n in admins[nodes[0]].nodes().values() if n.primary and n.slots}
    env = {**cluster_env(), "VALKEY_PLANS_CLUSTER_MAXMEMORY": "96mb"}
    watched = {node: Admin(lab_hosts, *node, timeout=0.3) for node in nodes}
    try:
        with DownWatch({node: a.client for node, a in watched.items()}) as watch:
            start = time.monotonic()
            run = deploy(env, inventory=INVENTORY)
            elapsed = time.monotonic() - start
        figure(f"rolling restart of {len(nodes)} nodes: {elapsed:.1f} s")
        assert run.returncode == 0, run.tail()
        after = {node: a.client.info("server")["process_id"] for node, a in admins.items()}
        assert all(after[n] != pids[n] for n in nodes), "a node was not restarted"
        assert all(
            a.client.config_get("maxmemory")["maxmemory"] == str(96 << 20) for a in admins.values()
        )
        seen_down, overlapping = watch.seen_down(), watch.overlapping()
        figure(f"nodes seen down: {len(seen_down)} of {len(nodes)}; ticks: {len(watch.ticks)}")
        assert not overlapping, f"two nodes down at once: {overlapping[:3]}"
        now = {n.address for n in admins[nodes[0]].nodes().values() if n.primary and n.slots}
        assert now == primaries, "a restart caused a failover"
        again = deploy(env, inventory=INVENTORY)
        assert again.returncode == 0 and not any(again.changed_operations(h.name) for h in hosts), (
            again.tail()
        )
    finally:
        restored = deploy(cluster_env(), inventory=INVENTORY)  # back to the plan's 64mb
        for admin in [*admins.values(), *watched.values()]:
            admin.close()
    assert restored.returncode == 0, restored.tail()


def test_a_fourth_host_joins_and_gets_slots(lab_hosts, lane, hosts, cluster):
    """The inventory grows by a host: its nodes join (add-node), the new primary gets
    slots (rebalance), every primary keeps one replica on another host, no key is lost."""
    before = Admin(lab_hosts, hosts[1].address, PORTS[0])
    primaries = [n for n in before.nodes().values() if n.primary and n.slots]
    keys_before = sum(Admin(lab_hosts, *p.address.split(":")).client.dbsize() for p in primaries)
    before.close()
    # This module runs after every other lab test but the upgrades (conftest.LAST_MODULES):
    # the lane grows by one host of its release, the running three keep running.
    grown_hosts = lane.grow(HOSTS + 1)
    new = grown_hosts[HOSTS]

    grown, elapsed = run_deploy(HOSTS + 1)
    figure(f"deploy adding {new.name} (add-node, rebalance): {elapsed:.1f} s")
    assert grown.returncode == 0, grown.tail()
    first = hosts[0].name
    assert any("Valkey Cluster main formed" in op for op in grown.changed_operations(first))

    admin = Admin(lab_hosts, new.address, PORTS[0])
    info, nodes = admin.info(), admin.nodes()
    admin.close()
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == SLOTS, info
    assert int(info["cluster_known_nodes"]) == (HOSTS + 1) * len(PORTS), info
    primaries = [n for n in nodes.values() if n.primary and n.slots]
    assert len(primaries) == HOSTS + 1, nodes
    assert any(p.ip == new.address for p in primaries), f"{new.name} serves no slots: {nodes}"
    for primary in primaries:
        replicas = [n for n in nodes.values() if n.primary_id == primary.id]
        assert len(replicas) == 1, (primary, replicas)
        assert replicas[0].ip != primary.ip, f"{replicas[0].address} replicates {primary}"
    keys_after = sum(Admin(lab_hosts, *p.address.split(":")).client.dbsize() for p in primaries)
    figure(f"keys before growth {keys_before}, after {keys_after}")
    assert keys_after == keys_before

    again, elapsed = run_deploy(HOSTS + 1)
    figure(f"second deploy of the grown cluster: {elapsed:.1f} s")
    assert again.returncode == 0, again.tail()
    for host in grown_hosts:
        assert not again.changed_operations(host.name), again.changed_operations(host.name)
    healed = checks(
        cluster_env(HOSTS + 1),
        hosts_url(lab_hosts, grown_hosts),
        inventory=INVENTORY,
        paths=("checks/test_scaleout.py",),
    )
    assert healed.returncode == 0, healed.tail()
