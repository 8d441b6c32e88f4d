"""Debian's prometheus-redis-exporter, one per instance, through the one service runner.

Each exported instance gets `valkey-plans-exporter@NAME` (systemd) or a start-stop-daemon
process (no systemd), running as the package's `prometheus` user, with every setting, the
`exporter` ACL user's password among them, in a root-only env file: never in the unit,
the arguments or a world-readable file. The package's own `prometheus-redis-exporter`
service is turned off, as valkey-server's is: it would scrape 6379 without a password.
With `valkey_exporter.enabled: false` the plan's exporters are stopped, disabled and their
env files removed.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from pydantic import SecretStr
from pyinfra import host
from pyinfra.operations import files, server, systemd

from valkey_plans.deploy.facts import RunningPid
from valkey_plans.deploy.operations import checked_file, root_only_directory
from valkey_plans.deploy.service import Init, Service, package_service_off, service_runner
from valkey_plans.plan import Instance, Plan
from valkey_plans.plan.alerts import alert_rules
from valkey_plans.plan.layout import (
    DEBIAN,
    EXPORTER_PROGRAM,
    EXPORTER_UNIT,
    exporter_paths,
)
from valkey_plans.plan.render import exporter_env, exporter_unit

PACKAGE = "prometheus-redis-exporter"
USER = "prometheus"
UNIT_FILE = f"/etc/systemd/system/{EXPORTER_UNIT}"
#: The host's alert rules (plan/alerts.py) for the user's Prometheus: no secret in them,
#: so readable by anyone, unlike the exporters' root-only env files.
RULES_DIR = "/etc/valkey-plans-exporter"
RULES_FILE = f"{RULES_DIR}/valkey-alerts.rules.yml"


def unit(inst: Instance) -> str:
    """The exporter unit of `inst`: an instance of the deploy's template unit."""
    return EXPORTER_UNIT.replace("@", f"@{inst.name}")


def exporter_service(inst: Instance) -> Service:
    """What the service runner needs of the exporter of `inst`."""
    paths = exporter_paths(DEBIAN, inst.name)
    return Service(
        label=f"Exporter of {inst.name}",
        config=paths.env_file,
        pidfile=paths.pidfile,
        unit=unit(inst),
        run_dir=paths.run_dir,
        server=EXPORTER_PROGRAM,
        env_file=paths.env_file,
        user=USER,
    )


def converge_exporters(
    plan: Plan,
    init: Init,
    passwords: dict[str, SecretStr] | None,
    plans: Sequence[Plan] = (),
) -> None:
    """Every exported instance's exporter running with its current settings; the rest off.

    The package itself is installed with Valkey's (`_install_debian_family`); `plans`
    (the inventory) tell the alert rules which host backs a primary up.
    """
    exported = plan.exported
    off = [inst for inst in plan.instances if inst not in exported]
    if exported:
        package_service_off(PACKAGE, init, " (it would scrape 6379 with no password)")
        _env_dir()
        _alert_rules(plan, plans)
    template = None
    if exported and init is Init.SYSTEMD:
        template = checked_file(
            name=f"Exporter template unit {EXPORTER_UNIT}",
            content=exporter_unit(),
            dest=UNIT_FILE,
            user="root",
            group="root",
            mode="644",
        )
        systemd.daemon_reload(name="systemd reads the exporter unit", _if=template.did_change)
    for inst in exported:
        password = passwords["exporter"] if passwords else None
        env = checked_file(
            name=f"Exporter settings of {inst.name} (root only)",
            content=exporter_env(plan, inst, password),
            dest=exporter_paths(DEBIAN, inst.name).env_file,
            user="root",
            group="root",
            mode="600",
        )
        runner = service_runner(exporter_service(inst), init)
        runner.running()
        runner.restart_if([env, template])
    for inst in off:
        _exporter_off(inst, init)


def _alert_rules(plan: Plan, plans: Sequence[Plan]) -> None:
    """The plan's Prometheus alert rules beside the exporters, for the user's Prometheus
    (`rule_files: [/etc/valkey-plans-exporter/*.rules.yml]`)."""
    files.directory(
        name=f"Alert rules directory {RULES_DIR}",
        path=RULES_DIR,
        user="root",
        group="root",
        mode="755",
    )
    checked_file(
        name="Prometheus alert rules of this host (rendered from the plan)",
        content=alert_rules(plan, plans),
        dest=RULES_FILE,
        user="root",
        group="root",
        mode="644",
    )


def _env_dir() -> None:
    """The root-only directory of the exporters' env files (and its parent's state dir)."""
    env_dir = posixpath.dirname(exporter_paths(DEBIAN, "any").env_file)
    for path in (DEBIAN.state, env_dir):
        root_only_directory(path)


def _exporter_off(inst: Instance, init: Init) -> None:
    """The exporter of `inst` stopped and disabled, its password file gone (a no-op where
    none was ever installed)."""
    service = exporter_service(inst)
    if init is Init.SYSTEMD:
        systemd.service(
            name=f"Exporter of {inst.name} off (valkey_exporter)",
            service=unit(inst),
            running=False,
            enabled=False,
        )
    elif host.get_fact(RunningPid, pidfile=service.pidfile):
        server.shell(
            name=f"Exporter of {inst.name} off (valkey_exporter)",
            commands=[service_runner(service, init).stop()],
        )
    files.file(
        name=f"Exporter settings of {inst.name} removed",
        path=exporter_paths(DEBIAN, inst.name).env_file,
        present=False,
    )
