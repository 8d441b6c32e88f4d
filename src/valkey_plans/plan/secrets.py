"""Passwords of the ACL users: from the environment or a secrets file outside the repo.

Sources, strongest first: `VALKEY_PLANS_SECRET_<USER>` environment variables on the
machine running pyinfra, then the JSON secrets file the inventory names
(`valkey_secrets_file`). With `valkey_secrets_generate` (the dev plan), a missing file
is created once with random passwords, mode 0600, in a 0700 directory. Passwords are
`SecretStr` everywhere, so no repr, log line or exception shows one.
"""

from __future__ import annotations

import json
import os
import re
import secrets as random
import stat
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

#: The ACL users: one per workload, plus read-only `checks` and `admin` for the deploy.
ACL_USERS = ("api", "queue", "subscriber", "background", "checks", "admin")
#: Users only scale-out needs: replicas log in to their primary, Sentinel to everyone.
SCALE_OUT_USERS = ("replica", "sentinel")
#: The Prometheus exporters' login, where the plan runs exporters.
EXPORTER_USER = "exporter"
#: Passwords of an external hosted tier (`valkey_app.hosted`): `hosted` is the one shared
#: login (the AUTH token, or the password of `hosted.user`); `hosted_<workload>` are the
#: passwords of `login: per-workload`. The service chose them, so no length rule applies.
HOSTED_SHARED = "hosted"
HOSTED_WORKLOADS = ("api", "blocking", "subscriber", "background")
HOSTED_SECRETS = (HOSTED_SHARED, *(f"hosted_{w}" for w in HOSTED_WORKLOADS))
#: The users whose ACL lines this project writes (their passwords are ours to set).
PLAN_USERS = ACL_USERS + SCALE_OUT_USERS + (EXPORTER_USER,)
ALL_USERS = PLAN_USERS + HOSTED_SECRETS
#: The secret (VALKEY_PLANS_SECRET_BACKUP or "backup" in the secrets file) that
#: encrypts every restic repository of the plan (plan/backup.py).
BACKUP_SECRET = "backup"
#: A backup host's own secret, from which the controller derives its TLS key and each
#: Valkey host's login (backup/offhost.py); only the backup host's plan reads it.
SERVER_SECRET = "backup_server"
#: Secrets that are no ACL user's password.
OTHER_SECRETS = (BACKUP_SECRET, SERVER_SECRET)


def users_for(replication: bool, sentinel: bool, exporter: bool = False) -> tuple[str, ...]:
    """The users whose passwords a plan needs."""
    return (
        ACL_USERS
        + (("replica",) if replication or sentinel else ())
        + (("sentinel",) if sentinel else ())
        + ((EXPORTER_USER,) if exporter else ())
    )


#: Which ACL user each client workload logs in as.
WORKLOAD_USERS = {
    "api": "api",
    "blocking": "queue",
    "subscriber": "subscriber",
    "background": "background",
}

ENV_PREFIX = "VALKEY_PLANS_SECRET_"
#: Passwords reach config lines (masterauth, requirepass) and env files: one word each.
PASSWORD = re.compile(r"[!#-&(-\[\]-~]+")


class SecretsError(ValueError):
    """A secrets source that cannot be used; never carries a password."""


def check_location(path: Path) -> None:
    """Refuse a secrets file where plaintext passwords could leak or be swapped.

    Inside a git work tree (the checkout above all) one `git add -A` publishes every
    password; in a directory others can write, another user can replace the file with
    passwords of their own choosing before the deploy reads it.
    """
    if not path.is_absolute():
        raise SecretsError(
            f"secrets file {path} is a relative path; allowed: an absolute path outside any"
            " git work tree, e.g. ~/.config/valkey-plans/NAME-secrets.json"
        )
    existing = [p for p in path.parents if p.exists()]
    for parent in existing:
        if (parent / ".git").exists():
            raise SecretsError(
                f"secrets file {path} is inside the git work tree {parent}; allowed: a path"
                " outside any repository, e.g. ~/.config/valkey-plans/NAME-secrets.json"
            )
    nearest = existing[0]
    mode = nearest.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SecretsError(
            f"secrets file {path}: directory {nearest} is writable by others (mode"
            f" {stat.S_IMODE(mode):04o}); allowed: a directory only its owner can write"
        )


def _read_file(path: Path) -> dict[str, str]:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"secrets file {path} has mode {stat.S_IMODE(mode):04o}; allowed: 0600 (owner only):"
            f" run `chmod 600 {path}`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SecretsError(f"secrets file {path} is not valid JSON (line {exc.lineno})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise SecretsError(f"secrets file {path}: allowed: a JSON object of user -> password")
    unknown = set(data) - set(ALL_USERS + OTHER_SECRETS)
    if unknown:
        raise SecretsError(
            f"secrets file {path}: unknown users {sorted(unknown)}; allowed:"
            f" {', '.join(ALL_USERS + OTHER_SECRETS)}"
        )
    return data


def _generate(path: Path, users: tuple[str, ...]) -> None:
    """Create the file, or add missing users to it, with fresh random passwords.

    Owned like the directory it is created in: under sudo the dev plan creates it in
    the developer's home, and it must stay theirs. Existing passwords are kept.
    """
    existing = next(p for p in [path, *path.parents] if p.exists())
    owner = existing.stat()
    created = [p for p in reversed(path.parents) if not p.exists()]
    kept = _read_file(path) if path.exists() else {}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fresh = {user: kept.get(user) or random.token_urlsafe(32) for user in users}
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({**kept, **fresh}, out, indent=2)
    if os.geteuid() == 0 and owner.st_uid != 0:
        for p in [*created, temporary]:
            os.chown(p, owner.st_uid, owner.st_gid)
    temporary.replace(path)


def load_secrets(
    file: str | None,
    generate: bool = False,
    env: Mapping[str, str] | None = None,
    users: tuple[str, ...] = ACL_USERS,
    min_length: int = 16,
) -> dict[str, SecretStr]:
    """The passwords of `users`; raises SecretsError naming what is missing and where.

    `min_length` is ours to demand of the passwords this plan sets; a hosted service's
    (HOSTED_SECRETS) are what the service gave, so their caller passes 1.
    """
    env = os.environ if env is None else env
    found: dict[str, str] = {}
    if file:
        path = Path(file).expanduser()
        check_location(path)
        if generate and (not path.exists() or set(users) - set(_read_file(path))):
            _generate(path, users)
        if path.exists():
            found.update(_read_file(path))
        elif not any(f"{ENV_PREFIX}{u.upper()}" in env for u in users):
            raise SecretsError(
                f"secrets file {path} does not exist; create it (JSON user -> password, mode 0600)"
                f" or set valkey_secrets_generate: true"
            )
    for user in users:
        value = env.get(f"{ENV_PREFIX}{user.upper()}")
        if value:
            found[user] = value
    missing = [u for u in users if not found.get(u)]
    if missing:
        raise SecretsError(
            "no password for "
            + ("ACL users " if set(users) <= set(PLAN_USERS) else "")
            + ", ".join(missing)
            + f"; set {ENV_PREFIX}<USER>"
            + (f" or add them to {file}" if file else " or name a valkey_secrets_file")
        )
    short = [u for u in users if len(found[u]) < min_length]
    if short:
        raise SecretsError(
            f"passwords of {', '.join(short)} are shorter than {min_length} characters;"
            f" allowed: {min_length} or more"
        )
    unsafe = [u for u in users if not PASSWORD.fullmatch(found[u])]
    if unsafe:
        raise SecretsError(
            f"passwords of {', '.join(unsafe)} hold blanks, quotes, backslashes or characters"
            " outside printable ASCII; allowed: printable ASCII without those (they reach"
            " config lines and env files)"
        )
    return {user: SecretStr(found[user]) for user in users}


def hosted_secret_names(login: str) -> tuple[str, ...]:
    """The secrets an external hosted tier with this `login` needs (README "Application
    settings": `hosted` for a token or one user, `hosted_<workload>` per workload)."""
    return HOSTED_SECRETS[1:] if login == "per-workload" else (HOSTED_SHARED,)
