"""The backup drill on real hosts: a box is lost, its data comes back from another host.

The production plan (group_data/production.py through tests/lab/inventories/backup.py)
on three lab hosts, one of each release: the box (bookworm, reached as the non-root
`ops` with sudo, as the README walkthrough says), the backup host (forky, the box's
`backup_host`: the deploy makes it serve the off-host repository with rest-server,
append-only, behind TLS) and a spare (trixie). The README's commands as written: check-plan, up,
backup, verify, restore, prune. After `up`, the backup host's account and rest-server
are checked and a second deploy changes nothing. Three backdated backups of the empty
`vault` come first; then 100,000 keys of every type, a third with TTLs, go into the
box's `vault`; it is backed up to both repositories; the box is lost (its instance
stopped, its data and its local repository deleted); `restore --onto` brings the
snapshot from the off-host repository into the spare (RDB) and into the backup host's
`vault` (AOF, then restarted): every key, value and TTL (within 2 s) is compared. From
the lost box (as a compromised one would), `restic forget` in the off-host repository
is refused (append-only) and the snapshot stays; `valkey-plans prune` on the backup host
keeps exactly what the box's retention says; a truncated RDB, a newer-format RDB and a
flipped byte in the off-host repository are each refused, the spare's vault untouched.
Meanwhile the spare's own timer (every minute) takes a backup that verify sees; with
the timer stopped past two intervals, verify fails on exactly the timer and age checks.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.pyinfra_run import PROJECT_DIR, project_command
from tests.lab import host_scripts
from tests.lab.pyinfra_lab import checks, deploy
from valkey_plans.backup import offhost
from valkey_plans.backup.settings import PASSWORD_FILE, REST_DIR, RUNNER, env_path, for_instance
from valkey_plans.lab.inventory import secrets_file
from valkey_plans.plan.inventory import load_targets

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.slow]

INVENTORY = "tests/lab/inventories/backup.py"
PORT = 6421
KEYS = 100_000
USERS = ("api", "queue", "subscriber", "background", "checks", "admin", "exporter", "backup")
SECRETS = (*USERS, "backup_server")
LOCAL = "/var/backups/valkey-plans/vault"
BACKUP_CHECKS = {"test_backup_timers_active", "test_backups_reachable_and_fresh"}
#: The host's python3 over one connection, logged in as admin from the root-only file
#: named by argv[2]: SET-type writes for SEED, a digest of every `ses:*` key for DIGEST
#: (type, value, PEXPIRETIME), 1000 keys a round trip.
SEED = host_scripts.with_login(
    r"""
n = int(sys.argv[3])
for start in range(0, n, 1000):
    cmds = []
    for i in range(start, min(n, start + 1000)):
        k, kind = "ses:%012d" % i, i % 6
        if kind == 0: cmds.append(("SET", k, "v%d" % i))
        elif kind == 1: cmds.append(("HSET", k, "a", str(i), "b", "x"))
        elif kind == 2: cmds.append(("RPUSH", k, "e1", "e2", str(i)))
        elif kind == 3: cmds.append(("SADD", k, "m1", str(i)))
        elif kind == 4: cmds.append(("ZADD", k, "1.5", "a", str(i), "b"))
        else: cmds.append(("XADD", k, "*", "n", str(i)))
        if i % 3 == 0: cmds.append(("EXPIRE", k, str(3600 + i % 3000)))
    many(cmds)
print(many([("DBSIZE",)])[0])
"""
)
DIGEST = host_scripts.digest("ses:*", login=True)


_python = host_scripts.python


@dataclass
class Drill:
    lab: object
    box: object
    vault: object
    spare: object
    env: dict[str, str]
    auth_file: str
    rdb: str
    aof_dir: str

    def vp(self, *args: str, timeout: float = 1500) -> tuple[int, str]:
        """The README's command `valkey-plans ARGS` in the project dir."""
        return project_command(["valkey-plans", *args], timeout, self.env)

    def digest(self, host) -> dict:
        return json.loads(self.lab.check(host, _python(DIGEST, PORT, self.auth_file), 600))

    def cli(self, host, *args: str, wait: bool = False) -> str:
        """valkey-cli as admin on the vault instance (the password from its root-only
        file, through the environment); `wait`: until it answers (not LOADING)."""
        cli = (
            f'REDISCLI_AUTH="$(cat {self.auth_file})" valkey-cli --no-auth-warning --user admin'
            f" -p {PORT} {shlex.join(args)}"
        )
        if wait:
            cli = (
                f'for i in $(seq 600); do out=$({cli}) && [ "$out" = PONG ] && break;'
                f" sleep 0.2; done; echo $out"
            )
        return self.lab.check(host, cli)

    def snapshots(self, host, repo: str, of: str) -> list[dict]:
        """`of`'s snapshots of vault in `repo`, read as root on `host`."""
        out = self.lab.check(
            host,
            f"RESTIC_PASSWORD_FILE={PASSWORD_FILE} restic -r {repo} snapshots --no-lock"
            f" --json --host {of} --tag instance=vault",
        )
        return sorted(json.loads(out or "[]") or [], key=lambda snap: snap["time"])


def _secrets(lab_state) -> None:
    """The production plan never generates passwords: the drill's own 0600 file (a kept
    lab's file from before `backup_server` gets that one added)."""
    path = Path(secrets_file(lab_state, "backup-drill"))
    if not path.exists():
        path.touch(mode=0o600)
    kept = json.loads(path.read_text() or "{}")
    path.write_text(json.dumps({u: kept.get(u) or secrets.token_urlsafe(24) for u in SECRETS}))


def _sudo_login(lab, host) -> None:
    """`ops`, a login with sudo and the lab's key, as a fresh cloud server has."""
    lab.check(
        host,
        "command -v sudo >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo",
        600,
    )
    lab.check(
        host,
        "id ops >/dev/null 2>&1 || useradd -m -s /bin/bash ops;"
        " echo 'ops ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/ops; chmod 440 /etc/sudoers.d/ops;"
        " install -d -o ops -g ops -m 700 /home/ops/.ssh;"
        " install -o ops -g ops -m 600 /root/.ssh/authorized_keys /home/ops/.ssh/",
    )


@pytest.fixture(scope="module")
def drill(lab_hosts):
    by_name = {h.name: h for h in lab_hosts.hosts}
    targets = load_targets(INVENTORY, PROJECT_DIR)
    box, vault, spare = (by_name[t.name] for t in targets)
    _secrets(lab_hosts.state)
    _sudo_login(lab_hosts, box)
    env = {"VALKEY_PLANS_BACKUP_EVERY_MINUTE": spare.name, "COLUMNS": "250"}
    target = targets[0]
    inst = target.plan.instance("vault")
    settings = for_instance(target.plan, inst)
    yield Drill(
        lab_hosts,
        box,
        vault,
        spare,
        env,
        inst.paths.auth_file("admin"),
        settings.rdb,
        settings.aof_dir or "",
    )
    # Later lab modules verify their own plans on these hosts: nothing of ours may run.
    for host in (box, vault, spare):
        lab_hosts.run(
            host,
            "systemctl disable --now valkey-server@vault valkey-plans-backup@vault.timer"
            f" {offhost.REST_UNIT} {offhost.PRUNE_TIMER}",
        )


def _why(out: str) -> str:
    """The lines of a long run that say what went wrong, then its end."""
    said = [line for line in out.splitlines() if re.search(r"rror|FAIL|failed|denied", line)]
    return "\n".join([line for line in said if "Grand total" not in line][:60]) + out[-2000:]


def _same(before: dict, after: dict) -> tuple[list, list]:
    """(lost keys, changed keys): a TTL is the same within 2 s of its absolute expiry."""
    lost = [k for k in before if k not in after]
    changed = [
        k
        for k, (kind, value, expire) in before.items()
        if k in after and (after[k][:2] != [kind, value] or abs(after[k][2] - expire) > 2000)
    ]
    return lost, changed


FAILED = re.compile(r"^FAILED \S+::(test_\w+)", re.M)


def _served_append_only(drill) -> None:
    """The backup host as the deploy left it: rest-server up as the nologin account,
    append-only, private repositories, TLS; its secrets readable by root and it only."""
    lab, vault = drill.lab, drill.vault
    account = lab.check(vault, f"getent passwd {offhost.ACCOUNT}").strip().split(":")
    assert (account[5], account[6]) == (offhost.HOME, "/usr/sbin/nologin"), account
    modes = lab.check(
        vault,
        f"stat -c '%n %U:%G %a' {offhost.HOME} {offhost.HTPASSWD} {offhost.TLS_KEY}"
        f" {offhost.PRUNE_DIR}/{drill.box.name}/password",
    ).split("\n")
    assert modes[:4] == [
        f"{offhost.HOME} {offhost.ACCOUNT}:{offhost.ACCOUNT} 700",
        f"{offhost.HTPASSWD} root:{offhost.ACCOUNT} 640",
        f"{offhost.TLS_KEY} root:{offhost.ACCOUNT} 640",
        f"{offhost.PRUNE_DIR}/{drill.box.name}/password root:root 600",
    ], modes
    # It starts again from its files alone (as after a reboot): they stay readable to it.
    unit = offhost.REST_UNIT
    lab.check(vault, f"systemctl restart {unit}; sleep 1; systemctl is-active {unit}")
    argv = lab.check(
        vault, f"ps -o user=,args= -p $(systemctl show -p MainPID --value {unit})"
    ).split()
    assert argv[0] == offhost.ACCOUNT and {"--append-only", "--private-repos", "--tls"} <= set(
        argv
    ), argv
    # Without the pinned certificate, restic refuses the server (no trust on first use).
    plain = lab.run(
        drill.box,
        f"RESTIC_PASSWORD_FILE={PASSWORD_FILE} restic -r rest:https://{drill.vault.address}:"
        f"{offhost.REST_PORT}/{drill.box.name}/vault cat config",
    )
    assert plain.returncode != 0 and "certificate" in plain.stderr, plain.stderr


def _backdated_backups(drill) -> list[str]:
    """Three backups of the still empty vault, 3, 2 and 1 hours back (the runner's
    VP_TIME): with the box's 2 hourly + 1 daily, pruning keeps the last of them."""
    times = []
    for hours in (3, 2, 1):
        when = drill.lab.check(drill.box, f"date -d '-{hours} hours' '+%F %T'").strip()
        drill.lab.check(drill.box, f"VP_TIME='{when}' {RUNNER} {env_path('vault')}", 600)
        times.append(when)
    return times


def _append_only_then_pruned(drill, newest: dict) -> None:
    """The box cannot delete its own off-host backup; the backup host prunes it."""
    lab, box, vault = drill.lab, drill.box, drill.vault
    offsite = f"{offhost.REPOS}/{box.name}/vault"
    forget = lab.run(
        box,
        f"RESTIC_PASSWORD_FILE={PASSWORD_FILE} restic --repository-file {REST_DIR}/vault"
        f" --cacert {REST_DIR}/ca.pem forget {newest['id']}",
    )
    # rest-server --append-only answers a DELETE (but of a lock) 403 Forbidden.
    assert forget.returncode != 0 and "403" in forget.stderr, forget.stdout + forget.stderr
    kept = drill.snapshots(vault, offsite, box.name)
    assert newest["id"] in [s["id"] for s in kept] and len(kept) == 4, kept
    code, out = drill.vp("prune", INVENTORY, "--host", vault.name)
    assert code == 0 and f"{box.name}/vault]: ok" in out, _why(out)
    # 2 hourly (the newest, and the one an hour back), 1 daily (the newest again).
    pruned = drill.snapshots(vault, offsite, box.name)
    assert [s["id"] for s in pruned] == [kept[2]["id"], newest["id"]], (kept, pruned)


def _restic(drill, args: str) -> str:
    """restic on the box's off-host repository, run on the backup host as its account
    (as rest-server would write it; restic 0.18 there), the password on stdin."""
    return (
        f"cat {offhost.PRUNE_DIR}/{drill.box.name}/password | runuser -u {offhost.ACCOUNT} --"
        f" restic --no-cache -r {offhost.REPOS}/{drill.box.name}/vault {args}"
    )


def _planted(drill, rdb: str, valkey: str) -> str:
    """A snapshot of `rdb` (on the backup host) among the box's, tagged as its runner
    would."""
    out = drill.lab.check(
        drill.vault,
        _restic(
            drill,
            f"backup --json --quiet --host {drill.box.name} --tag instance=vault"
            f" --tag valkey={valkey} --tag rdb=11 --tag db0={KEYS} --stdin-filename dump.rdb"
            f" --stdin-from-command -- cat {rdb}",
        ),
    )
    return json.loads(out.strip().splitlines()[-1])["snapshot_id"]


def _refusals(drill, before: dict, real: str) -> None:
    """A truncated RDB, a newer-format (VALKEY080) RDB and a flipped byte in the
    off-host repository (in the pack holding the snapshot `real`'s data, the largest
    one before anything else is added): each restore onto the spare is refused, and the
    spare's running vault keeps every key."""
    lab, vault, spare = drill.lab, drill.vault, drill.spare
    data = f"{offhost.REPOS}/{drill.box.name}/vault/data"
    pack = lab.check(
        vault,
        f"find {data} -type f -printf '%s %p\\n' | sort -n | tail -n 1 | cut -d' ' -f2",
    ).strip()
    # The box's own RDB (Valkey 8.0's format 11), as its snapshot `real` holds it: a cut
    # one passes the format check and is refused by valkey-check-rdb.
    lab.check(vault, f"{_restic(drill, f'dump {real} /dump.rdb')} >/tmp/good.rdb")
    lab.check(
        vault,
        "head -c $(( $(stat -c %s /tmp/good.rdb) / 2 )) /tmp/good.rdb >/tmp/cut.rdb;"
        " { printf VALKEY080; tail -c +10 /tmp/good.rdb; } >/tmp/newer.rdb;"
        f" chown {offhost.ACCOUNT} /tmp/cut.rdb /tmp/newer.rdb",
    )
    cut, newer = (
        _planted(drill, "/tmp/cut.rdb", "8.0.1"),
        _planted(drill, "/tmp/newer.rdb", "9.0.0"),
    )
    aside = f"ls -d {Path(drill.rdb).parent}/aside-vault-* 2>/dev/null | wc -l"
    asides = lab.check(spare, aside)
    restore = ("restore", INVENTORY, "--host", drill.box.name, "--instance", "vault")
    # In place (owner and mode stay): python3 rewrites the one byte.
    flip = (
        "python3 -c \"import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read());"
        f" b[len(b) // 2] ^= 0xFF; open(p, 'r+b').write(b)\" {pack}"
    )
    for snapshot, expected, before_it in (
        (cut, "valkey-check-rdb", None),
        (newer, "RDB format 80 (written by Valkey 9.0.0)", None),
        (real, "refused", flip),
    ):
        if before_it:
            lab.check(vault, before_it)
        code, out = drill.vp(*restore, "--snapshot", snapshot, "--onto", spare.name)
        assert code != 0 and expected in out, _why(out)
    assert lab.check(spare, aside) == asides, "a refused restore moved the data aside"
    lost, changed = _same(before, drill.digest(spare))
    assert (len(lost), len(changed)) == (0, 0), ("after the refusals", lost[:5], changed[:5])


def _up_twice(drill) -> None:
    """check-plan and up as the README says; the backup host serves; a second deploy
    of the same plan changes nothing on the box or the backup host."""
    code, out = drill.vp("check-plan", INVENTORY)
    assert code == 0, _why(out)
    code, out = drill.vp("up", INVENTORY)
    assert code == 0, _why(out)
    assert "test_backups_reachable_and_fresh" in out
    _served_append_only(drill)
    again = deploy(drill.env, inventory=INVENTORY)
    assert again.returncode == 0, again.tail()
    for host in (drill.box, drill.vault):
        assert again.changed(host.name) == 0, (host.name, again.changed_operations(host.name))


def _seeded_and_backed_up(drill) -> tuple[dict, dict]:
    """(digest of the box's 100,000 keys, its snapshot of them in the off-host repository)."""
    lab, box = drill.lab, drill.box
    _backdated_backups(drill)
    seeded = lab.check(box, _python(SEED, PORT, drill.auth_file, KEYS), 600)
    assert int(seeded) == KEYS
    before = drill.digest(box)
    assert len(before) == KEYS and sum(e > 0 for _, _, e in before.values()) == KEYS // 3 + 1
    kinds = {"string", "hash", "list", "set", "zset", "stream"}
    assert {kind for kind, _, _ in before.values()} == kinds
    code, out = drill.vp("backup", INVENTORY, "--host", box.name)
    assert code == 0, _why(out)
    offsite = f"{offhost.REPOS}/{box.name}/vault"
    # The box pruned its local repository (2 left); the backup host's holds all 4.
    for host, repo, count in ((box, LOCAL, 2), (drill.vault, offsite, 4)):
        snaps = drill.snapshots(host, repo, box.name)
        assert len(snaps) == count and f"db0={KEYS}" in snaps[-1]["tags"], snaps
    return before, snaps[-1]


def _lost_and_restored(drill, before: dict) -> None:
    """The box is lost; its vault comes back from the backup host onto the spare (RDB)
    and the backup host's own vault (AOF, then restarted): 0 lost, 0 changed."""
    lab, box, vault = drill.lab, drill.box, drill.vault
    lab.check(
        box,
        "systemctl disable --now valkey-server@vault valkey-plans-backup@vault.timer;"
        f" rm -rf {drill.rdb} {drill.aof_dir} /var/backups/valkey-plans",
    )
    restore = ("restore", INVENTORY, "--host", box.name, "--instance", "vault", "--latest")
    for onto in (drill.spare, vault):
        code, out = drill.vp(*restore, "--onto", onto.name)
        assert code == 0 and "restored" in out, _why(out)
        lost, changed = _same(before, drill.digest(onto))
        assert (len(lost), len(changed)) == (0, 0), (onto.name, lost[:5], changed[:5])
    assert "aof_enabled:1" in drill.cli(vault, "INFO", "persistence")
    lab.check(vault, "systemctl restart valkey-server@vault")
    drill.cli(vault, "PING", wait=True)
    lost, changed = _same(before, drill.digest(vault))
    assert (len(lost), len(changed)) == (0, 0), ("after restart", lost[:5], changed[:5])


def test_the_box_is_lost_and_every_key_comes_back_from_the_backup_host(drill):
    lab, box, spare = drill.lab, drill.box, drill.spare
    _up_twice(drill)
    before, real = _seeded_and_backed_up(drill)
    # The spare's timer (every minute) backs its own vault up; verify sees it fresh.
    for _ in range(60):
        mine = drill.snapshots(spare, LOCAL, spare.name)
        if mine:
            break
        time.sleep(5)
    assert mine, lab.run(spare, "journalctl -u valkey-plans-backup@vault -n 20").stdout
    code, out = drill.vp("verify", INVENTORY, "--json")
    assert code == 0, _why(out)
    rows = json.JSONDecoder().raw_decode(out[out.index("[") :])[0]
    fresh = {(r["host"], r["check"]): r["status"] for r in rows}
    assert fresh[(box.name, "test_backups_reachable_and_fresh")] == "pass", rows
    assert fresh[(spare.name, "test_backups_reachable_and_fresh")] == "pass", rows
    # Stopped, and any run it had started finished: its snapshot is then the newest.
    lab.check(
        spare,
        "systemctl stop valkey-plans-backup@vault.timer;"
        # A oneshot service is `activating` while it runs (is-active says no then).
        ' while [ "$(systemctl show -p ActiveState --value valkey-plans-backup@vault.service)"'
        " = activating ]; do sleep 1; done",
    )
    newest = drill.snapshots(spare, LOCAL, spare.name)[-1]

    _lost_and_restored(drill, before)
    # Within the two intervals the spare's timer check waits for anyway: the box (lost,
    # or compromised) cannot delete its off-host backup; the backup host prunes; then
    # the refusals (the last: one of them corrupts the off-host repository).
    _append_only_then_pruned(drill, real)
    _refusals(drill, before, real["id"])

    # Two intervals after the spare's last backup, with its timer stopped: exactly the
    # timer check and the age check fail there.
    age = int(lab.check(spare, "date +%s")) - int(
        lab.check(spare, f"date -d {shlex.quote(newest['time'])} +%s")
    )
    time.sleep(max(0, 125 - age))
    url = f"ssh://root@{spare.address}?ssh_config={lab.state.ssh_config}"
    run = checks({**drill.env}, url, inventory=INVENTORY)
    assert run.returncode == 1, run.tail()
    assert set(FAILED.findall(run.output)) == BACKUP_CHECKS, run.tail()
