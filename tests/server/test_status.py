"""`valkey-plans status` against real valkey-server processes under a known load.

The load is known by construction: a reader cycles over 3 present keys and 1 absent
one (75% hits), a writer adds TTL records to a full `volatile-lru` cache (each SET
evicts one record of the same size), and the connections carry known client names.
The snapshot (`status.snapshot`, what `status --json` prints) must report each within
10%; no test depends on how fast this machine is.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass

import pytest
import valkey
from click.testing import CliRunner
from pydantic import SecretStr

from tests.valkey_server import cluster_port
from valkey_plans.cli.main import main
from valkey_plans.plan import Plan
from valkey_plans.plan.acl import acl_lines
from valkey_plans.plan.inventory import Target
from valkey_plans.plan.secrets import ACL_USERS, ENV_PREFIX
from valkey_plans.verify import status
from valkey_plans.verify.status import CLIENT_NAME, COMMANDS

MAXMEMORY = 4 * 1024 * 1024
HOT = ("usr:000000000hot", "usr:000000001hot", "usr:000000002hot")
ABSENT = "usr:0000000none"
VALUE = b"x" * 1000
BATCH = 100  # commands per pipeline: 25 whole read cycles


def cache_target(port: int, host: str = "@local", **data: object) -> Target:
    plan = Plan.from_host_data(
        host,
        {"valkey_instances": [{"name": "cache", "role": "cache", "port": port}], **data},
    )
    return Target(host, plan, "local://")


def within(got: float | None, want: float, share: float = 0.10) -> bool:
    return got is not None and abs(got - want) <= share * want


@dataclass
class Load:
    """Reader and writer threads; their own counts are the truth status is held to."""

    port: int
    reads: int = 0
    writes: int = 0

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.reader = valkey.Valkey(port=self.port, db=0, client_name="app:api")
        self.writer = valkey.Valkey(port=self.port, db=1, client_name="app:background")
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._read, self._write)]

    def fill(self) -> None:
        """Hot keys without a TTL (never evicted), then records until evictions start."""
        for key in HOT:
            self.reader.set(key, b"hot")
        n = 0
        while int(self.writer.info("stats")["evicted_keys"]) < 500:
            with self.writer.pipeline(transaction=False) as pipe:
                for _ in range(BATCH):
                    pipe.set(f"usr:fill{n:08d}", VALUE, ex=3600)
                    n += 1
                pipe.execute()
        self.next = n

    def _read(self) -> None:
        cycle = (*HOT, ABSENT)
        while not self.stop.is_set():
            with self.reader.pipeline(transaction=False) as pipe:
                for i in range(BATCH):
                    pipe.get(cycle[i % 4])
                pipe.execute()
            self.reads += BATCH

    def _write(self) -> None:
        while not self.stop.is_set():
            with self.writer.pipeline(transaction=False) as pipe:
                for _ in range(BATCH):
                    pipe.set(f"usr:fill{self.next:08d}", VALUE, ex=3600)
                    self.next += 1
                pipe.execute()
            self.writes += BATCH

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.fixture
def cache_server(valkey_factory):
    return valkey_factory(
        "status",
        databases="4",
        maxmemory=str(MAXMEMORY),
        maxmemory_policy="volatile-lru",
        maxmemory_samples="10",
    )


def test_status_reports_a_known_load_within_ten_percent(cache_server):
    load = Load(cache_server.port)
    load.fill()
    idle = [valkey.Valkey(port=cache_server.port, client_name=n)
            for n in ("app:api", "app:api", "app:background", "shop:api")]  # fmt: skip
    for client in idle:
        client.ping()
    target = cache_target(cache_server.port)
    with load:
        time.sleep(0.5)  # both threads running before the first sample
        start, reads0, writes0 = time.monotonic(), load.reads, load.writes
        snap = status.snapshot([target], interval=2.0)
        elapsed = time.monotonic() - start
        reads, writes = load.reads - reads0, load.writes - writes0
    (got,) = snap.instances
    want_ops, want_evictions = (reads + writes) / elapsed, writes / elapsed
    measured = {
        "hit_ratio": got.hit_ratio,
        "ops_per_s": (got.ops_per_s, want_ops),
        "evictions_per_s": (got.evictions_per_s, want_evictions),
        "memory": (got.memory_used_bytes, got.maxmemory_bytes),
        "connections": got.connections,
    }
    print(f"\nstatus under load: {measured}")
    assert got.error is None
    assert within(got.hit_ratio, 0.75), measured
    assert within(got.ops_per_s, want_ops), measured
    assert within(got.evictions_per_s, want_evictions), measured
    assert got.maxmemory_bytes == MAXMEMORY
    assert within(got.memory_used_bytes, MAXMEMORY), measured  # evicting: at the limit
    assert got.memory_ratio == pytest.approx(got.memory_used_bytes / MAXMEMORY)
    assert got.connections == {"api": 3, "blocking": 0, "subscriber": 0, "background": 2,
                               "other": 1}, measured  # fmt: skip
    assert got.expirations_per_s is not None and got.expirations_per_s >= 0
    assert (got.cluster_state, got.backup_age_s) == (None, None)
    for client in idle:
        client.close()


def test_rates_are_over_the_interval_not_since_start(cache_server):
    """A cache that missed a lot before now hits 100%: status shows now, not the past."""
    client = cache_server.client()
    for _ in range(1000):
        client.get("usr:0000000none")  # 1000 misses before status starts
    client.set(HOT[0], b"hot")
    load_stop = threading.Event()

    def hits() -> None:
        reader = cache_server.client(client_name="app:api")
        while not load_stop.is_set():
            reader.get(HOT[0])

    thread = threading.Thread(target=hits, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        snap = status.snapshot([cache_target(cache_server.port)], interval=0.5)
    finally:
        load_stop.set()
        thread.join(timeout=10)
    assert snap.instances[0].hit_ratio == 1.0


def test_an_idle_instance_shows_no_load_of_its_own(valkey_server):
    """status subtracts its own commands: an idle server shows 0 ops/s, no lookups."""
    snap = status.snapshot([cache_target(valkey_server.port)], interval=0.3)
    (got,) = snap.instances
    assert (got.ops_per_s, got.hit_ratio, got.evictions_per_s) == (0.0, None, 0.0)
    assert got.connections == {"api": 0, "blocking": 0, "subscriber": 0, "background": 0,
                               "other": 0}  # fmt: skip


def test_watch_reuses_the_previous_sample_and_sends_few_commands(valkey_server):
    """Per refresh of --watch: INFO and CLIENT LIST, nothing else (commandstats says)."""
    admin = valkey_server.client()
    admin.config_resetstat()
    with status.status_of([cache_target(valkey_server.port)], interval=0.1) as live:
        for _ in range(3):
            live.refresh()
    stats = admin.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
    calls.pop("config|resetstat", None)
    # one baseline INFO + one per refresh; CLIENT LIST per refresh; the connection's
    # own handshake (CLIENT SETNAME / SETINFO) once
    assert calls.pop("info") == 4 and calls.pop("client|list") == 3, calls
    assert set(calls) <= {"client|setname", "client|setinfo", "hello"}, calls


def test_replication_lag_and_link_from_the_primary_info(valkey_factory):
    primary = valkey_factory("primary", databases="1", repl_diskless_sync_delay="0")
    replica = valkey_factory("replica", databases="1", replicaof=f"127.0.0.1 {primary.port}")
    writer = primary.client()
    deadline = time.monotonic() + 10
    while replica.client().info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "replica never linked"
        time.sleep(0.05)
    for i in range(100):
        writer.set(f"ord:{i:012d}", b"v")
    writer.wait(1, 5000)
    loopback = {"bind": ["127.0.0.1"], "announce_ip": "127.0.0.1"}
    targets = [
        Target("db-1", Plan.from_host_data("db-1", {"valkey_instances": [
            {"name": "hosted", "role": "primary", "port": primary.port, **loopback}],
            "valkey_app": {"hosted_instance": "hosted", "cache_instance": None}}), "local://"),
        Target("db-2", Plan.from_host_data("db-2", {"valkey_instances": [
            {"name": "copy", "role": "replica", "port": replica.port,
             "replicaof": "db-1/hosted", **loopback}],
            "valkey_app": {"cache_instance": None}}), "local://"),
    ]  # fmt: skip
    snap = status.snapshot(targets, interval=0.3)
    first, second = snap.instances
    assert first.replication.role == "master" and second.replication.role == "slave"
    (listed,) = first.replication.replicas
    assert (listed.address, listed.state) == (f"127.0.0.1:{replica.port}", "online")
    assert listed.lag_bytes == first.replication.offset - listed.offset >= 0
    assert second.replication.link == "up"
    assert second.replication.lag_bytes == listed.lag_bytes  # the replica row: its own lag
    assert first.replication.lag_bytes == listed.lag_bytes


def test_cluster_state_of_a_cluster_node(valkey_factory):
    node = valkey_factory("node", port=cluster_port(), databases="1", cluster_enabled="yes")
    plan = Plan.from_host_data("db-1", {
        "valkey_instances": [{"name": "n0", "role": "cluster-node", "cluster": "main",
                              "port": node.port, "announce_ip": "127.0.0.1"}],
        "valkey_app": {"hosted_instance": "n0", "cache_instance": None}})  # fmt: skip
    target = Target("db-1", plan, "local://")
    assert status.snapshot([target], interval=0.1).instances[0].cluster_state == "fail"
    node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    deadline = time.monotonic() + 10
    while status.snapshot([target], interval=0.1).instances[0].cluster_state != "ok":
        assert time.monotonic() < deadline, "cluster_state never became ok"
        time.sleep(0.1)


def test_the_checks_user_may_run_every_command_status_sends(valkey_factory, tmp_path, monkeypatch):
    """Under the plan's ACL file, status logs in as `checks` and is refused nothing."""
    passwords = {user: f"{user}-password-long-enough" for user in ACL_USERS}
    for user, password in passwords.items():
        monkeypatch.setenv(f"{ENV_PREFIX}{user.upper()}", password)
    probe = cache_target(1, valkey_acl=True)
    aclfile = tmp_path / "users.acl"
    hashed = {u: SecretStr(p) for u, p in passwords.items()}
    aclfile.write_text("\n".join(acl_lines(probe.plan, probe.plan.instances[0], hashed)) + "\n")
    server = valkey_factory(
        "acl", login=("admin", passwords["admin"]), aclfile=str(aclfile), databases="4"
    )
    admin = server.client(username="admin", password=passwords["admin"])
    for command in COMMANDS:
        assert admin.execute_command("ACL", "DRYRUN", "checks", *command) == b"OK", command
    snap = status.snapshot([cache_target(server.port, valkey_acl=True)], interval=0.2)
    (got,) = snap.instances
    assert got.error is None, got.error
    names = [c["name"] for c in admin.client_list()]
    assert CLIENT_NAME not in names  # status closed its connection on the way out
    users = {c["user"] for c in admin.client_list()}
    assert users == {"admin"}


def test_an_unreachable_instance_is_reported_and_the_others_still_shown(valkey_server):
    dead = cache_target(1, host="gone")  # port 1: nothing listens there
    snap = status.snapshot([cache_target(valkey_server.port), dead], interval=0.1)
    alive, gone = snap.instances
    assert alive.error is None and alive.ops_per_s is not None
    assert gone.error and "Connection" in gone.error and gone.ops_per_s is None
    assert not snap.ok


def test_cli_json_has_the_documented_shape(valkey_server, tmp_path):
    (tmp_path / "group_data").mkdir()
    inventory = tmp_path / "site.py"
    inventory.write_text(
        f'hosts = [("@local", {{"valkey_instances": [{{"name": "cache", "role": "cache",'
        f' "port": {valkey_server.port}}}]}})]\n'
    )
    result = CliRunner().invoke(
        main, ["--project-dir", str(tmp_path), "status", str(inventory), "--json",
               "--interval", "0.2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"taken_at", "interval_s", "instances"}
    assert data["interval_s"] == 0.2 and data["taken_at"].endswith("Z")
    (row,) = data["instances"]
    assert list(row) == ["host", "instance", "role", "address", "error", "memory",
                         "ops_per_s", "hit_ratio", "evictions_per_s", "expirations_per_s",
                         "connections", "replication", "cluster_state", "backup_age_s"]  # fmt: skip
    assert (row["host"], row["instance"], row["role"]) == ("@local", "cache", "cache")
    assert set(row["memory"]) == {"used_bytes", "max_bytes", "ratio"}
    assert set(row["replication"]) == {"role", "offset", "link", "lag_bytes", "replicas"}
    assert row["backup_age_s"] is None and row["cluster_state"] is None


def test_cli_prints_a_table_without_json(valkey_server, tmp_path):
    inventory = tmp_path / "site.py"
    inventory.write_text(
        f'hosts = [("@local", {{"valkey_instances": [{{"name": "cache", "role": "cache",'
        f' "port": {valkey_server.port}}}]}})]\n'
    )
    result = CliRunner().invoke(
        main, ["--project-dir", str(tmp_path), "status", str(inventory), "--interval", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert "@local/cache" in result.stdout and "backup" in result.stdout


def test_watch_and_json_do_not_combine(tmp_path):
    inventory = tmp_path / "site.py"
    inventory.write_text("hosts = []\n")
    result = CliRunner().invoke(main, ["status", str(inventory), "--watch", "--json"])
    assert result.exit_code == 2 and "--watch" in result.output


def test_watch_redraws_the_table(valkey_server):
    from rich.console import Console

    out = Console(record=True, width=200, force_terminal=False, file=io.StringIO())
    status.watch([cache_target(valkey_server.port)], 0.1, out=out, refreshes=2)
    assert "@local/cache" in out.export_text()
