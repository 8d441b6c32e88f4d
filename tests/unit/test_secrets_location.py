"""Where a secrets file may live: never in a repository, never where others can write."""

from __future__ import annotations

import json
import os

import pytest

from valkey_plans.plan.secrets import SecretsError, load_secrets

USERS = ("api", "queue", "subscriber", "background", "checks", "admin")


def write(path, mode: int = 0o600) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({u: "x" * 24 for u in USERS}))
    os.chmod(path, mode)
    return str(path)


def test_a_file_in_a_private_directory_is_read(tmp_path):
    os.chmod(tmp_path, 0o700)
    assert load_secrets(write(tmp_path / "s.json"))["api"].get_secret_value() == "x" * 24


def test_a_file_inside_a_git_work_tree_is_refused(tmp_path):
    os.chmod(tmp_path, 0o700)
    (tmp_path / ".git").mkdir()
    with pytest.raises(SecretsError, match=r"inside the git work tree .*; allowed: a path outside"):
        load_secrets(write(tmp_path / "config" / "s.json"))


def test_generating_into_a_git_work_tree_writes_nothing(tmp_path):
    os.chmod(tmp_path, 0o700)
    (tmp_path / ".git").mkdir()
    target = tmp_path / "secrets" / "dev.json"
    with pytest.raises(SecretsError, match="git work tree"):
        load_secrets(str(target), generate=True)
    assert not target.parent.exists(), "a refused secrets file must not be created"


def test_a_directory_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(SecretsError, match=r"writable by others \(mode 0777\); allowed"):
        load_secrets(write(shared / "s.json"))


def test_a_file_others_can_read_is_refused(tmp_path):
    os.chmod(tmp_path, 0o700)
    with pytest.raises(SecretsError, match=r"mode 0644; allowed: 0600"):
        load_secrets(write(tmp_path / "s.json", 0o644))


def test_a_relative_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SecretsError, match="relative path; allowed: an absolute path"):
        load_secrets("s.json")


@pytest.mark.parametrize(
    "bad", ["x" * 20 + "\nrequirepass x", "x" * 20 + " y", 'x"' * 10, "é" * 20]
)
def test_a_password_that_could_break_a_config_line_is_refused_without_showing_it(bad):
    env = {f"VALKEY_PLANS_SECRET_{u.upper()}": "y" * 24 for u in USERS}
    env["VALKEY_PLANS_SECRET_API"] = bad
    with pytest.raises(SecretsError, match="passwords of api hold blanks") as info:
        load_secrets(None, env=env)
    assert bad not in str(info.value)
