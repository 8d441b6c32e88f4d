"""Valkey 8.1 to 9.1 on trixie lab hosts, by the plan's `valkey_version` (issue 14).

inventories/upgrade.py: a standalone primary. The upgrade installs forky's 9.1 (only
Valkey's packages, pinned, held) and restarts the instance the settled way; every key,
value and TTL is still there. The same plan again changes nothing; a plan that asks for
8.1 again is refused before anything changes (9.1 writes RDB format 80).

inventories/upgrade_group.py: a Sentinel group on three more trixie hosts, upgraded while
a client writes through Sentinel and waits for a replica after each write: the replicas'
hosts first, then a handover of the primary role, then the old primary's host; no
waited write is lost.

inventories/upgrade_cluster.py: a 3-host Valkey Cluster on three more, upgraded while a
writer per shard waits for a replica after each write: every replica node first, then
each primary after a CLUSTER FAILOVER to its upgraded replica; no waited write is lost.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import valkey
from valkey.crc import key_slot
from valkey.exceptions import ValkeyError

from tests.deploy.pyinfra_run import pyinfra
from valkey_plans.client.clients import Clients
from valkey_plans.client.settings import load_settings
from valkey_plans.keys import new_key

pytestmark = pytest.mark.lab

INVENTORY = "inventories/upgrade.py"
CLI = "valkey-cli -p 6397"
#: Every key's name, type, value and whether it has a TTL, hashed on the server.
DIGEST = r"""
local keys = redis.call('KEYS', '*'); table.sort(keys)
local parts = {}
for _, k in ipairs(keys) do
  local t = redis.call('TYPE', k)['ok']
  local v = ''
  if t == 'string' then v = redis.call('GET', k)
  elseif t == 'hash' then
    local h, kv = redis.call('HGETALL', k), {}
    for i = 1, #h, 2 do kv[#kv + 1] = h[i] .. '=' .. h[i + 1] end
    table.sort(kv); v = table.concat(kv, ',')
  elseif t == 'list' then v = table.concat(redis.call('LRANGE', k, 0, -1), ',')
  elseif t == 'set' then
    local m = redis.call('SMEMBERS', k); table.sort(m); v = table.concat(m, ',')
  elseif t == 'zset' then v = table.concat(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'), ',')
  end
  local ttl = redis.call('PTTL', k) > 0 and 'ttl' or 'none'
  parts[#parts + 1] = k .. '|' .. t .. '|' .. v .. '|' .. ttl
end
return #keys .. ' ' .. redis.sha1hex(table.concat(parts, '\n'))
"""
#: 20,000 keys of five types, a quarter of them with a day's TTL.
FILL = (
    'seq 1 4000 | awk \'{ print "SET s:"$1" v"$1; print "HSET h:"$1" a "$1" b x";'
    ' print "RPUSH l:"$1" 1 2 3"; print "SADD t:"$1" p q"; print "ZADD z:"$1" 1 m";'
    ' if ($1 % 4 == 0) print "EXPIRE s:"$1" 86400" }\' | ' + CLI + " > /dev/null"
)


@pytest.fixture(scope="module")
def host(lab_hosts):
    trixie = [h for h in lab_hosts.hosts if h.release == "trixie"]
    assert trixie, "the upgrade drill needs a trixie lab host"
    return trixie[-1]


def digest(lab, host) -> str:
    script = DIGEST.replace("'", "'\\''")
    return lab.check(host, f"{CLI} EVAL '{script}' 0").strip()


def server_version(lab, host) -> str:
    return lab.check(host, f"{CLI} INFO server | tr -d '\\r' | sed -n 's/^valkey_version://p'")


def test_valkey_8_1_becomes_9_1_with_every_key_and_a_downgrade_is_refused(lab_hosts, host):
    lab = lab_hosts
    first = pyinfra(INVENTORY, "--limit", host.name)
    assert first.returncode == 0, first.output[-5000:]
    assert server_version(lab, host).startswith("8.1."), server_version(lab, host)
    held = lab.check(host, "apt-mark showhold").split()
    assert {"valkey-server", "valkey-tools"} <= set(held), held
    lab.check(host, FILL)
    before = digest(lab, host)
    assert before.startswith("20000 "), before

    upgraded = pyinfra(INVENTORY, "--limit", host.name, env={"VALKEY_PLANS_UPGRADE_VERSION": "9"})
    assert upgraded.returncode == 0, upgraded.output[-5000:]
    assert server_version(lab, host).startswith("9.1."), server_version(lab, host)
    assert digest(lab, host) == before, "the upgrade changed or lost data"
    assert {"valkey-server", "valkey-tools"} <= set(lab.check(host, "apt-mark showhold").split())
    pin = lab.check(host, "cat /etc/apt/preferences.d/valkey-plans-valkey.pref")
    assert "Pin: release n=forky\nPin-Priority: 1\n" in pin, pin
    assert lab.check(host, "dpkg-query -W -f='${Version}' libc6").startswith("2.41"), "libc moved"
    rdb = lab.check(
        host,
        f"{CLI} SAVE >/dev/null; cd $({CLI} CONFIG GET dir | sed -n 2p) &&"
        f" head -c 9 $({CLI} CONFIG GET dbfilename | sed -n 2p)",
    )
    assert rdb == "VALKEY080", rdb  # RDB format 80, under its new magic

    again = pyinfra(INVENTORY, "--limit", host.name, env={"VALKEY_PLANS_UPGRADE_VERSION": "9"})
    assert again.returncode == 0 and again.changed == 0, again.output[-5000:]

    pid = lab.check(host, f"{CLI} INFO server | tr -d '\\r' | sed -n 's/^process_id://p'")
    down = pyinfra(INVENTORY, "--limit", host.name, env={"VALKEY_PLANS_UPGRADE_VERSION": "8.1"})
    assert down.returncode != 0
    assert "would downgrade Valkey 9.1 to 8.1" in down.output, down.output[-3000:]
    assert "RDB format 80" in down.output, down.output[-3000:]
    assert "--> Starting operation" not in down.output, "the refusal came after a change"
    assert lab.check(host, f"{CLI} INFO server | tr -d '\\r' | sed -n 's/^process_id://p'") == pid
    assert digest(lab, host) == before


GROUP_INVENTORY = "inventories/upgrade_group.py"
GROUP_PORT = 6398
UPGRADE = {"VALKEY_PLANS_UPGRADE_VERSION": "9"}


@pytest.fixture(scope="module")
def six_trixie(lab_hosts):
    """Six more trixie hosts (after every other lab test: conftest.LAST_MODULES): the
    first three for inventories/upgrade_cluster.py, the last three for upgrade_group.py."""
    return lab_hosts.grow(["trixie"] * 6)


@pytest.fixture(scope="module")
def group(six_trixie):
    """The Sentinel group of inventories/upgrade_group.py, at trixie's 8.1."""
    first = pyinfra(GROUP_INVENTORY)
    assert first.returncode == 0, first.output[-5000:]
    return six_trixie[3:]


@dataclass
class Writer:
    """Writes through the rendered settings (Sentinel mode), each one waited for by a
    replica (WAIT 1); what was acknowledged, and when."""

    settings: object
    acked: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with Clients(self.settings) as clients:
            while not self.stop.is_set():
                key = new_key("usr")
                try:
                    clients.api.set(key, "1")
                    if clients.api.wait(1, 1000) >= 1:
                        self.acked.append(key)
                        self.times.append(time.monotonic())
                except (ValkeyError, OSError):
                    self.errors += 1
                    time.sleep(0.05)

    def after(self, moment: float) -> int:
        return sum(t > moment for t in self.times)

    def longest_pause(self, start: float, end: float) -> float:
        return longest_gap(self.times, start, end)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest time between `start`, the moments of `times` in between, and `end`."""
    inside = [start, *(t for t in times if start < t < end), end]
    return max(b - a for a, b in zip(inside, inside[1:], strict=False))


def group_admin(lab, host) -> valkey.Valkey:
    secrets = json.loads(Path(lab.state.lab_dir, "upgrade-group-secrets.json").read_text())
    return valkey.Valkey(
        host=host.address,
        port=GROUP_PORT,
        username="admin",
        password=secrets["admin"],
        socket_timeout=10,
        decode_responses=True,
    )


def wait_until(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


def test_a_sentinel_group_moves_to_9_1_replicas_first_and_loses_no_waited_write(
    lab_hosts, group, tmp_path
):
    lab = lab_hosts
    env_file = tmp_path / "grp.env"
    env_file.write_text(lab.check(group[1], "cat /etc/valkey-plans/grp.env"))
    env_file.chmod(0o600)
    writer = Writer(load_settings(env_file=env_file).hosted)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(writer.acked) >= 200, "waited writes before the upgrade")
        start = time.monotonic()
        upgraded = pyinfra(GROUP_INVENTORY, env=UPGRADE)
        end = time.monotonic()
        wait_until(lambda: writer.after(end) >= 200, "waited writes after the upgrade")
    finally:
        writer.stop.set()
        thread.join(timeout=60)
    assert upgraded.returncode == 0, upgraded.output[-6000:]

    admins = [group_admin(lab, h) for h in group]
    versions = [a.info("server")["valkey_version"] for a in admins]
    assert all(v.startswith("9.1.") for v in versions), versions
    roles = [a.info("replication")["role"] for a in admins]
    assert roles.count("master") == 1 and roles[0] == "slave", f"no handover: {roles}"
    primary = admins[roles.index("master")]
    assert primary.info("replication")["connected_slaves"] == 2
    lost = [
        key
        for chunk in range(0, len(writer.acked), 1000)
        for key, value in zip(
            writer.acked[chunk : chunk + 1000],
            primary.mget(writer.acked[chunk : chunk + 1000]),
            strict=True,
        )
        if value is None
    ]
    print(
        f"\nSentinel group 8.1 -> 9.1: deploy {end - start:.1f} s;"
        f" {len(writer.acked)} waited writes, {writer.errors} errors;"
        f" longest pause between waited writes {writer.longest_pause(start, end):.2f} s;"
        f" lost {len(lost)}"
    )
    assert not lost, f"{len(lost)} waited writes lost, e.g. {lost[:5]}"
    for admin in admins:
        admin.close()

    again = pyinfra(GROUP_INVENTORY, env=UPGRADE)
    assert again.returncode == 0 and again.changed == 0, again.output[-5000:]


CLUSTER_INVENTORY = "inventories/upgrade_cluster.py"
CLUSTER_PORTS = (7100, 7101)


def cluster_admin(lab, host, port: int) -> valkey.Valkey:
    secrets = json.loads(Path(lab.state.lab_dir, "upgrade-cluster-secrets.json").read_text())
    return valkey.Valkey(
        host=host.address,
        port=port,
        username="admin",
        password=secrets["admin"],
        socket_timeout=5,
        socket_connect_timeout=2,
        decode_responses=True,
    )


@dataclass
class ShardWriter(Writer):
    """Writes keys of one hash tag (one slot: one shard), each waited for by a replica
    with WAIT 1 on the connection that wrote it; after a MOVED or a lost connection it
    asks the cluster for the slot's owner again. (WAIT must run on the writing
    connection, which a cluster client does not promise.)"""

    seeds: list = field(default_factory=list)
    tag: str = ""
    #: False: SET only, never waited for (how long writes themselves pause)
    waits: bool = True
    #: when each SET was answered OK, waited for or not (the pause writers see)
    wrote: list[float] = field(default_factory=list)

    def owner(self) -> valkey.Valkey:
        for seed in self.seeds:
            try:
                slot = key_slot(self.tag.encode())
                for start, end, primary, *_ in seed.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        kwargs = seed.connection_pool.connection_kwargs
                        return valkey.Valkey(
                            host=primary[0],
                            port=primary[1],
                            username=kwargs["username"],
                            password=kwargs["password"],
                            socket_timeout=5,
                            socket_connect_timeout=2,
                            single_connection_client=True,
                        )
            except (ValkeyError, OSError):
                continue
        raise valkey.ConnectionError("no seed answered CLUSTER SLOTS")

    def run(self) -> None:
        conn, n = None, 0
        while not self.stop.is_set():
            n += 1
            key = f"{{{self.tag}}}:{n}"
            try:
                conn = conn or self.owner()
                conn.set(key, "1")
                self.wrote.append(time.monotonic())
                if self.waits and conn.wait(1, 1000) >= 1:
                    self.acked.append(key)
                    self.times.append(time.monotonic())
            except (ValkeyError, OSError):
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)


def shard_tags(admin: valkey.Valkey) -> list[str]:
    """One hash tag per primary's slot range."""
    ranges = [(start, end) for start, end, *_ in admin.execute_command("CLUSTER", "SLOTS")]
    tags: dict[tuple[int, int], str] = {}
    n = 0
    while len(tags) < len(ranges):
        n += 1
        slot = key_slot(f"t{n}".encode())
        for start, end in ranges:
            if start <= slot <= end:
                tags.setdefault((start, end), f"t{n}")
    return list(tags.values())


def test_a_cluster_moves_to_9_1_replicas_first_and_loses_no_waited_write(lab_hosts, six_trixie):
    lab, hosts = lab_hosts, six_trixie[:3]
    first = pyinfra(CLUSTER_INVENTORY)
    assert first.returncode == 0, first.output[-5000:]
    admins = [cluster_admin(lab, h, p) for h in hosts for p in CLUSTER_PORTS]
    assert all(a.info("server")["valkey_version"].startswith("8.1.") for a in admins)
    tags = shard_tags(admins[0])
    writers = [ShardWriter(None, seeds=admins, tag=tag) for tag in tags]
    plain = [ShardWriter(None, seeds=admins, tag=tag, waits=False) for tag in tags]
    threads = [threading.Thread(target=w.run, daemon=True) for w in writers + plain]
    for thread in threads:
        thread.start()
    try:
        for w in writers:
            wait_until(lambda w=w: len(w.acked) >= 100, f"waited writes of {w.tag} before")
        start = time.monotonic()
        upgraded = pyinfra(CLUSTER_INVENTORY, env=UPGRADE)
        end = time.monotonic()
        for w in writers:
            wait_until(lambda w=w: w.after(end) >= 100, f"waited writes of {w.tag} after")
    finally:
        for w in writers + plain:
            w.stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert upgraded.returncode == 0, upgraded.output[-6000:]

    versions = [a.info("server")["valkey_version"] for a in admins]
    assert all(v.startswith("9.1.") for v in versions), versions
    roles = [a.info("replication") for a in admins]
    primaries = [r for r in roles if r["role"] == "master"]
    assert len(primaries) == 3 and all(r["connected_slaves"] == 1 for r in primaries), roles
    assert "cluster_state:ok" in admins[0].execute_command("CLUSTER", "INFO")
    lost = {}
    for w in writers:
        owner = w.owner()
        values = [
            v for c in range(0, len(w.acked), 1000) for v in owner.mget(w.acked[c : c + 1000])
        ]
        lost[w.tag] = [k for k, v in zip(w.acked, values, strict=True) if v is None]
        owner.close()
    writes = {w.tag: round(longest_gap(w.wrote, start, end), 2) for w in plain}
    waited = {w.tag: round(w.longest_pause(start, end), 2) for w in writers}
    assert all(w.wrote for w in plain), "the writers that do not wait wrote nothing"
    print(
        f"\nCluster 8.1 -> 9.1: deploy {end - start:.1f} s;"
        f" {sum(len(w.acked) for w in writers)} waited writes,"
        f" {sum(w.errors for w in writers)} errors; longest pause per shard: of plain writes"
        f" {writes}, of writes a replica acknowledged {waited} (a shard's one replica"
        f" restarting acknowledges nothing); lost {sum(len(v) for v in lost.values())}"
    )
    assert not any(lost.values()), {t: v[:5] for t, v in lost.items() if v}
    for admin in admins:
        admin.close()

    again = pyinfra(CLUSTER_INVENTORY, env=UPGRADE)
    assert again.returncode == 0 and again.changed == 0, again.output[-5000:]
