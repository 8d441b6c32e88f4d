"""Valkey 8.1 to 9.1 on a trixie lab host, by the plan's `valkey_version` (issue 14).

inventories/upgrade.py: a standalone primary. The upgrade installs forky's 9.1 (only
Valkey's packages, pinned, held) and restarts the instance the settled way; every key,
value and TTL is still there. The same plan again changes nothing; a plan that asks for
8.1 again is refused before anything changes (9.1 writes RDB format 80).
"""

from __future__ import annotations

import pytest

from tests.deploy.pyinfra_run import pyinfra

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
