"""`valkey-plans backup` and `valkey-plans restore`: the runner and the restore, on demand.

Both run on the Valkey host as root (over SSH with sudo for a non-root login), where
the data and the root-only password files are: the controller sends only our own
scripts and paths, never a secret.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from valkey_plans.backup.host import HostError, HostShell
from valkey_plans.backup.restore import RestoreError, restore
from valkey_plans.backup.settings import RUNNER, STATE_DIR, env_path, for_instance
from valkey_plans.cli.main import _targets
from valkey_plans.plan import Plan
from valkey_plans.plan.backup import clients_of
from valkey_plans.plan.backup import targets as backup_targets
from valkey_plans.plan.secrets import SecretsError

#: $1 runner, $2 env file: the timer's exact command.
RUN = 'exec "$1" "$2"'
#: $1 directory, $2 file name: stdin into a root-only file there (a secret: never argv).
STAGE = 'umask 077; install -d -m 700 "$1" && cat >"$1/$2.part" && mv -f "$1/$2.part" "$1/$2"'
UNSTAGE = 'rm -rf -- "$1"'


@click.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "only_host", help="Only this inventory host.")
@click.option("--instance", "only_instance", help="Only this instance.")
def backup(inventory: str, only_host: str | None, only_instance: str | None) -> None:
    """Back up now every instance the plans of INVENTORY back up (what the timers run).

    Exits non-zero when any backup failed; a failed backup never prunes anything.
    """
    found = _targets(inventory)
    plans = [t.plan for t in found]
    jobs = [
        (f"{target.name}/{inst.name}", target, (RUN, RUNNER, env_path(inst.name)))
        for target in found
        if not only_host or target.name == only_host
        for inst in backup_targets(target.plan, plans)
        if not only_instance or inst.name == only_instance
    ]
    _run_each(jobs, "nothing to back up: no instance matches (valkey_backup)")


def _run_each(jobs: list[tuple[str, Any, tuple[str, ...]]], nothing: str) -> None:
    """Run each (label, target, script + args) on its host, one line each; exits
    non-zero when any failed, and refuses when there is nothing to run."""
    if not jobs:
        raise click.ClickException(nothing)
    failed = 0
    for label, target, command in jobs:
        result = HostShell(target.testinfra_url).run(*command)
        click.echo(f"{label}: {'ok' if result.ok else 'FAILED'}: {result.err.strip()}")
        failed += not result.ok
    if failed:
        sys.exit(1)


@click.command("restore")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "source", required=True, help="Host whose backups to restore.")
@click.option("--instance", required=True, help="The instance to restore.")
@click.option("--snapshot", help="Snapshot id (or its short id).")
@click.option("--latest", is_flag=True, help="The newest snapshot of the instance.")
@click.option("--onto", help="Restore into this host's instance of that name instead.")
@click.option(
    "--from",
    "where",
    type=click.Choice(["local", "offsite"]),
    help="Repository (default: local on the same host, offsite --onto another host).",
)
def restore_command(
    inventory: str,
    source: str,
    instance: str,
    snapshot: str | None,
    latest: bool,
    onto: str | None,
    where: str | None,
) -> None:
    """Check a snapshot, move the current data aside, restore it and verify the keys."""
    from valkey_plans.deploy.backup import instance_control

    if bool(snapshot) == latest:
        raise click.UsageError("give exactly one of --snapshot ID and --latest")
    by_name = {t.name: t for t in _targets(inventory)}
    for name in (source, onto or source):
        if name not in by_name:
            raise click.ClickException(f"no host {name!r} in {inventory}")
    plan, target = by_name[source].plan, by_name[onto or source]
    where = where or ("offsite" if onto and onto != source else "local")
    repo = (
        plan.backup.offsite_repository(instance)
        if where == "offsite"
        else plan.backup.local_repository(instance)
    )
    if repo is None:
        raise click.ClickException(f"{source}: valkey_backup.offsite is not set")
    try:
        inst = target.plan.instance(instance)
    except KeyError as exc:
        raise click.ClickException(str(exc)) from None
    stop, start = instance_control(inst, target.plan.acl)
    settings = for_instance(target.plan, inst, stop, start)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    shell = HostShell(target.testinfra_url)
    staged = None
    try:
        if repo.startswith("@") and target.name != source:
            plans = [t.plan for t in by_name.values()]
            staged = f"{STATE_DIR}/restore-from/{source}"
            repo = _stage_location(shell, plans, plan, instance, staged)
        restore(shell, settings, repo, snapshot, stamp, click.echo, source)
    except (RestoreError, HostError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if staged:
            shell.run(UNSTAGE, staged)


def _stage_location(
    shell: HostShell, plans: list[Plan], source: Plan, instance: str, staged: str
) -> str:
    """`@FILE` on the target for `source`'s repository of `instance` on its backup host:
    the location (the source's own login, derived here on the controller) and the pinned
    certificate go through stdin into root-only files, removed after the restore."""
    from valkey_plans.backup import offhost

    backup_plan = next(p for p in plans if p.host == source.backup.backup_host)
    try:
        secret = offhost.server_secret(backup_plan)
    except SecretsError as exc:
        raise click.ClickException(f"backup host {backup_plan.host}: {exc}") from None
    location = offhost.rest_location(secret, backup_plan, source.host, instance)
    _, cert = offhost.tls_pair(secret, backup_plan)
    for name, text in ((instance, location.get_secret_value()), ("ca.pem", cert)):
        shell.must(f"staging {name} of {backup_plan.host}", STAGE, staged, name, stdin=text)
    return f"@{staged}/{instance}"


@click.command("prune")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "only_host", help="Only this backup host.")
def prune(inventory: str, only_host: str | None) -> None:
    """Prune now, on each backup host, the append-only repositories it serves (what its
    daily timer runs): each Valkey host's snapshots per that host's retention."""
    from valkey_plans.backup import offhost

    found = _targets(inventory)
    plans = [t.plan for t in found]
    jobs = [
        (target.name, target, ('exec "$1"', offhost.PRUNER))
        for target in found
        if (not only_host or target.name == only_host) and clients_of(plans, target.name)
    ]
    _run_each(jobs, "nothing to prune: no host is a valkey_backup.backup_host")
