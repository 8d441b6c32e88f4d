"""Valkey Sentinel: Debian's `valkey-sentinel@NAME` unit watching the plan's primary.

Sentinel owns its config file once it runs (it records replicas, other sentinels and
epochs there), so the deploy keeps a record of what it installed and replaces the
file only when the plan changes.
"""

from __future__ import annotations

from pyinfra.operations import systemd, sysvinit

from valkey_plans import topology
from valkey_plans.deploy.operations import checked_file, daemon
from valkey_plans.layout import DEBIAN, sentinel_paths
from valkey_plans.plan import Plan
from valkey_plans.render import sentinel_config

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
    config = checked_file(
        name=f"Sentinel {name} config (replaced only when the plan changes)",
        content=sentinel_config(plan, primary, password),
        dest=paths.config,
        record=paths.record,
        mode="640",
    )
    if systemd_host:
        systemd.service(
            name="The package's default valkey-sentinel.service is off",
            service="valkey-sentinel.service",
            running=False,
            enabled=False,
        )
        started = systemd.service(
            name=f"{unit} running and enabled", service=unit, running=True, enabled=True
        )
        systemd.service(
            name=f"Restart {unit} for its new config",
            service=unit,
            restarted=True,
            _if=lambda: config.did_change() and not started.did_change(),
        )
        return
    sysvinit.service(
        name="The package's default valkey-sentinel init script is off",
        service="valkey-sentinel",
        running=False,
        enabled=False,
    )
    where = {"config": paths.config, "pidfile": paths.pidfile, "run_dir": paths.run_dir}
    started = daemon(
        name=f"Sentinel {name} running (start-stop-daemon)", extra_args="--sentinel", **where
    )
    daemon(
        name=f"Restart sentinel {name} for its new config",
        extra_args="--sentinel",
        restarted=True,
        _if=lambda: config.did_change() and not started.did_change(),
        **where,
    )
