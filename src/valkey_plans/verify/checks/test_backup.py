"""After a rollout and every day after: each planned backup runs, is fresh, can be read.

restic runs on the host as root (its password stays in the deploy's root-only file) and
reads the repository's newest snapshot of the instance: it must open (the repository is
reachable and the password right), and be younger than two backup intervals. A plan
with no off-host repository is advised: one disk holds both the data and its backups.
"""

from __future__ import annotations

import datetime as dt
import json
import re

from valkey_plans.backup.settings import PASSWORD_FILE, REPO_OPTIONS
from valkey_plans.plan.backup import targets
from valkey_plans.verify.report import advise, not_applicable

#: This host's newest snapshot of one instance: a shared off-host repository may also
#: hold another host's backups of an instance of the same name.
#: --no-lock: a read that never waits on, nor fails against, a running prune's lock.
#: The repository is a location or `@FILE` (a backup host's: REPO_OPTIONS).
NEWEST = (
    "f=%s; r=%s; h=%s; t=%s; set --; " + REPO_OPTIONS + ' RESTIC_PASSWORD_FILE="$f" restic "$@"'
    ' snapshots --no-lock --json --latest 1 --host "$h" --tag "$t"'
)
#: Seconds since the instance's backup timer became active (empty: never, or no systemd).
TIMER_AGE = (
    "t=$(systemctl show -p ActiveEnterTimestamp --value %s 2>/dev/null);"
    ' [ -n "$t" ] && echo $(( $(date +%%s) - $(date -d "$t" +%%s) ))'
)


def backed_up(plan, plans) -> list:
    if not plan.backup.enabled:
        not_applicable("valkey_backup.enabled is false")
    chosen = targets(plan, plans)
    if not chosen:
        not_applicable("no instance of this host is backed up (valkey_backup.instances)")
    return chosen


def snapshot_time(text: str) -> dt.datetime:
    """restic's RFC 3339 time with nanoseconds, as an aware datetime."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", text).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(trimmed)


def test_backup_timers_active(host, plan, plans):
    chosen = backed_up(plan, plans)
    if not host.file("/run/systemd/system").is_directory:
        not_applicable("no systemd: run `valkey-plans backup` from cron or by hand")
    for inst in chosen:
        timer = host.service(f"valkey-plans-backup@{inst.name}.timer")
        assert timer.is_running, (
            f"{inst.name}: valkey-plans-backup@{inst.name}.timer is not active: no backup"
            f" runs (systemctl status valkey-plans-backup@{inst.name}.timer)"
        )


def test_backups_reachable_and_fresh(host, plan, plans):
    chosen = backed_up(plan, plans)
    limit = 2 * plan.backup.interval_s
    now = int(host.check_output("date +%s"))
    pending = []
    for inst in chosen:
        repos = [plan.backup.local_repository(inst.name), plan.backup.offsite_repository(inst.name)]
        for repo in filter(None, repos):
            out = host.run_expect(
                [0, 1, 10, 12], NEWEST, PASSWORD_FILE, repo, plan.host, f"instance={inst.name}"
            )
            assert out.rc == 0, (
                f"{inst.name}: repository {repo} cannot be opened (unreachable, or the password"
                f" in {PASSWORD_FILE} is not its own): {out.stderr.strip()[-300:]}"
            )
            snaps = json.loads(out.stdout or "[]") or []
            if not snaps and _timer_younger_than(host, inst.name, limit):
                pending.append(f"{inst.name}: no backup in {repo} yet (its timer is new)")
                continue
            assert snaps, f"{inst.name}: repository {repo} holds no backup of {inst.name} yet"
            age = now - int(snapshot_time(snaps[-1]["time"]).timestamp())
            assert age <= limit, (
                f"{inst.name}: the newest backup in {repo} is {age} s old, more than two"
                f" intervals ({limit} s for {plan.backup.interval!r}): see journalctl -u"
                f" valkey-plans-backup@{inst.name}.service"
            )
    if pending:
        advise("; ".join(pending) + f": the first is due within {limit} s")


def _timer_younger_than(host, instance: str, seconds: int) -> bool:
    """Whether the backup timer of `instance` became active less than `seconds` ago: a
    fresh deploy has no backup until its first run, and that is not yet a failure."""
    out = host.run(TIMER_AGE, f"valkey-plans-backup@{instance}.timer")
    age = out.stdout.strip()
    return out.rc == 0 and age.isdigit() and int(age) < seconds


def test_backups_leave_the_host(plan, plans):
    backed_up(plan, plans)
    if not plan.backup.has_offsite:
        advise(
            "neither valkey_backup.offsite nor backup_host is set: the backups live on the same"
            " disk as the data (a dead disk loses both); set backup_host (another inventory"
            " host) or offsite (a restic URL: sftp:, rest:, s3:...)"
        )
