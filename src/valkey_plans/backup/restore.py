"""Restore one instance from a restic snapshot: check everything first, then swap, verify.

Nothing on the target changes until the snapshot has passed restic's own check (the
repository's structure, then every blob of the file re-hashed as `restic dump` reads
it), `valkey-check-rdb` of the target's Valkey, the RDB format against what that Valkey
reads (Valkey 9 writes format 80, which 8.x refuses), and a throwaway load that counts
its keys per db against the snapshot's tags. Then the instance is stopped, its current
files are moved aside (never deleted: the path is printed), the RDB put in place; an AOF
instance is started once with appendonly off (at start the AOF would win over the RDB)
and switched on with CONFIG SET, which rewrites the AOF from the restored data; its
config file is never edited, so the next start reads the new AOF. Replicas resync on
their own: the restored primary has a new replication id. Success is reported only when
the running instance holds the counted keys in every db.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from valkey_plans.backup.host import HostError, HostShell
from valkey_plans.backup.settings import REPO_OPTIONS, BackupSettings

#: `$1` password file, `$2` repository (a location or `@FILE`), then restic's arguments.
RESTIC = 'f="$1"; r="$2"; shift 2; ' + REPO_OPTIONS + ' RESTIC_PASSWORD_FILE="$f" exec restic "$@"'

#: $1 staging, $2 the staged file name, then `restic dump` through RESTIC's arguments:
#: written to a temporary name, renamed only when restic (which re-hashes every blob
#: it reads) succeeded.
DUMP = (
    'd="$1"; n="$2"; shift 2; install -d -m 700 "$d"; rm -f "$d/$n.part";'
    ' f="$1"; r="$2"; shift 2; '
    + REPO_OPTIONS
    + ' RESTIC_PASSWORD_FILE="$f" restic "$@" >"$d/$n.part" && mv -f "$d/$n.part" "$d/$n"'
)

#: $1 the file: its 9-byte header, `valkey-check-rdb`'s verdict, the Valkey version.
INSPECT = (
    'head -c 9 "$1"; echo; valkey-server --version | sed -n "s/.* v=\\([^ ]*\\).*/\\1/p";'
    ' valkey-check-rdb "$1" >/dev/null 2>&1 && echo check=ok || valkey-check-rdb "$1" 2>&1'
    " | grep -m1 -i 'error\\|offset.*can' || echo check=failed"
)

#: $1 staging dir, $2 file name: load it in a throwaway valkey-server, print its keyspace.
COUNT = (
    'd="$1"; s="$d/count.sock"; rm -f "$s"; valkey-server --port 0 --unixsocket "$s"'
    ' --unixsocketperm 700 --dir "$d" --dbfilename "$2" --save "" --appendonly no'
    ' --databases 16 --daemonize no --logfile "$d/count.log" >/dev/null & pid=$!; i=0;'
    ' until [ "$(valkey-cli -s "$s" PING 2>/dev/null)" = PONG ]; do i=$((i+1));'
    ' kill -0 "$pid" 2>/dev/null || { tail -n 3 "$d/count.log" >&2; exit 1; };'
    ' [ $i -le 36000 ] || { kill "$pid"; exit 1; }; sleep 0.1; done;'
    ' valkey-cli -s "$s" INFO keyspace; valkey-cli -s "$s" SHUTDOWN NOSAVE >/dev/null 2>&1;'
    ' wait "$pid"; rm -f "$s"; true'
)

KEYSPACE = re.compile(r"^(db\d+):keys=(\d+)", re.MULTILINE)
HEADER = re.compile(r"(REDIS|VALKEY)0*(\d{1,3})")


class RestoreError(RuntimeError):
    """A restore refused or failed; the running instance is as it was unless it says so."""


def rdb_format(header: str) -> int:
    """The RDB format of a 9-byte header ("REDIS0011" -> 11, "VALKEY080" -> 80)."""
    match = HEADER.fullmatch(header.strip())
    if not match:
        raise RestoreError(f"not an RDB file (header {header.strip()[:9]!r})")
    return int(match[2])


def readable_format(valkey_version: str) -> int:
    """The newest RDB format a Valkey of this version loads: 80 from 9.0, 11 before
    (checked against real 8.0.1: format 12 and VALKEY080 are refused)."""
    major = int(valkey_version.split(".")[0])
    return 80 if major >= 9 else 11


def keyspace(info: str) -> dict[str, int]:
    """{"db0": keys, ...} of INFO keyspace output."""
    return {db: int(n) for db, n in KEYSPACE.findall(info.replace("\r", ""))}


def tagged_keys(snapshot: dict) -> dict[str, int]:
    """The keys per db the backup counted (its dbN= tags)."""
    tags = [t.partition("=") for t in snapshot.get("tags") or []]
    return {k: int(v) for k, _, v in tags if re.fullmatch(r"db\d+", k) and v.isdigit()}


def tag(snapshot: dict, name: str) -> str | None:
    for item in snapshot.get("tags") or []:
        key, _, value = item.partition("=")
        if key == name:
            return value
    return None


@dataclass(frozen=True)
class Checked:
    """A snapshot that passed every check, staged on the target as `path`."""

    snapshot: dict
    path: str
    keys: dict[str, int]
    rdb: int
    valkey: str


def find_snapshot(
    shell: HostShell,
    settings: BackupSettings,
    repo: str,
    wanted: str | None,
    source: str | None = None,
) -> dict:
    """The snapshot `wanted` (an id or its prefix) of the instance, or the newest one.

    Only `source`'s snapshots (restic's --host) when given: a repository may also hold
    backups of an instance of the same name from another host (the box restored onto,
    once it backs up), and "--host H --latest" means H's newest, not theirs.
    """
    hosts = ["--host", source] if source else []
    out = shell.must(
        f"listing the snapshots of {repo}",
        RESTIC,
        settings.password_file,
        repo,
        "snapshots",
        "--json",
        *hosts,
        "--tag",
        f"instance={settings.instance}",
    )
    snaps = sorted(json.loads(out or "[]") or [], key=lambda s: s["time"])
    if wanted:
        snaps = [s for s in snaps if s["id"].startswith(wanted) or s["short_id"] == wanted]
    if not snaps:
        which = f"snapshot {wanted}" if wanted else "any snapshot"
        whose = f" from host {source}" if source else ""
        raise RestoreError(f"{repo} holds no {which} of instance {settings.instance}{whose}")
    return snaps[-1]


def check_snapshot(
    shell: HostShell, settings: BackupSettings, repo: str, snapshot: dict
) -> Checked:
    """Every check of the module docstring, on the target, before anything changes."""
    sid = snapshot["short_id"]
    try:
        shell.must(f"restic check of {repo}", RESTIC, settings.password_file, repo, "check")
        shell.must(
            f"restic dump of snapshot {sid} (every blob re-hashed)",
            DUMP,
            settings.staging,
            "restore.rdb",
            settings.password_file,
            repo,
            "dump",
            snapshot["id"],
            "/dump.rdb",
        )
    except HostError as exc:
        raise RestoreError(f"snapshot {sid} refused: {exc}") from None
    path = f"{settings.staging}/restore.rdb"
    # The check and the counting load read the same file: side by side, on two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        inspecting = pool.submit(shell.must, "reading the file", INSPECT, path)
        counting = pool.submit(shell.run, COUNT, settings.staging, "restore.rdb")
        inspected, counted = inspecting.result(), counting.result()
    header, version, verdict = (inspected + "\n\n").split("\n")[:3]
    fmt = rdb_format(header)
    if fmt > readable_format(version):
        raise RestoreError(
            f"snapshot {sid} holds RDB format {fmt} (written by Valkey"
            f" {tag(snapshot, 'valkey') or 'unknown'}); the Valkey {version} here reads RDB"
            f" formats up to {readable_format(version)}: restore onto a Valkey that reads"
            f" format {fmt} (9.0 or newer for 80), or upgrade this one first"
        )
    if verdict != "check=ok":
        raise RestoreError(f"snapshot {sid} refused: valkey-check-rdb: {verdict}")
    if not counted.ok:
        raise RestoreError(f"snapshot {sid} refused: the check load failed: {counted.err[-300:]}")
    keys = keyspace(counted.out)
    tagged = tagged_keys(snapshot)
    # Keys whose TTL ran out since the backup are gone from the load; nothing else may be.
    if set(keys) - set(tagged) or any(keys[db] > tagged[db] for db in keys):
        raise RestoreError(f"snapshot {sid} refused: it loads {keys}, its tags say {tagged}")
    return Checked(snapshot, path, keys, fmt, version)


#: The login valkey-cli uses in the scripts below: $VP_AUTH (root-only file) or none.
_CLI = (
    'cli() { if [ -n "$VP_AUTH" ]; then REDISCLI_AUTH="$(cat "$VP_AUTH")" valkey-cli'
    ' --no-auth-warning --user "$VP_USER" -s "$VP_SOCKET" "$@"; else valkey-cli'
    ' -s "$VP_SOCKET" "$@"; fi; };'
    ' field() { cli INFO "$1" | tr -d "\\r" | sed -n "s/^$2://p"; };'
    ' ready() { i=0; until [ "$(cli PING 2>/dev/null)" = PONG ] && [ "$(field persistence'
    ' loading)" = 0 ]; do i=$((i+1)); [ $i -le 36000 ] || exit 1; sleep 0.1; done; };'
)

#: $1 stop command, $2 aside dir, $3 RDB path, $4 AOF dir ("" without AOF), $5 staged
#: file, $6 owner ("" in tests). The current files are moved, never removed.
SWAP = (
    'eval "$1" || { echo "stopping the instance failed" >&2; exit 1; };'
    ' install -d -m 700 "$2" || exit 1;'
    ' if [ -e "$3" ]; then mv "$3" "$2/" || exit 1; fi;'
    ' if [ -n "$4" ] && [ -e "$4" ]; then mv "$4" "$2/" || exit 1; fi;'
    ' cp "$5" "$3.restoring" && mv "$3.restoring" "$3" || exit 1;'
    ' if [ -n "$6" ]; then chown "$6:$6" "$3"; fi'
)

#: $1 config, $2 owner (""), then VP_* in the environment: start once with appendonly
#: off (the RDB loads), CONFIG SET appendonly yes, wait for the rewrite, shut down.
AOF_FROM_RDB = (
    _CLI + ' run=$(dirname "$VP_SOCKET");'
    ' if [ -n "$2" ]; then install -d -o "$2" -g "$2" -m 2755 "$run";'
    ' runuser -u "$2" -- valkey-server "$1" --appendonly no --daemonize yes >/dev/null;'
    ' else valkey-server "$1" --appendonly no --daemonize yes >/dev/null; fi || exit 1;'
    " ready; cli CONFIG SET appendonly yes >/dev/null || exit 1; i=0;"
    ' until [ "$(field persistence aof_rewrite_in_progress)" = 0 ]'
    ' && [ "$(field persistence aof_rewrite_scheduled)" = 0 ]'
    ' && [ "$(field persistence aof_rewrites)" != 0 ]; do i=$((i+1));'
    " [ $i -le 36000 ] || exit 1; sleep 0.1; done;"
    ' [ "$(field persistence aof_last_bgrewrite_status)" = ok ] || exit 1;'
    ' [ "$(field persistence aof_enabled)" = 1 ] || exit 1; cli SHUTDOWN >/dev/null 2>&1; true'
)

#: $1 start command, then VP_*: start the instance, wait until it loaded, its keyspace.
START = _CLI + ' eval "$1" || exit 1; ready; cli INFO keyspace'


def _with_login(script: str) -> str:
    """`script` with its first three positional arguments as the login: socket, auth
    file, ACL user (then shifted away, so the script's own $1... follow)."""
    return 'VP_SOCKET="$1"; VP_AUTH="$2"; VP_USER="$3"; shift 3; ' + script


def swap_in(shell: HostShell, settings: BackupSettings, checked: Checked, stamp: str) -> str:
    """Stop, move aside, put the checked RDB in place, rebuild the AOF, start, verify.
    Returns where the previous files now are."""
    s = settings
    aside = f"{s.data_dir}/aside-{s.instance}-{stamp}"
    owner = s.valkey_user or ""
    login = (s.socket, s.auth_file or "", s.user)
    shell.must(
        "moving the current data aside",
        SWAP,
        s.stop,
        aside,
        s.rdb,
        s.aof_dir or "",
        checked.path,
        owner,
    )
    if s.aof_dir:
        shell.must(
            "loading the RDB with appendonly off, then rewriting the AOF",
            _with_login(AOF_FROM_RDB),
            *login,
            s.config,
            owner,
        )
    have = keyspace(shell.must("starting the instance", _with_login(START), *login, s.start))
    if have != checked.keys:
        raise RestoreError(
            f"{s.instance} restarted holding {have}, the snapshot loads {checked.keys};"
            f" the previous files are in {aside}"
        )
    return aside


def restore(
    shell: HostShell,
    settings: BackupSettings,
    repo: str,
    wanted: str | None,
    stamp: str,
    say: object = print,
    source: str | None = None,
) -> Checked:
    """The whole restore of the module docstring; `say` prints each step (click.echo);
    `source`: the host whose snapshots to choose from (None: any host's)."""
    echo = say if callable(say) else print
    snapshot = find_snapshot(shell, settings, repo, wanted, source)
    echo(f"snapshot {snapshot['short_id']} of {snapshot['time'][:19]} from {repo}")
    checked = check_snapshot(shell, settings, repo, snapshot)
    echo(
        f"checked: restic check and dump, valkey-check-rdb, RDB format {checked.rdb} (Valkey"
        f" {checked.valkey} reads it), keys {checked.keys}"
    )
    aside = swap_in(shell, settings, checked, stamp)
    echo(f"the previous data of {settings.instance} is in {aside} (nothing was deleted)")
    echo(f"restored: {settings.instance} holds {checked.keys}")
    return checked
