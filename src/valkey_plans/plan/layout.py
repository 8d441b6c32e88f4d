"""Where an instance's files live: Debian's layout, or Homebrew's on a macOS laptop.

The instance unit that Debian ships (`valkey-server@NAME`) fixes the Linux paths:
its RuntimeDirectory is /run/valkey-NAME and its sandbox may only write to
/var/lib/valkey and /var/log/valkey, so every instance keeps its own files there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstancePaths:
    config: str
    #: What the deploy last installed, for configs Sentinel may rewrite.
    config_record: str
    run_dir: str
    pidfile: str
    unixsocket: str
    logfile: str
    data_dir: str
    aclfile: str
    #: masteruser/masterauth, kept out of the main config (valkey, 0600).
    replication_auth: str
    #: Root-only files with the admin and checks passwords, for valkey-cli on the host.
    auth_dir: str

    def auth_file(self, user: str) -> str:
        """The root-only file holding `user`'s password for valkey-cli on the host."""
        return f"{self.auth_dir}/{user}"


@dataclass(frozen=True)
class Layout:
    etc: str
    run: str
    data: str
    log: str
    #: valkey-plans' own state on the host (root-only password files).
    state: str

    def process_files(self, stem: str, program: str, name: str) -> dict[str, str]:
        """The files every supervised process has: its config (`STEM-NAME.conf`) and the
        deploy's record of it, a run directory with `program`'s pidfile, and a log."""
        run_dir = f"{self.run}/{stem}-{name}"
        return {
            "config": f"{self.etc}/{stem}-{name}.conf",
            "record": f"{self.etc}/.{stem}-{name}.conf.deployed",
            "run_dir": run_dir,
            "pidfile": f"{run_dir}/{program}.pid",
            "logfile": f"{self.log}/{program}-{name}.log",
            "data_dir": self.data,
        }

    def paths(self, name: str) -> InstancePaths:
        """Files of instance `name` (Debian's `valkey-server@NAME` unit)."""
        files = self.process_files("valkey", "valkey-server", name)
        return InstancePaths(
            config_record=files.pop("record"),
            **files,
            unixsocket=f"{files['run_dir']}/valkey-server.sock",
            aclfile=f"{self.etc}/users-{name}.acl",
            replication_auth=f"{self.etc}/replication-{name}.conf",
            auth_dir=f"{self.state}/auth/{name}",
        )


@dataclass(frozen=True)
class SentinelPaths:
    config: str
    #: What the deploy last installed: Sentinel rewrites `config`, so drift is its own.
    record: str
    run_dir: str
    pidfile: str
    logfile: str
    data_dir: str
    #: The sentinel's password for valkey-cli on the host (root only; with ACLs).
    auth_file: str


@dataclass(frozen=True)
class ExporterPaths:
    """Files of one instance's Prometheus exporter (`valkey-plans-exporter@NAME`)."""

    #: REDIS_* settings with the exporter's password: root only (0600 in a 0700 dir);
    #: systemd, or the root shell that starts it without systemd, reads it.
    env_file: str
    #: start-stop-daemon's pidfile (no systemd).
    run_dir: str
    pidfile: str


EXPORTER_UNIT = "valkey-plans-exporter@.service"
EXPORTER_PROGRAM = "/usr/bin/prometheus-redis-exporter"


def exporter_paths(layout: Layout, name: str) -> ExporterPaths:
    """Files of the exporter of instance `name`; the unit reads `%i.env` of that dir."""
    run_dir = f"{layout.run}/valkey-plans-exporter"
    return ExporterPaths(
        env_file=f"{layout.state}/exporter/{name}.env",
        run_dir=run_dir,
        pidfile=f"{run_dir}/{name}.pid",
    )


def sentinel_paths(layout: Layout, name: str) -> SentinelPaths:
    """Files of Debian's `valkey-sentinel@NAME` unit."""
    files = layout.process_files("sentinel", "valkey-sentinel", name)
    # beside the instances' login directories; '@' is in no instance name
    return SentinelPaths(**files, auth_file=f"{layout.state}/auth/sentinel@{name}")


DEBIAN = Layout(
    etc="/etc/valkey",
    run="/run",
    data="/var/lib/valkey",
    log="/var/log/valkey",
    state="/var/lib/valkey-plans",
)


def homebrew(prefix: str) -> Layout:
    return Layout(
        etc=f"{prefix}/etc/valkey",
        run=f"{prefix}/var/run",
        data=f"{prefix}/var/db/valkey",
        log=f"{prefix}/var/log/valkey",
        state=f"{prefix}/var/valkey-plans",
    )
