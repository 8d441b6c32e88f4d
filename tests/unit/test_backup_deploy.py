"""The backup deploy on paper: the password only in its 0600 file, units, idempotence."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import DeployError

from tests.unit.pyinfra_commands import installed_hashes, linux_facts, planned_operations, uploaded
from valkey_plans.backup.settings import PASSWORD_FILE, for_instance
from valkey_plans.deploy import valkey_plan
from valkey_plans.deploy.backup import instance_control, timer_file, unit_file
from valkey_plans.plan import Plan
from valkey_plans.plan.secrets import ALL_USERS, ENV_PREFIX

HOST = "db-1"
SECRET = "restic-repository-password-0123456789"
DATA = {
    "valkey_acl": True,
    "valkey_instances": [
        {"name": "cache", "role": "cache", "port": 6379},
        {"name": "main", "role": "primary", "port": 6380},
    ],
    "valkey_backup": {"enabled": True, "offsite": "sftp:vault@backup-1:/srv/restic"},
}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for user in (*ALL_USERS, "backup"):
        monkeypatch.setenv(f"{ENV_PREFIX}{user.upper()}", f"{user}-password-0123456789")
    monkeypatch.setenv(f"{ENV_PREFIX}BACKUP", SECRET)


def _deploy(facts, **data):
    return planned_operations(valkey_plan, facts, {**DATA, **data}, HOST)


def _commands(planned) -> list[str]:
    return [c.get_raw_value() for _, cs in planned for c in cs if hasattr(c, "get_raw_value")]


def test_the_password_is_only_in_its_root_only_file(secrets_env):
    planned = _deploy(linux_facts(ResticRepository=lambda **kw: False))
    uploads = uploaded(planned)
    holders = [dest for dest, text in uploads.items() if SECRET in text]
    assert holders == ["/var/lib/valkey-plans/backup/.restic-password.candidate"]
    commands = _commands(planned)
    assert not [c for c in commands if SECRET in c]
    assert any("chmod 600" in c and ".restic-password.candidate" in c for c in commands)
    names = [name for name, _ in planned]
    assert not [n for n in names if SECRET in n]


def test_repositories_are_initialised_only_when_missing(secrets_env):
    fresh = _commands(_deploy(linux_facts(ResticRepository=lambda **kw: False)))
    inits = [c for c in fresh if c.endswith(" init") and "restic -r" in c]
    assert inits == [
        f"RESTIC_PASSWORD_FILE={PASSWORD_FILE} restic -r /var/backups/valkey-plans/main init",
        f"RESTIC_PASSWORD_FILE={PASSWORD_FILE} restic -r sftp:vault@backup-1:/srv/restic/main init",
    ]
    again = _commands(_deploy(linux_facts(ResticRepository=lambda **kw: True)))
    assert not [c for c in again if c.endswith(" init")]


def test_a_second_deploy_changes_nothing_of_the_backups(secrets_env):
    first = _deploy(linux_facts(ResticRepository=lambda **kw: False))
    hashes = installed_hashes(first)
    assert "/var/lib/valkey-plans/backup/main.env" in hashes
    facts = linux_facts(
        ResticRepository=lambda **kw: True,
        Sha256File=lambda path: hashes.get(path),
        File=lambda path: (
            {"user": "root", "group": "root", "mode": 600} if path in hashes else None
        ),
    )
    second = _deploy(facts)
    backup_uploads = [d for d in uploaded(second) if "backup" in d or "restic" in d]
    assert backup_uploads == []
    assert not [c for c in _commands(second) if "restic -r" in c]


def test_only_the_primary_gets_a_timer_started_through_the_service_runner(secrets_env):
    commands = _commands(_deploy(linux_facts(ResticRepository=lambda **kw: True)))
    starts = [c for c in commands if "systemctl start valkey-plans-backup@" in c]
    assert starts == ["systemctl start valkey-plans-backup@main.timer"]
    assert any("systemctl enable valkey-plans-backup@main.timer" in c for c in commands)


def test_without_systemd_no_timer_only_the_runner(secrets_env):
    planned = _deploy(linux_facts(HasSystemd=False, ResticRepository=lambda **kw: True))
    assert not [c for c in _commands(planned) if "valkey-plans-backup@" in c]
    assert "/var/lib/valkey-plans/backup/.main.env.candidate" in uploaded(planned)


def test_production_never_generates_the_password(monkeypatch):
    for user in ALL_USERS:
        monkeypatch.setenv(f"{ENV_PREFIX}{user.upper()}", f"{user}-password-0123456789")
    monkeypatch.delenv(f"{ENV_PREFIX}BACKUP", raising=False)
    with pytest.raises(DeployError, match="valkey_backup: no password for backup;"):
        _deploy(linux_facts())


def test_timer_and_unit_render_the_plan():
    plan = Plan.from_host_data(
        HOST, {**DATA, "valkey_backup": {"enabled": True, "interval": "15min"}}
    )
    timer = timer_file(plan)
    assert "OnCalendar=*-*-* *:00/15:00\n" in timer and "Persistent=true\n" in timer
    assert "RandomizedDelaySec=225\n" in timer
    unit = unit_file()
    assert "Type=oneshot" in unit
    assert (
        "ExecStart=/usr/local/lib/valkey-plans/backup /var/lib/valkey-plans/backup/%i.env" in unit
    )


def test_env_file_names_the_password_file_never_the_password():
    plan = Plan.from_host_data(HOST, DATA)
    env = for_instance(plan, plan.instance("main")).env_file()
    assert f"RESTIC_PASSWORD_FILE={PASSWORD_FILE}\n" in env
    assert "VP_AUTH_FILE=/var/lib/valkey-plans/auth/main/admin\n" in env
    assert (
        "VP_REPOSITORIES='/var/backups/valkey-plans/main sftp:vault@backup-1:/srv/restic/main'"
        in env
    )
    assert "VP_KEEP='--keep-hourly 24 --keep-daily 30'" in env


def test_restore_stops_and_starts_through_either_init():
    plan = Plan.from_host_data(HOST, DATA)
    stop, start = instance_control(plan.instance("main"), acl=True)
    assert "systemctl stop valkey-server@main.service" in stop
    assert "start-stop-daemon --stop" in stop and "/run/valkey-main/valkey-server.pid" in stop
    assert "systemctl start valkey-server@main.service" in start
    assert "start-stop-daemon --start" in start and "/etc/valkey/valkey-main.conf" in start
