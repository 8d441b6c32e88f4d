"""The backup host's side of `valkey_backup.backup_host` (README "Backups").

On a host that other plans name as their `backup_host`, running Debian 13 or later with
systemd: restic and restic-rest-server (Debian's package; its own unit stays off), the
system account that owns the repositories (nologin, its own 0700 home), the htpasswd
file (one login per Valkey host) and the TLS key and certificate, readable by root and
that account only, and `valkey-plans-rest-server.service` through the one service
runner: `--append-only --private-repos --tls`. Each Valkey host's repository password
and per-instance retention go to root-only files for the pruner, which a daily timer
`valkey-plans-prune.timer` runs (and `valkey-plans prune` on demand). Every secret goes
through `checked_file` (never printed); every operation is pyinfra's fact-gated own or
`checked_file`, so a second deploy changes nothing.
"""

from __future__ import annotations

import shlex

from pydantic import SecretStr
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt, files, server

from valkey_plans.backup import offhost
from valkey_plans.deploy.operations import checked_file, root_only_directory, systemd_units
from valkey_plans.deploy.service import Init, Service, package_service_off, service_runner
from valkey_plans.plan import Plan
from valkey_plans.plan.backup import STATE_DIR
from valkey_plans.plan.layout import DEBIAN
from valkey_plans.plan.render import MANAGED_HEADER, TEMPLATE_DIR
from valkey_plans.plan.secrets import SecretsError
from valkey_plans.plan.versions import os_of

PACKAGES = ["restic", "restic-rest-server"]


def rest_unit() -> str:
    """rest-server as the account: append-only, private repositories, TLS, hardened
    (its own data directory is the only path it may write)."""
    o = offhost
    return (
        f"# {MANAGED_HEADER}\n[Unit]\nDescription=valkey-plans backup repositories"
        " (restic rest-server, append-only)\nAfter=network-online.target\n"
        "Wants=network-online.target\n\n[Service]\nType=simple\n"
        f"User={o.ACCOUNT}\nGroup={o.ACCOUNT}\n"
        f"ExecStart={o.REST_SERVER} --path {o.REPOS} --listen :{o.REST_PORT} --append-only"
        f" --private-repos --htpasswd-file {o.HTPASSWD} --tls --tls-cert {o.TLS_CERT}"
        f" --tls-key {o.TLS_KEY}\nRestart=on-failure\nRestartSec=5\nUMask=0077\n"
        f"ProtectSystem=strict\nReadWritePaths={o.REPOS}\nProtectHome=yes\nPrivateTmp=yes\n"
        "PrivateDevices=yes\nNoNewPrivileges=yes\nCapabilityBoundingSet=\n"
        "RestrictSUIDSGID=yes\nProtectKernelTunables=yes\nProtectKernelModules=yes\n"
        "ProtectControlGroups=yes\nLockPersonality=yes\nMemoryDenyWriteExecute=yes\n"
        "SystemCallArchitectures=native\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def prune_units() -> dict[str, str]:
    """The pruner's oneshot service (root: it reads the passwords) and its daily timer."""
    service = (
        f"# {MANAGED_HEADER}\n[Unit]\nDescription=valkey-plans: prune the append-only"
        f" backup repositories\n\n[Service]\nType=oneshot\nExecStart={offhost.PRUNER}\n"
        "Nice=10\nIOSchedulingClass=idle\nUMask=0077\n"
    )
    timer = (
        f"# {MANAGED_HEADER}\n[Unit]\nDescription=valkey-plans: prune the backup repositories"
        " daily\n\n[Timer]\nOnCalendar=daily\nPersistent=true\nRandomizedDelaySec=1800\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {offhost.PRUNE_UNIT: service, offhost.PRUNE_TIMER: timer}


def prune_env(client: Plan, instance: str) -> str:
    """One pruner job: that host's snapshots of that instance, its plan's retention."""
    values = {
        "VP_HOST": client.host,
        "VP_INSTANCE": instance,
        "VP_REPO": f"{offhost.REPOS}/{client.host}/{instance}",
        "VP_KEEP": " ".join(client.backup.retention.keep_args()),
        "VP_ACCOUNT": offhost.ACCOUNT,
    }
    lines = "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
    return f"# {MANAGED_HEADER}\n{lines}"


def converge_backup_host(plans: list[Plan], plan: Plan, init: Init, distro: dict) -> None:
    """Serve the off-host repositories of every plan naming this host `backup_host`."""
    served = offhost.served(plans, plan)
    if not served:
        return
    name, major = os_of(distro)
    if init is not Init.SYSTEMD or name != "Debian" or major < 13:
        raise DeployError(
            f"host {plan.host}: it is the backup_host of {', '.join(p.host for p, _ in served)};"
            f" allowed: Debian 13 or later with systemd (restic-rest-server), this is"
            f" {name} {major}{'' if init is Init.SYSTEMD else ' without systemd'}"
        )
    try:
        secret = offhost.server_secret(plan)
    except SecretsError as exc:
        raise DeployError(f"host {plan.host}: backup host: {exc}") from None
    apt.packages(
        name="Install restic and restic-rest-server",
        packages=PACKAGES,
        cache_time=plan.apt_cache_time,
    )
    package_service_off("restic-rest-server", init, " (valkey-plans runs its own unit)")
    _account()
    watched = _server_files(plan, secret, [p.host for p, _ in served])
    (unit,) = systemd_units({offhost.REST_UNIT: rest_unit()}, "rest-server unit")
    runner = service_runner(
        Service(label="rest-server", config=offhost.HTPASSWD, pidfile="", unit=offhost.REST_UNIT),
        init,
    )
    runner.running()
    runner.restart_if([unit, *watched])
    _pruner(served, init)


def _account() -> None:
    """The account owning the repositories: a system user, nologin, own 0700 home."""
    server.user(
        name=f"Backup account {offhost.ACCOUNT} (system, nologin)",
        user=offhost.ACCOUNT,
        home=offhost.HOME,
        shell="/usr/sbin/nologin",
        system=True,
        create_home=True,
    )
    for path in (offhost.HOME, offhost.REPOS):
        files.directory(
            name=f"{offhost.ACCOUNT}'s directory {path} (0700)",
            path=path,
            user=offhost.ACCOUNT,
            group=offhost.ACCOUNT,
            mode="700",
        )
    files.directory(
        name=f"rest-server settings {offhost.CONF_DIR} (root, group {offhost.ACCOUNT})",
        path=offhost.CONF_DIR,
        user="root",
        group=offhost.ACCOUNT,
        mode="750",
    )


def _server_files(plan: Plan, secret: SecretStr, clients: list[str]) -> list:
    """htpasswd, TLS key (root and the account only) and certificate; their operations."""
    key, cert = offhost.tls_pair(secret, plan)
    contents = (
        ("rest-server logins (htpasswd)", offhost.htpasswd(secret, clients), offhost.HTPASSWD),
        ("rest-server TLS key", key.get_secret_value(), offhost.TLS_KEY),
        ("rest-server TLS certificate", cert, offhost.TLS_CERT),
    )
    return [
        checked_file(
            name=name, content=text, dest=dest, user="root", group=offhost.ACCOUNT, mode="640"
        )
        for name, text, dest in contents
    ]


def _pruner(served: list[tuple[Plan, list[str]]], init: Init) -> None:
    """The pruner, each served host's password and jobs (root only), the daily timer."""
    from valkey_plans.deploy.backup import backup_password

    files.put(
        name="Backup pruner",
        src=str(TEMPLATE_DIR / "valkey-plans-prune.sh"),
        dest=offhost.PRUNER,
        mode="755",
    )
    for path in (DEBIAN.state, STATE_DIR, offhost.PRUNE_DIR):
        root_only_directory(path)
    for client, instances in served:
        job_dir = f"{offhost.PRUNE_DIR}/{client.host}"
        root_only_directory(job_dir)
        checked_file(
            name=f"Repository password of {client.host} for the pruner (root only)",
            content=backup_password(client).get_secret_value(),
            dest=f"{job_dir}/password",
            user="root",
            group="root",
            mode="600",
        )
        for inst in instances:
            checked_file(
                name=f"Pruner job {client.host}/{inst}",
                content=prune_env(client, inst),
                dest=f"{job_dir}/{inst}.env",
                user="root",
                group="root",
                mode="600",
            )
    ops = systemd_units(prune_units(), "Pruner unit")
    runner = service_runner(
        Service(label="Pruner timer", config=offhost.PRUNER, pidfile="", unit=offhost.PRUNE_TIMER),
        init,
    )
    runner.running()
    runner.restart_if(ops)
