"""`valkey_backup`: which instances restic backs up, how often, how long, and where to.

A plan's backup settings reach a root shell (the runner's env file), a systemd timer
(OnCalendar=) and restic's command line (--keep-*), so each value has one rule here and
is refused before any change. The interval is one of a few simple forms, turned into an
OnCalendar expression that fires at even times (so that "two intervals" is a real age
bound for the checks): `hourly`, `daily`, `Nmin` with N dividing 60, `Nh` with N
dividing 24. Repositories are restic's own: a local path (one repository per instance
below it) and optionally an off-host one: either any restic URL (`offsite`: sftp:,
rest:, s3:, ...) or another inventory host (`backup_host`) that the deploy sets up to
serve it (backup/offhost.py). A `backup_host` repository is named by a root-only file on
the Valkey host holding its location, login included (restic's --repository-file), so
the login is never an argument: `@FILE` in the repository lists (`REPO_OPTIONS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from valkey_plans.plan import values as rule
from valkey_plans.plan.defaults import DEFAULTS
from valkey_plans.plan.layout import DEBIAN

if TYPE_CHECKING:
    from valkey_plans.plan.model import Instance, Plan

INTERVAL = re.compile(r"hourly|daily|(?P<n>[1-9][0-9]?)(?P<unit>min|h)")
INTERVAL_RULE = (
    "hourly, daily, Nmin with N dividing 60 (5min, 15min, 30min...) or Nh with N"
    " dividing 24 (2h, 6h, 12h...)"
)
#: restic repository URL schemes of an off-host repository.
OFFSITE_SCHEMES = ("sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone")
#: One word restic reads as a repository: no blank, quote, backslash or shell character.
OFFSITE = re.compile("(" + "|".join(OFFSITE_SCHEMES) + r"):[A-Za-z0-9._~:/@=+,%\[\]-]{1,400}")
OFFSITE_RULE = (
    f"a restic repository URL ({', '.join(s + ':' for s in OFFSITE_SCHEMES)}...) of letters,"
    " digits and . _ ~ : / @ = + , % [ ] -, e.g. sftp:backup@vault.example.org:/srv/restic"
)
_BACKUP = DEFAULTS["valkey_backup"]
#: Where the deploy keeps backup state on a host: env files, the password, staging dirs.
STATE_DIR = f"{DEBIAN.state}/backup"
#: Root-only files holding the location (login included) of each instance's repository
#: on the backup host, and `ca.pem` beside them: the backup host's pinned certificate.
REST_DIR = f"{STATE_DIR}/rest"
#: Shell: restic's repository options for the word in "$r", set as the positional
#: arguments before "$@": `-r LOCATION`, or for `@FILE` (a backup host's repository)
#: `--repository-file FILE --cacert DIR/ca.pem` (the certificate pinned beside FILE).
#: The backup runner (templates/valkey-plans-backup.sh) holds this same text.
REPO_OPTIONS = (
    'case "$r" in @*) l="${r#@}"; set -- --repository-file "$l" --cacert "$(dirname "$l")/ca.pem"'
    ' "$@";; *) set -- -r "$r" "$@";; esac;'
)


def interval(value: str) -> str:
    """One of the interval forms (see the module docstring)."""
    match = INTERVAL.fullmatch(value)
    ok = match is not None
    if match and match["n"]:
        n, per = int(match["n"]), 60 if match["unit"] == "min" else 24
        ok = n < per and per % n == 0 or (match["unit"] == "h" and n == 24)
    if not ok:
        raise ValueError(f"allowed: {INTERVAL_RULE}")
    return value


def interval_seconds(value: str) -> int:
    """Seconds between two backups of `value` (an accepted interval)."""
    if value in ("hourly", "daily"):
        return 3600 if value == "hourly" else 86400
    match = INTERVAL.fullmatch(value)
    assert match is not None
    return int(match["n"]) * (60 if match["unit"] == "min" else 3600)


def on_calendar(value: str) -> str:
    """The systemd OnCalendar= expression of `value` (an accepted interval)."""
    match = INTERVAL.fullmatch(value)
    if match is None or not match["n"]:
        return value
    n = int(match["n"])
    if match["unit"] == "min":
        return f"*-*-* *:00/{n:02d}:00"
    return "daily" if n == 24 else f"*-*-* 00/{n:02d}:00:00"


def offsite(value: str) -> str:
    if not OFFSITE.fullmatch(value) or ".." in value.split("/"):
        raise ValueError(f"allowed: {OFFSITE_RULE}")
    return value


def instance_names(value: list[str]) -> list[str]:
    for item in value:
        rule.name(item)
    if len(set(value)) != len(value):
        raise ValueError("allowed: each instance once")
    return value


class Retention(BaseModel):
    """restic forget's --keep-hourly/daily/weekly/monthly: how many of each to keep."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    hourly: int = Field(ge=0, le=10_000)
    daily: int = Field(ge=0, le=10_000)
    weekly: int = Field(default=0, ge=0, le=10_000)
    monthly: int = Field(default=0, ge=0, le=10_000)

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if not any((self.hourly, self.daily, self.weekly, self.monthly)):
            raise ValueError(
                "keeps no snapshot at all; allowed: at least one of hourly, daily, weekly,"
                " monthly above 0 (restic forget would delete every backup)"
            )
        return self

    def keep_args(self) -> list[str]:
        """restic forget's arguments for this retention (never an empty policy)."""
        kept = {"hourly": self.hourly, "daily": self.daily}
        kept |= {"weekly": self.weekly, "monthly": self.monthly}
        return [word for k, n in kept.items() if n for word in (f"--keep-{k}", str(n))]


class Backup(BaseModel):
    """restic backups of this host's instances (README "Backups")."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool
    #: None: every primary without a replica elsewhere, and every replica (`targets`).
    instances: Annotated[list[str], AfterValidator(instance_names)] | None
    interval: Annotated[str, AfterValidator(interval)]
    retention: Retention
    #: Local repositories live below this directory, one per instance.
    repository: Annotated[str, AfterValidator(rule.path)]
    #: An off-host restic repository URL; each instance gets its own path below it.
    offsite: Annotated[str, AfterValidator(offsite)] | None
    #: Another inventory host that keeps the off-host repositories (exclusive with
    #: `offsite`): the deploy makes it serve them (README "Backups").
    backup_host: Annotated[str, AfterValidator(rule.host_name)] | None
    #: Random delay of the timer (RandomizedDelaySec=); a quarter interval at most.
    random_delay_s: int = Field(ge=0, le=86_400)

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        # A plan that sets one key keeps the documented defaults of the others.
        if not isinstance(data, Mapping):
            return data
        return {**_BACKUP, **data}

    @model_validator(mode="after")
    def _one_offsite(self) -> Backup:
        if self.offsite and self.backup_host:
            raise ValueError(
                f"offsite ({self.offsite}) and backup_host ({self.backup_host}) both name the"
                " off-host repository; allowed: one of them (backup_host: another inventory"
                " host the deploy sets up; offsite: a restic URL you run yourself)"
            )
        return self

    @property
    def interval_s(self) -> int:
        return interval_seconds(self.interval)

    @property
    def timer_delay_s(self) -> int:
        """RandomizedDelaySec=: the plan's delay, capped at a quarter interval so that a
        late run never makes the newest backup look two intervals old."""
        return min(self.random_delay_s, self.interval_s // 4)

    def local_repository(self, inst: str) -> str:
        return f"{self.repository}/{inst}"

    def offsite_repository(self, inst: str) -> str | None:
        """The off-host repository of `inst`: a restic URL, `@FILE` (backup_host), or None."""
        if self.backup_host:
            return f"@{REST_DIR}/{inst}"
        return f"{self.offsite.rstrip('/')}/{inst}" if self.offsite else None

    @property
    def has_offsite(self) -> bool:
        return bool(self.offsite or self.backup_host)


def backup_host_problems(plans: Iterable[Plan]) -> list[str]:
    """The inventory-wide rules of `backup_host`: another host of the same inventory."""
    plans = list(plans)
    names = [p.host for p in plans]
    by_name = {p.host: p for p in plans}
    problems = []
    for plan in plans:
        named = plan.backup.backup_host if plan.backup.enabled else None
        if named is None:
            continue
        if named == plan.host:
            problems.append(
                f"host {plan.host}: valkey_backup.backup_host = {named!r} is this host itself;"
                " allowed: another inventory host (off-host means another disk)"
            )
        elif named not in names:
            problems.append(
                f"host {plan.host}: valkey_backup.backup_host = {named!r}: no such host in the"
                f" inventory; allowed: one of {', '.join(n for n in names if n != plan.host)}"
            )
        else:
            try:
                rule.reach_address(by_name[named].address)
            except ValueError as exc:
                problems.append(
                    f"host {named}: ssh_hostname {by_name[named].address!r} (where the Valkey"
                    f" hosts reach this backup host): {exc}"
                )
    return problems


def clients_of(plans: Iterable[Plan], backup_host: str) -> list[Plan]:
    """The plans whose off-host repositories `backup_host` keeps, in inventory order."""
    return [p for p in plans if p.backup.enabled and p.backup.backup_host == backup_host]


def targets(plan: Plan, plans: Iterable[Plan] = ()) -> list[Instance]:
    """The instances of `plan` that are backed up.

    With `instances` given, exactly those. Otherwise every primary, unless a replica
    elsewhere in the inventory follows it (its first replica, in inventory order, backs it
    up then: the primary's fork and disk stay with the applications, and two replicas do
    not store the same data twice).
    """
    if not plan.backup.enabled:
        return []
    if plan.backup.instances is not None:
        return [plan.instance(name) for name in plan.backup.instances]
    replicas: dict[str, tuple[str, str]] = {}
    for other in plans:
        for i in other.instances:
            if i.replicaof:
                replicas.setdefault(i.replicaof, (other.host, i.name))
    return [
        i
        for i in plan.instances
        if (i.role == "primary" and f"{plan.host}/{i.name}" not in replicas)
        or (i.role == "replica" and replicas.get(i.replicaof or "") == (plan.host, i.name))
    ]
