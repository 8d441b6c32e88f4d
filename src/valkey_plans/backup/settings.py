"""One instance's backup settings: what the runner's env file says, and what restore reads.

The deploy writes them to a root-only env file (0600 in the 0700 state directory) that
the shell runner sources; restore builds the same object from the plan, so the two
never disagree on a path. Every value is shell-quoted: the plan's rules already keep
them to plain words, and quoting keeps a future rule change from reaching a root shell.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from valkey_plans.plan import Instance, Plan
from valkey_plans.plan.backup import REPO_OPTIONS, REST_DIR, STATE_DIR

__all__ = [
    "PASSWORD_FILE",
    "REPO_OPTIONS",
    "REST_DIR",
    "RUNNER",
    "STATE_DIR",
    "TEXTFILE_DIR",
    "BackupSettings",
    "env_path",
    "for_instance",
]
PASSWORD_FILE = f"{STATE_DIR}/restic-password"
RUNNER = "/usr/local/lib/valkey-plans/backup"
#: Seconds the runner waits for a BGSAVE (and the check load) before it gives up.
WAIT_S = 3600


@dataclass(frozen=True)
class BackupSettings:
    """Everything the runner and the restore need to know about one instance."""

    instance: str
    #: The inventory host, restic's --host of every snapshot.
    host: str
    socket: str
    config: str
    rdb: str
    data_dir: str
    staging: str
    repositories: list[str]
    keep: list[str]
    password_file: str = PASSWORD_FILE
    #: Root-only file with the admin password (None: no ACLs, no login).
    auth_file: str | None = None
    user: str = "admin"
    #: The instance's AOF directory when it runs with appendonly yes.
    aof_dir: str | None = None
    wait_s: int = WAIT_S
    #: Shell commands that stop and start the instance (from the service runner).
    stop: str = ""
    start: str = ""
    #: The account the instance runs as (None: the caller's, in tests).
    valkey_user: str | None = "valkey"
    #: Where the runner publishes the time of its last good backup for Prometheus (the
    #: node exporter's textfile collector reads *.prom there); empty: nowhere (tests).
    metrics_file: str = ""

    def env_file(self) -> str:
        """The runner's env file: KEY='value' lines, sourced by a root shell."""
        values = {
            "VP_INSTANCE": self.instance,
            "VP_HOST": self.host,
            "VP_SOCKET": self.socket,
            "VP_AUTH_FILE": self.auth_file or "",
            "VP_USER": self.user,
            "VP_RDB": self.rdb,
            "VP_STAGING": self.staging,
            "VP_WAIT_S": str(self.wait_s),
            "VP_REPOSITORIES": " ".join(self.repositories),
            "VP_KEEP": " ".join(self.keep),
            "RESTIC_PASSWORD_FILE": self.password_file,
            "VP_METRICS_FILE": self.metrics_file,
        }
        lines = [f"{key}={shlex.quote(value)}" for key, value in values.items()]
        return "# Managed by valkey-plans: backup settings (root only)\n" + "\n".join(lines) + "\n"


#: Debian's prometheus-node-exporter reads its textfile collector's files here.
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def for_instance(plan: Plan, inst: Instance, stop: str = "", start: str = "") -> BackupSettings:
    """The backup settings of `inst` on a Debian-family host, from its plan."""
    paths = inst.paths
    backup = plan.backup
    repositories = [backup.local_repository(inst.name)]
    offsite = backup.offsite_repository(inst.name)
    repositories += [offsite] if offsite else []
    return BackupSettings(
        instance=inst.name,
        host=plan.host,
        socket=paths.unixsocket,
        config=paths.config,
        rdb=f"{paths.data_dir}/dump-{inst.name}.rdb",
        data_dir=paths.data_dir,
        staging=f"{STATE_DIR}/staging-{inst.name}",
        repositories=repositories,
        keep=backup.retention.keep_args(),
        auth_file=paths.auth_file("admin") if plan.acl else None,
        aof_dir=f"{paths.data_dir}/appendonlydir-{inst.name}" if inst.appendonly else None,
        stop=stop,
        start=start,
        metrics_file=f"{TEXTFILE_DIR}/valkey-plans-backup-{inst.name}.prom",
    )


def env_path(instance: str) -> str:
    return f"{STATE_DIR}/{instance}.env"
