"""Valkey 8.1 to 9.1 on trixie lab hosts, by the plan's `valkey_version` (issue 14).

inventories/upgrade.py: a standalone primary. The upgrade installs forky's 9.1 (only
Valkey's packages, pinned, held) and restarts the instance the settled way; every key,
value and TTL is still there. The same plan again changes nothing; a plan that asks for
8.1 again is refused before anything changes (9.1 writes RDB format 80).

inventories/upgrade_group.py: a Sentinel group on three more trixie hosts, upgraded while
a client writes through Sentinel and waits for a replica after each write: the replicas'
hosts first, then a handover of the primary role, then the old primary's host; no
waited write is lost.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import valkey
from valkey.exceptions import ValkeyError

from tests.deploy.pyinfra_run import pyinfra
from valkey_plans.client.clients import Clients
from valkey_plans.client.settings import load_settings
from valkey_plans.keys import new_key
from valkey_plans.lab import up as lab_up

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
def group(lab_hosts):
    """Three more trixie hosts (after every other lab test: conftest.LAST_MODULES) and the
    Sentinel group of inventories/upgrade_group.py on them, at trixie's 8.1."""
    releases = [h.release for h in lab_hosts.hosts]
    lab_hosts.state = lab_up(len(releases) + 3, [*releases, "trixie", "trixie", "trixie"])
    first = pyinfra(GROUP_INVENTORY)
    assert first.returncode == 0, first.output[-5000:]
    return lab_hosts.hosts[-3:]


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
        times = [start, *(t for t in self.times if start < t < end), end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


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
