"""check-plan refuses a missing, short or unsafe password before anything is touched.

README's production walkthrough promises it: `check-plan` "refuses a bad plan or a
missing password". The groups are the ones the deploy reads (plan/secrets_needed.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from valkey_plans.cli.main import main
from valkey_plans.plan import Plan
from valkey_plans.plan.secrets import ENV_PREFIX, SecretsError
from valkey_plans.plan.secrets_needed import check_secrets, needed_secrets

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "inventories" / "production.py"


def plan(tmp_path: Path, **data) -> Plan:
    base = {
        "valkey_acl": True,
        "valkey_secrets_file": str(tmp_path / "secrets.json"),
        "valkey_backup": {"enabled": True},
    }
    return Plan.from_host_data("box", {**base, **data})


def write(tmp_path: Path, secrets: dict[str, str]) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(secrets))
    os.chmod(path, 0o600)


@pytest.fixture(autouse=True)
def no_secret_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


def every_needed(p: Plan) -> dict[str, str]:
    return {name: "x" * 24 for group in needed_secrets(p) for name in group.names}


def test_the_groups_are_those_the_deploy_reads(tmp_path):
    groups = needed_secrets(plan(tmp_path))
    assert [g.what for g in groups] == ["", "valkey_backup: "]
    assert "admin" in groups[0].names and groups[1].names == ("backup",)


def test_a_plan_with_every_secret_passes(tmp_path):
    p = plan(tmp_path)
    write(tmp_path, every_needed(p))
    check_secrets(p)


def test_a_missing_backup_password_is_named_with_its_host_and_setting(tmp_path):
    p = plan(tmp_path)
    write(tmp_path, {k: v for k, v in every_needed(p).items() if k != "backup"})
    with pytest.raises(SecretsError, match=r"^host box: valkey_backup: no password for backup"):
        check_secrets(p)


def test_a_short_password_is_refused(tmp_path):
    p = plan(tmp_path)
    write(tmp_path, every_needed(p) | {"admin": "short"})
    with pytest.raises(SecretsError, match="admin are shorter than 16"):
        check_secrets(p)


def test_a_generating_plan_may_lack_them_and_nothing_is_created(tmp_path):
    p = plan(tmp_path, valkey_secrets_generate=True)
    check_secrets(p)
    assert not (tmp_path / "secrets.json").exists()


def test_the_backup_host_needs_its_own_secret(tmp_path):
    box = Plan.from_host_data(
        "box",
        {
            "valkey_acl": False,
            "valkey_secrets_file": str(tmp_path / "secrets.json"),
            "valkey_backup": {"enabled": True, "backup_host": "vault"},
        },
    )
    vault = Plan.from_host_data(
        "vault", {"valkey_acl": False, "valkey_secrets_file": str(tmp_path / "secrets.json")}
    )
    write(tmp_path, {"backup": "x" * 24})
    check_secrets(box, [box, vault])
    with pytest.raises(SecretsError, match="host vault: backup host .* no password for"):
        check_secrets(vault, [box, vault])


def test_check_plan_on_the_production_inventory_refuses_a_missing_password(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    result = CliRunner().invoke(
        main, ["--project-dir", str(ROOT), "check-plan", str(PRODUCTION)], env={"HOME": str(home)}
    )
    assert result.exit_code != 0
    assert "does not exist" in result.output and "production-secrets.json" in result.output
