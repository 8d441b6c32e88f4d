"""Valkey Sentinel: Debian's `valkey-sentinel@NAME` unit watching the plan's primary.

Sentinel owns its config file once it runs (it records replicas, other sentinels and
epochs there), so the deploy keeps a record of what it installed and replaces the
file only when the plan changes.
"""

from __future__ import annotations

from collections.abc import Callable

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File

from valkey_plans.deploy.operations import checked_file
from valkey_plans.deploy.restarts import sentinel_swapped
from valkey_plans.deploy.service import (
    SYSTEMD_RETRY,
    Init,
    Service,
    package_service_off,
    service_runner,
)
from valkey_plans.plan import Plan, topology
from valkey_plans.plan.layout import DEBIAN, sentinel_paths
from valkey_plans.plan.render import sentinel_config

PACKAGE = "valkey-sentinel"


def converge_sentinel(
    plans: list[Plan],
    plan: Plan,
    init: Init,
    passwords: dict | None,
    upgraded: OperationMeta | None = None,
) -> None:
    """Install, configure and run this host's sentinel (the plan has one); restart it
    when `upgraded` (the Valkey package operation) changed the host."""
    assert plan.sentinel is not None
    name = plan.sentinel.name
    paths = sentinel_paths(DEBIAN, name)
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
    auth_file = sentinel_login(plan, passwords)
    if password and auth_file:
        checked_file(
            name=f"Password of sentinel {name} for valkey-cli on the host",
            content=password.get_secret_value(),
            dest=auth_file,
            user="root",
            group="root",
            mode="600",
        )
    package_service_off(PACKAGE, init)
    # A run killed after the record was written and before the swap leaves no live
    # config: the next run swaps it in though the record is unchanged.
    live = host.get_fact(File, path=paths.config)
    swapped = sentinel_restart(
        plan,
        init,
        auth_file,
        f"Sentinel {name} config swapped in (stopped meanwhile, one host at a time)",
        source=paths.record,
        when=lambda: seed.did_change() or not live,
    )
    service_runner(sentinel_service(name), init).running()
    if upgraded is not None:
        restarted_on_upgrade(
            plan, init, passwords, lambda: upgraded.did_change() and not swapped.did_change()
        )


def sentinel_login(plan: Plan, passwords: dict | None) -> str | None:
    """The root-only file with the sentinel's password for valkey-cli (None: no ACLs)."""
    assert plan.sentinel is not None
    return sentinel_paths(DEBIAN, plan.sentinel.name).auth_file if passwords else None


def restarted_on_upgrade(
    plan: Plan, init: Init, passwords: dict | None, when: Callable[[], bool]
) -> OperationMeta:
    """This host's sentinel restarted on its live config, one host at a time, when
    `when()` says that its Valkey was upgraded (the live config keeps what it learned)."""
    assert plan.sentinel is not None
    return sentinel_restart(
        plan,
        init,
        sentinel_login(plan, passwords),
        f"Sentinel {plan.sentinel.name} restarted on its upgraded Valkey (one host at a time)",
        when=when,
    )


def sentinel_restart(
    plan: Plan,
    init: Init,
    auth_file: str | None,
    name: str,
    when: Callable[[], bool],
    source: str | None = None,
) -> OperationMeta:
    """The one rolling restart of this host's sentinel (`sentinel_swapped`), when `when()`
    says so at run time; `source`: the planned config to swap in (None: keep the live one)."""
    assert plan.sentinel is not None
    paths = sentinel_paths(DEBIAN, plan.sentinel.name)
    runner = service_runner(sentinel_service(plan.sentinel.name), init)
    return sentinel_swapped(
        name=name,
        source=source,
        dest=paths.config,
        stop=runner.stop(),
        start=runner.start(),
        address=plan.sentinel.address,
        port=plan.sentinel.port,
        group=plan.sentinel.name,
        auth_file=auth_file,
        _serial=True,
        _if=when,
        **(SYSTEMD_RETRY if init is Init.SYSTEMD else {}),
    )


def sentinel_service(name: str) -> Service:
    """What the service runner needs of the Sentinel `name`: Debian's
    `valkey-sentinel@NAME` unit, or valkey-server --sentinel on its pidfile."""
    paths = sentinel_paths(DEBIAN, name)
    return Service(
        label=f"Sentinel {name}",
        config=paths.config,
        pidfile=paths.pidfile,
        unit=f"valkey-sentinel@{name}.service",
        run_dir=paths.run_dir,
        extra_args="--sentinel",
    )
