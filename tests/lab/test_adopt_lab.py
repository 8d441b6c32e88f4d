"""Adopting a real redis-server on real hosts: Redis 7.0 on bookworm (by replication),
Redis 8.0 on trixie and on forky (by the logical copy, into Valkey 8.1 and 9.1), while a
client on the host keeps writing.

Debian's redis-server runs under its own systemd unit, moved to port 6396; the plan adds
an instance `adopted` (primary) on 6396 with `adopt`. After the deploy: every key, value
and TTL (within 2 s) and every acknowledged write is in Valkey, redis-server.service is
inactive and disabled, /var/lib/redis and /etc/redis/redis.conf are kept, and a rerun
changes nothing.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy.pyinfra_run import project_command
from tests.lab import host_scripts
from tests.lab.pyinfra_lab import Run, deploy, plan_env
from tests.lab.test_deploy_lab import INSTANCES

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

#: Not 6390: the replication inventory (the Sentinel lab, run later) plans its primary there.
PORT = 6396
KEYS = 100_000
ADOPTED = {"name": "adopted", "role": "primary", "port": PORT, "maxmemory": "512mb"}
ADOPTED["adopt"] = {"from": "redis", "spare_port": 16396}
#: A JSON digest of every `k:*` key: type, value and PEXPIRETIME (the host's python3,
#: pipelined over one connection: Redis and Valkey alike).
DIGEST = host_scripts.digest("k:*")
SEED = r"""
import sys
n = int(sys.argv[1])
w = sys.stdout.write
def cmd(*a):
    w("*%d\r\n" % len(a) + "".join("$%d\r\n%s\r\n" % (len(x.encode()), x) for x in a))
for i in range(n):
    k, kind = "k:%d" % i, i % 6
    if kind == 0: cmd("SET", k, "v%d" % i)
    elif kind == 1: cmd("HSET", k, "a", str(i), "b", "x")
    elif kind == 2: cmd("RPUSH", k, "e1", "e2", str(i))
    elif kind == 3: cmd("SADD", k, "m1", str(i))
    elif kind == 4: cmd("ZADD", k, "1.5", "a", str(i), "b")
    else: cmd("XADD", k, "*", "n", str(i))
    if i % 3 == 0: cmd("EXPIRE", k, str(600 + i % 3000))
"""
#: Writes w:N = N to the port, retrying through the switch; prints the acknowledged count.
WRITER = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
n, end, s = 0, time.monotonic() + seconds, None
while time.monotonic() < end:
    try:
        if s is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=10); f = s.makefile("rb")
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\nw:%d\r\n$%d\r\n%d\r\n" % (len(b"w:%d" % n), n, len(b"%d" % n), n))
        if f.readline() == b"+OK\r\n":
            n += 1
        else:
            s = None
    except OSError:
        s = None; time.sleep(0.01)
print(n)
"""


_python = host_scripts.python


def _redis_on_port(lab, host) -> None:
    lab.check(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server", 900)
    lab.check(host, f"sed -i 's/^port .*/port {PORT}/' /etc/redis/redis.conf")
    lab.check(host, "systemctl restart redis-server && sleep 1")
    lab.check(host, f"redis-cli -p {PORT} FLUSHALL")
    lab.check(host, _python(SEED, KEYS) + f" | redis-cli -p {PORT} --pipe", 600)


@pytest.mark.parametrize(
    ("release", "method"), [("bookworm", "replication"), ("trixie", "copy"), ("forky", "copy")]
)
def test_a_running_redis_is_adopted_with_every_key_and_every_write(lab_hosts, release, method):
    host = lab_hosts.host(release)
    _redis_on_port(lab_hosts, host)
    version = lab_hosts.check(host, f"redis-cli -p {PORT} INFO server | grep redis_version")
    assert version.split(":")[1].startswith("7." if release == "bookworm" else "8.")
    before = json.loads(lab_hosts.check(host, _python(DIGEST, PORT), 900))
    env = plan_env(per_host={host.name: {"valkey_instances": [*INSTANCES, ADOPTED]}})
    lab_hosts.check(host, f"nohup {_python(WRITER, PORT, 60)} > /root/writer.out 2>&1 &")
    run = deploy(env)
    assert run.returncode == 0, run.tail()
    acked = int(lab_hosts.check(host, "sleep 65; cat /root/writer.out").strip())
    record = json.loads(lab_hosts.check(host, "cat /var/lib/valkey-plans/adopt/adopted.done.json"))
    assert record["method"] == method and record["pause_s"] < 1.0
    assert "valkey_version" in lab_hosts.check(host, f"valkey-cli -p {PORT} INFO server")
    after = json.loads(lab_hosts.check(host, _python(DIGEST, PORT), 900))
    for key, (kind, value, expire) in before.items():
        got = after[key]
        assert got[:2] == [kind, value] and abs(got[2] - expire) <= 2000, key
    missing = lab_hosts.check(
        host,
        f"for i in $(seq 0 {acked - 1}); do echo GET w:$i; done | valkey-cli -p {PORT}"
        " | grep -c '^$' || true",
    )
    assert missing.strip() == "0"
    state = lab_hosts.run(
        host, "systemctl is-active redis-server; systemctl is-enabled redis-server"
    )
    assert state.stdout.split() == ["inactive", "disabled"]
    lab_hosts.check(host, "test -d /var/lib/redis && test -f /etc/redis/redis.conf")
    again = deploy(env)
    try:
        assert again.returncode == 0 and again.changed(host.name) == 0, again.changed_operations(
            host.name
        )
    finally:
        # The lab's later modules deploy other inventories to this host, whose verify
        # must find no listener they did not plan.
        lab_hosts.run(
            host, "systemctl disable --now valkey-server@adopted valkey-plans-exporter@adopted"
        )


#: Fewer keys than the main proof: enough that each phase lasts to be hit.
KILL_KEYS = 30_000
LOG = "/var/lib/valkey-plans/adopt/adopted.log"
#: On the host: wait for the adoption's log line naming `phase`, SIGKILL the pid it
#: names (the adoption process the deploy runs), then print the log from that line on.
KILLER = r"""
import os, signal, sys, time
log, phase = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    try:
        lines = open(log).read().splitlines()
    except FileNotFoundError:
        lines = []
    hit = [i for i, line in enumerate(lines) if phase in line]
    if hit:
        os.kill(int(lines[hit[0]].split()[0]), signal.SIGKILL)
        time.sleep(1)
        print("\n".join(open(log).read().splitlines()[hit[0]:]))
        sys.exit(0)
    time.sleep(0.002)
sys.exit(1)
"""
#: (release, the log line to kill at, a line that would show the kill came too late)
PHASES = [
    ("bookworm", "waiting for the sync", "in sync"),
    ("bookworm", "in sync", "steady"),
    ("trixie", "of about", "changed meanwhile"),
    ("forky", "of about", "changed meanwhile"),
]


def _fresh_redis(lab, host) -> None:
    """Redis serving KILL_KEYS on PORT again, as before an adoption (an earlier test of
    this module adopted it): no record, no state, Redis enabled and started."""
    lab.check(
        host,
        "systemctl disable --now valkey-server@adopted valkey-plans-exporter@adopted;"
        " rm -f /var/lib/valkey-plans/adopt/adopted.* /root/killer.out",
    )
    lab.check(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server", 900)
    lab.check(host, f"sed -i 's/^port .*/port {PORT}/' /etc/redis/redis.conf")
    lab.check(host, "systemctl enable --now redis-server && sleep 1")
    lab.check(host, f"redis-cli -p {PORT} FLUSHALL")
    lab.check(host, _python(SEED, KILL_KEYS) + f" | redis-cli -p {PORT} --pipe", 600)
    # The user's own settings, which the adoption changes (the copy) and must put back.
    lab.check(host, f"redis-cli -p {PORT} CONFIG SET save '900 1' notify-keyspace-events Ex")


def _deploy_one(env: dict[str, str], host) -> Run:
    args = ["pyinfra", "-y", "--limit", host.name, "inventories/lab.py", "deploy.py"]
    return Run(*project_command(args, 900, env))


@pytest.mark.parametrize(("release", "phase", "too_late"), PHASES)
def test_an_adoption_killed_in_each_phase_leaves_redis_serving_and_the_next_run_completes(
    lab_hosts, release, phase, too_late
):
    host = lab_hosts.host(release)
    _fresh_redis(lab_hosts, host)
    before = json.loads(lab_hosts.check(host, _python(DIGEST, PORT), 600))
    env = plan_env(per_host={host.name: {"valkey_instances": [*INSTANCES, ADOPTED]}})
    lab_hosts.check(host, f"nohup {_python(KILLER, LOG, phase)} > /root/killer.out 2>&1 &")
    try:
        killed = _deploy_one(env, host)
        assert killed.returncode != 0, "the adoption was not killed: " + killed.tail()
        seen = lab_hosts.check(host, "sleep 1; cat /root/killer.out").splitlines()
        assert seen and phase in seen[0] and not any(too_late in line for line in seen), seen
        # Redis serves every key, and takes writes.
        lab_hosts.check(host, f"redis-cli -p {PORT} SET after-kill 1 | grep -q OK")
        assert json.loads(lab_hosts.check(host, _python(DIGEST, PORT), 600)) == before
        assert "redis_version" in lab_hosts.check(host, f"redis-cli -p {PORT} INFO server")
        again = _deploy_one(env, host)
        assert again.returncode == 0, again.tail()
        # The next run put back Redis's own settings first (the copy had changed
        # notify-keyspace-events), from the state file the killed run left.
        log = lab_hosts.check(host, f"cat {LOG}")
        assert re.search(r"put back: save '900 1', notify-keyspace-events '(xE|Ex)'", log), log
        record = json.loads(
            lab_hosts.check(host, "cat /var/lib/valkey-plans/adopt/adopted.done.json")
        )
        assert record["method"] == ("replication" if release == "bookworm" else "copy")
        after = json.loads(lab_hosts.check(host, _python(DIGEST, PORT), 600))
        assert set(after) == set(before)
        for key, (kind, value, expire) in before.items():
            assert after[key][:2] == [kind, value] and abs(after[key][2] - expire) <= 2000, key
        assert lab_hosts.check(host, f"valkey-cli -p {PORT} GET after-kill").strip() == "1"
        state = lab_hosts.run(
            host, "systemctl is-active redis-server; systemctl is-enabled redis-server"
        )
        assert state.stdout.split() == ["inactive", "disabled"]
    finally:
        lab_hosts.run(
            host, "systemctl disable --now valkey-server@adopted valkey-plans-exporter@adopted"
        )
