"""Which secrets each plan needs, so that check-plan can refuse a missing one up front.

The deploy reads each group where it uses it (the ACL users' passwords, an external
hosted tier's logins, restic's repository password, a backup host's own secret); this
module lists the same groups for a plan of the inventory, with the rules the deploy
reads them by, so that `valkey-plans check-plan` fails on a password that is missing,
short or unsafe before anything is touched, as README's walkthrough says. A plan that
generates its secrets (the dev plan) may lack them: the deploy creates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from valkey_plans.plan.backup import clients_of
from valkey_plans.plan.model import Plan
from valkey_plans.plan.secrets import (
    BACKUP_SECRET,
    SERVER_SECRET,
    SecretsError,
    check_location,
    hosted_secret_names,
    load_secrets,
    users_for,
)


@dataclass(frozen=True)
class Needed:
    """One group of secrets a plan's deploy reads: what needs it, under which rules."""

    what: str
    names: tuple[str, ...]
    generated: bool
    min_length: int = 16


def acl_users(plan: Plan) -> tuple[str, ...]:
    """The ACL users whose passwords the deploy of `plan` writes."""
    return users_for(plan.replication, plan.sentinel is not None, bool(plan.exported))


def needed_secrets(plan: Plan, plans: Iterable[Plan] = ()) -> list[Needed]:
    """The groups the deploy of `plan` reads, in the order it reads them."""
    needed = []
    if plan.acl:
        needed.append(Needed("", acl_users(plan), plan.secrets_generate))
    if plan.app.hosted is not None:
        names = hosted_secret_names(plan.app.hosted.login)
        needed.append(Needed("valkey_app.hosted: ", names, False, min_length=1))
    if plan.backup.enabled:
        needed.append(Needed("valkey_backup: ", (BACKUP_SECRET,), plan.secrets_generate))
    if clients_of(plans, plan.host):
        what = "backup host of other plans (valkey_backup.backup_host): "
        needed.append(Needed(what, (SERVER_SECRET,), plan.secrets_generate))
    return needed


def check_secrets(plan: Plan, plans: Iterable[Plan] = ()) -> None:
    """Raise SecretsError, naming the host and what needs it, for the first secret the
    deploy of `plan` could not read; never creates a file nor reads a generated one."""
    plans = list(plans)
    for group in needed_secrets(plan, plans):
        try:
            if group.generated:
                if plan.secrets_file:
                    check_location(Path(plan.secrets_file).expanduser())
                continue
            load_secrets(plan.secrets_file, False, users=group.names, min_length=group.min_length)
        except SecretsError as exc:
            raise SecretsError(f"host {plan.host}: {group.what}{exc}") from None
