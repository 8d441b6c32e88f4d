"""Valkey Sentinel: Debian's `valkey-sentinel@NAME` unit watching the plan's primary.

Sentinel owns its config file once it runs (it records replicas, other sentinels and
epochs there), so the deploy keeps a record of what it installed and replaces the
file only when the plan changes.
"""

from __future__ import annotations

from pyinfra.api import QuoteString, StringCommand
from pyinfra.operations import systemd, sysvinit

from valkey_plans.deploy.operations import (
    checked_file,
    daemon,
    swapped_in_stopped,
)
from valkey_plans.plan import Plan, topology
from valkey_plans.plan.layout import DEBIAN, sentinel_paths
from valkey_plans.plan.render import sentinel_config

PACKAGE = "valkey-sentinel"


def converge_sentinel(
    plans: list[Plan], plan: Plan, systemd_host: bool, passwords: dict | None
) -> None:
    """Install, configure and run this host's sentinel (the plan has one)."""
    assert plan.sentinel is not None
    name = plan.sentinel.name
    paths = sentinel_paths(DEBIAN, name)
    unit = f"valkey-sentinel@{name}.service"
    password = passwords["sentinel"] if passwords else None
    primary = topology.primary_address(plans, plan.sentinel.primary)
    # Sentinel rewrites its live config as it learns the group, and on every shutdown:
    # the deploy keeps the planned file beside it and swaps it in, sentinel stopped,
    # only when the plan changes.
    seed = checked_file(
        name=f"Sentinel {name} planned config",
        content=sentinel_config(plan, primary, password),
        dest=paths.record,
        mode="640",
    )
    if systemd_host:
        systemd.service(
            name="The package's default valkey-sentinel.service is off",
            service="valkey-sentinel.service",
            running=False,
            enabled=False,
        )
    else:
        sysvinit.service(
            name="The package's default valkey-sentinel init script is off",
            service="valkey-sentinel",
            running=False,
            enabled=False,
        )
    swapped_in_stopped(
        name=f"Sentinel {name} config swapped in (sentinel stopped meanwhile)",
        source=paths.record,
        dest=paths.config,
        stop=stop_command(systemd_host, unit, paths.pidfile),
        _if=seed.did_change,
    )
    if systemd_host:
        systemd.service(
            name=f"{unit} running and enabled", service=unit, running=True, enabled=True
        )
    else:
        daemon(
            name=f"Sentinel {name} running (start-stop-daemon)",
            config=paths.config,
            pidfile=paths.pidfile,
            run_dir=paths.run_dir,
            extra_args="--sentinel",
        )


def stop_command(systemd_host: bool, unit: str, pidfile: str) -> StringCommand:
    """Stop the sentinel (a no-op when it is not running): its unit, or its pidfile
    without systemd. Both carry the plan's sentinel name, so both are quoted."""
    if systemd_host:
        return StringCommand("systemctl stop", QuoteString(unit))
    return StringCommand(
        "start-stop-daemon --stop --quiet --oknodo --retry TERM/30/KILL/5 --pidfile",
        QuoteString(pidfile),
        "--exec /usr/bin/valkey-server",
    )
