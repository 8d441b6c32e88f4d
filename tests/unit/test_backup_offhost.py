"""`valkey_backup.backup_host` on paper: plan rules, key material, what the deploy renders.

The lab drill (tests/lab/test_backup_lab.py) runs all of it for real; these pin the
rules and the exact files quickly: a refused plan names what is wrong and what is
allowed; secrets reach only root-only files (never a command, an operation name or an
argument); a second deploy of the same inventory changes nothing.
"""

from __future__ import annotations

import subprocess

import bcrypt
import pytest
from cryptography import x509
from pydantic import SecretStr
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Groups, Users, Which

from tests.unit.pyinfra_commands import installed_hashes, linux_facts, planned_operations, uploaded
from valkey_plans.backup import offhost
from valkey_plans.backup.restore import RESTIC
from valkey_plans.backup.settings import REPO_OPTIONS, REST_DIR, for_instance
from valkey_plans.deploy import valkey_plan
from valkey_plans.deploy.backup_host import prune_env, rest_unit
from valkey_plans.plan import Plan, PlanError, topology
from valkey_plans.plan.render import TEMPLATE_DIR
from valkey_plans.plan.secrets import ALL_USERS, ENV_PREFIX

SERVER_SECRET = "backup-server-secret-0123456789abcdef"
TRIXIE = {"name": "Debian", "major": 13, "release_meta": {"VERSION_CODENAME": "trixie"}}
BOOKWORM = {"name": "Debian", "major": 12, "release_meta": {"VERSION_CODENAME": "bookworm"}}
MAIN = {"name": "main", "role": "primary", "port": 6380}
APP = {"cache_instance": None, "hosted_instance": "main"}
BOX = {
    "valkey_acl": True,
    "valkey_instances": [MAIN],
    "valkey_app": APP,
    "valkey_backup": {"enabled": True, "backup_host": "vault-1"},
}
VAULT = {
    "ssh_hostname": "10.0.0.2",
    "valkey_acl": True,
    "valkey_instances": [MAIN],
    "valkey_app": APP,
    "valkey_backup": {"enabled": True, "instances": []},
}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for user in (*ALL_USERS, "backup"):
        monkeypatch.setenv(f"{ENV_PREFIX}{user.upper()}", f"{user}-password-0123456789")
    monkeypatch.setenv(f"{ENV_PREFIX}BACKUP_SERVER", SERVER_SECRET)


def _plans() -> list[Plan]:
    return [Plan.from_host_data("db-1", BOX), Plan.from_host_data("vault-1", VAULT)]


def test_offsite_and_backup_host_together_are_refused():
    data = {**BOX, "valkey_backup": {**BOX["valkey_backup"], "offsite": "s3:s3.example/b"}}
    with pytest.raises(PlanError, match=r"valkey_backup.*both name the off-host.*allowed: one"):
        Plan.from_host_data("db-1", data)


def test_a_backup_host_outside_the_inventory_or_itself_is_refused():
    lone = Plan.from_host_data("db-1", BOX)
    with pytest.raises(PlanError, match=r"backup_host = 'vault-1': no such host.*allowed"):
        topology.validate([lone, Plan.from_host_data("other-1", VAULT)])
    itself = {**BOX, "valkey_backup": {"enabled": True, "backup_host": "db-1"}}
    with pytest.raises(PlanError, match="is this host itself; allowed: another inventory host"):
        topology.validate([Plan.from_host_data("db-1", itself)])
    topology.validate(_plans())


def test_the_offsite_repository_is_a_root_only_location_file():
    box = _plans()[0]
    assert box.backup.offsite_repository("main") == f"@{REST_DIR}/main"
    settings = for_instance(box, box.instance("main"))
    assert settings.repositories == ["/var/backups/valkey-plans/main", f"@{REST_DIR}/main"]


def test_key_material_is_derived_the_same_each_run_and_differs_per_host():
    secret, vault = SecretStr(SERVER_SECRET), _plans()[1]
    a, b = offhost.rest_password(secret, "db-1"), offhost.rest_password(secret, "db-2")
    assert a.get_secret_value() != b.get_secret_value()
    assert offhost.tls_pair(secret, vault)[1] == offhost.tls_pair(secret, vault)[1]
    lines = offhost.htpasswd(secret, ["db-1", "db-2"]).splitlines()[1:]
    assert lines == offhost.htpasswd(secret, ["db-1", "db-2"]).splitlines()[1:]
    user, hashed = lines[0].split(":", 1)
    assert user == "db-1" and bcrypt.checkpw(a.get_secret_value().encode(), hashed.encode())
    assert a.get_secret_value() not in "".join(lines)
    cert = x509.load_pem_x509_certificate(offhost.tls_pair(secret, vault)[1].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.2"]


def test_the_rest_server_unit_is_append_only_private_tls_as_the_account():
    unit = rest_unit()
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    for flag in (
        "--append-only",
        "--private-repos",
        "--tls",
        f"--htpasswd-file {offhost.HTPASSWD}",
    ):
        assert flag in start
    assert f"User={offhost.ACCOUNT}\n" in unit and f"ReadWritePaths={offhost.REPOS}\n" in unit


def test_a_prune_job_keeps_the_valkey_hosts_own_retention():
    box = Plan.from_host_data(
        "db-1",
        {**BOX, "valkey_backup": {**BOX["valkey_backup"], "retention": {"hourly": 3, "daily": 2}}},
    )
    env = prune_env(box, "main")
    assert "VP_REPO=/srv/valkey-backup/restic/db-1/main\n" in env
    assert "VP_KEEP='--keep-hourly 3 --keep-daily 2'\n" in env and "VP_HOST=db-1\n" in env


def _facts(distro: dict, **overrides):
    facts = linux_facts(LinuxDistribution=lambda: dict(distro), **overrides)
    facts[Users], facts[Groups] = (lambda: {}), (lambda: set())
    facts[Which] = lambda **kwargs: "/usr/sbin/useradd"
    return facts


def _deploy(name: str, facts) -> list:
    data, other = (VAULT, ("db-1", BOX)) if name == "vault-1" else (BOX, ("vault-1", VAULT))
    return planned_operations(valkey_plan, facts, data, name, [other])


def _text(planned) -> str:
    commands = [c.get_raw_value() for _, cs in planned for c in cs if hasattr(c, "get_raw_value")]
    return "\n".join(commands + [name for name, _ in planned])


def test_secrets_reach_only_root_or_account_only_files(secrets_env):
    secret = SecretStr(SERVER_SECRET)
    login = offhost.rest_password(secret, "db-1").get_secret_value()
    key = offhost.tls_pair(secret, _plans()[1])[0].get_secret_value()
    for name, distro in (("vault-1", TRIXIE), ("db-1", BOOKWORM)):
        planned = _deploy(name, _facts(distro))
        text = _text(planned)
        assert login not in text and "BEGIN PRIVATE KEY" not in text and SERVER_SECRET not in text
        holders = {d for d, t in uploaded(planned).items() if login in t or key in t}
        modes = [c.get_raw_value() for _, cs in planned for c in cs if hasattr(c, "get_raw_value")]
        for dest in holders:
            assert f"chmod 600 {dest}" in modes or f"chmod 640 {dest}" in modes, dest
        expected = (
            {f"{REST_DIR}/.main.candidate"}
            if name == "db-1"
            else {f"{offhost.CONF_DIR}/.key.pem.candidate"}
        )
        assert holders == expected


def test_a_second_deploy_of_the_backup_host_changes_nothing(secrets_env):
    first = _deploy("vault-1", _facts(TRIXIE))
    hashes = installed_hashes(first)
    assert offhost.HTPASSWD in hashes and f"{offhost.PRUNE_DIR}/db-1/main.env" in hashes
    owners = {offhost.HTPASSWD: ("root", offhost.ACCOUNT, 640)}
    facts = _facts(
        TRIXIE,
        Sha256File=lambda path: hashes.get(path),
        File=lambda path: (
            dict(
                zip(("user", "group", "mode"), owners.get(path, ("root", "root", 600)), strict=True)
            )
            if path in hashes
            else None
        ),
        SystemdStatus=lambda **kw: {offhost.REST_UNIT: True, offhost.PRUNE_TIMER: True},
        SystemdEnabled=lambda **kw: {offhost.REST_UNIT: True, offhost.PRUNE_TIMER: True},
    )
    second = _deploy("vault-1", facts)
    assert [d for d in uploaded(second) if "backup" in d or "rest" in d or "prune" in d] == []
    assert "systemctl start valkey-plans-rest-server" not in _text(second)


def test_a_debian_12_backup_host_is_refused_before_any_change(secrets_env):
    with pytest.raises(DeployError, match="allowed: Debian 13 or later with systemd"):
        _deploy("vault-1", _facts(BOOKWORM))


def test_restic_options_of_a_location_file_pin_the_certificate_beside_it():
    words = subprocess.run(
        [
            "sh",
            "-c",
            'r="$1"; shift; set --; ' + REPO_OPTIONS + ' printf "%s\\n" "$@"',
            "sh",
            f"@{REST_DIR}/main",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert words == ["--repository-file", f"{REST_DIR}/main", "--cacert", f"{REST_DIR}/ca.pem"]
    assert REPO_OPTIONS in RESTIC
    runner = (TEMPLATE_DIR / "valkey-plans-backup.sh").read_text()
    assert REPO_OPTIONS in runner
    # The runner never prunes a backup host's repository: its login cannot delete.
    assert 'case "$repo" in @*) continue ;; esac' in runner
