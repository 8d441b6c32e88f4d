"""restic backups on the host: the package, the password, repositories, runner and timers.

Per backed-up instance (plan/backup.py `targets`): a root-only env file the runner
reads (0600 in the 0700 state directory), its restic repositories initialised once
(a second deploy finds them and changes nothing), and on systemd hosts a timer
`valkey-plans-backup@NAME.timer` (Persistent=true: a missed run happens at boot;
RandomizedDelaySec) kept running through the one service runner. Hosts without systemd
get no timer: `valkey-plans backup` runs the same runner on demand. The repository
password is the secret `backup`, written to one root-only file restic reads
(RESTIC_PASSWORD_FILE): it is never an argument, and `checked_file` never prints it.
With a `backup_host`, the off-host repository is reached through root-only location
files (the login included) and the backup host's pinned certificate; that host's side
is deploy/backup_host.py.
"""

from __future__ import annotations

import posixpath
from collections.abc import Generator

from pydantic import SecretStr
from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt, files

from valkey_plans.backup import offhost
from valkey_plans.backup.settings import (
    PASSWORD_FILE,
    REST_DIR,
    RUNNER,
    STATE_DIR,
    env_path,
    for_instance,
)
from valkey_plans.deploy.operations import checked_file, root_only_directory, systemd_units
from valkey_plans.deploy.service import (
    Init,
    Service,
    _daemon_start,
    _daemon_stop,
    _socket_wait,
    service_runner,
)
from valkey_plans.plan import Instance, Plan
from valkey_plans.plan.backup import on_calendar, targets
from valkey_plans.plan.layout import DEBIAN
from valkey_plans.plan.render import MANAGED_HEADER, TEMPLATE_DIR
from valkey_plans.plan.secrets import BACKUP_SECRET, SecretsError, load_secrets

PACKAGE = "restic"
UNIT = "valkey-plans-backup@.service"
TIMER = "valkey-plans-backup@.timer"


def backup_password(plan: Plan) -> SecretStr:
    """The repository password from the controller's secrets; generated only where the
    plan generates its secrets (dev), never silently in production."""
    try:
        found = load_secrets(plan.secrets_file, plan.secrets_generate, users=(BACKUP_SECRET,))
    except SecretsError as exc:
        raise DeployError(f"host {plan.host}: valkey_backup: {exc}") from None
    return found[BACKUP_SECRET]


def instance_control(inst: Instance, acl: bool) -> tuple[str, str]:
    """Shell text that stops and starts `inst` under whichever init the host runs: what
    restore needs, without a pyinfra run. Both are the deploy's own text."""
    paths = inst.paths
    unit = QuoteString(inst.unit)
    stop = StringCommand(
        "if [ -d /run/systemd/system ]; then systemctl stop",
        unit,
        "; else",
        _daemon_stop(paths.pidfile, "/usr/bin/valkey-server"),
        "; fi",
    )
    start = StringCommand(
        "if [ -d /run/systemd/system ]; then systemctl start",
        unit,
        "; else",
        _daemon_start(
            paths.config, paths.pidfile, paths.run_dir, "valkey", "", "/usr/bin/valkey-server"
        ),
        _socket_wait(paths.unixsocket, paths.logfile),
        "; fi",
    )
    return stop.get_raw_value(), start.get_raw_value()


def unit_file() -> str:
    """The oneshot service the timers start: the runner on the instance's env file."""
    return (
        f"# {MANAGED_HEADER}\n[Unit]\nDescription=valkey-plans restic backup of %i\n"
        f"After=valkey-server@%i.service network-online.target\n\n[Service]\nType=oneshot\n"
        f"ExecStart={RUNNER} {STATE_DIR}/%i.env\nNice=10\nIOSchedulingClass=idle\n"
        "UMask=0077\n"
    )


def timer_file(plan: Plan) -> str:
    b = plan.backup
    return (
        f"# {MANAGED_HEADER}\n[Unit]\nDescription=valkey-plans restic backup of %i ({b.interval})"
        f"\n\n[Timer]\nOnCalendar={on_calendar(b.interval)}\nPersistent=true\n"
        f"RandomizedDelaySec={b.timer_delay_s}\n\n[Install]\nWantedBy=timers.target\n"
    )


class ResticRepository(FactBase[bool]):
    """Whether a restic repository exists at `repo` (its config opens with the password).

    + repo: the repository (a path or a restic URL)
    + password_file: root-only file with its password
    """

    def command(self, repo: str, password_file: str) -> StringCommand:
        return StringCommand(
            _password_env(password_file),
            "restic",
            repo_options(repo),
            "cat config >/dev/null 2>&1 && echo yes || echo no",
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "yes"


@operation()
def restic_repository(repo: str, password_file: str) -> Generator[StringCommand, None, None]:
    """
    A restic repository at `repo`, initialised once; an existing one is left alone.

    + repo: a local path or a restic URL
    + password_file: root-only file restic reads the password from

    **Example:** ``restic_repository("/var/backups/valkey-plans/main", PASSWORD_FILE)``
    """
    if host.get_fact(ResticRepository, repo=repo, password_file=password_file):
        host.noop(f"restic repository {repo} exists")
        return
    yield StringCommand(_password_env(password_file), "restic", repo_options(repo), "init")


def repo_options(repo: str) -> StringCommand:
    """restic's options naming `repo`: `-r LOCATION`, or for `@FILE` (a backup host's
    repository, plan/backup.py REPO_OPTIONS) the file and the certificate pinned beside it."""
    if repo.startswith("@"):
        location = repo[1:]
        ca = f"{posixpath.dirname(location)}/ca.pem"
        return StringCommand(
            "--repository-file", QuoteString(location), "--cacert", QuoteString(ca)
        )
    return StringCommand("-r", QuoteString(repo))


def _password_env(password_file: str) -> StringCommand:
    """`RESTIC_PASSWORD_FILE='PATH'`: restic reads the password there, never from argv."""
    return StringCommand("RESTIC_PASSWORD_FILE=", QuoteString(password_file), _separator="")


def _restic_and_password(plan: Plan) -> None:
    """restic, the root-only state directories and the repository password."""
    password = backup_password(plan)
    apt.packages(name="Install restic", packages=[PACKAGE], cache_time=plan.apt_cache_time)
    for path in (DEBIAN.state, STATE_DIR, plan.backup.repository):
        root_only_directory(path)
    checked_file(
        name="restic repository password (root only)",
        content=password.get_secret_value(),
        dest=PASSWORD_FILE,
        user="root",
        group="root",
        mode="600",
    )


def converge_backups(plans: list[Plan], plan: Plan, init: Init) -> None:
    """Every backed-up instance with its repositories, env file and timer.

    A host with backups on but no instance of its own to back up (`instances: []`)
    still gets restic and the password: it is where `restore --onto` lands when the
    box that took the backups is gone.
    """
    if not plan.backup.enabled:
        return
    chosen = targets(plan, plans)
    _restic_and_password(plan)
    if not chosen:
        return
    files.put(
        name="Backup runner",
        src=str(TEMPLATE_DIR / "valkey-plans-backup.sh"),
        dest=RUNNER,
        mode="755",
    )
    units = _units(plan) if init is Init.SYSTEMD else []
    if plan.backup.backup_host:
        _backup_host_logins(plans, plan, [inst.name for inst in chosen])
    for inst in chosen:
        settings = for_instance(plan, inst)
        for repo in settings.repositories:
            restic_repository(
                name=f"restic repository {repo}", repo=repo, password_file=PASSWORD_FILE
            )
        checked_file(
            name=f"Backup settings of {inst.name} (root only)",
            content=settings.env_file(),
            dest=env_path(inst.name),
            user="root",
            group="root",
            mode="600",
        )
        if init is Init.SYSTEMD:
            timer = TIMER.replace("@", f"@{inst.name}")
            runner = service_runner(
                Service(
                    label=f"Backup timer of {inst.name}",
                    config=env_path(inst.name),
                    pidfile="",
                    unit=timer,
                ),
                init,
            )
            runner.running()
            runner.restart_if(units)


def _backup_host_logins(plans: list[Plan], plan: Plan, instances: list[str]) -> None:
    """Root-only: the backup host's certificate (pinned: restic trusts only it there) and
    each instance's repository location there, this host's own login included."""
    backup_plan = next(p for p in plans if p.host == plan.backup.backup_host)
    try:
        secret = offhost.server_secret(backup_plan)
    except SecretsError as exc:
        raise DeployError(f"host {backup_plan.host} (backup host of {plan.host}): {exc}") from None
    _, cert = offhost.tls_pair(secret, backup_plan)
    root_only_directory(REST_DIR)
    contents = [(f"Certificate of backup host {backup_plan.host}", cert, f"{REST_DIR}/ca.pem")]
    for inst in instances:
        location = offhost.rest_location(secret, backup_plan, plan.host, inst)
        contents.append(
            (
                f"Location of {inst}'s repository on {backup_plan.host} (root only)",
                location.get_secret_value(),
                f"{REST_DIR}/{inst}",
            )
        )
    for name, content, dest in contents:
        checked_file(name=name, content=content, dest=dest, user="root", group="root", mode="600")


def _units(plan: Plan) -> list:
    """The template service and timer units, and systemd reading them when they change."""
    return systemd_units({UNIT: unit_file(), TIMER: timer_file(plan)}, "Backup unit")
