"""`valkey-plans backup` and `restore` refuse what they cannot do before reaching a host."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from valkey_plans.cli.main import main

INVENTORY = """
site = [("db-1.invalid", {
    "valkey_instances": [{"name": "main", "role": "primary", "port": 6380}],
    "valkey_app": {"cache_instance": None},
    "valkey_backup": {"enabled": True},
})]
"""


def _run(tmp_path: Path, *args: str):
    (tmp_path / "site.py").write_text(INVENTORY)
    (tmp_path / "group_data").mkdir(exist_ok=True)
    inventory = str(tmp_path / "site.py")
    return CliRunner().invoke(main, ["--project-dir", str(tmp_path), args[0], inventory, *args[1:]])


def test_restore_needs_exactly_one_of_snapshot_and_latest(tmp_path: Path):
    base = ("restore", "--host", "db-1.invalid", "--instance", "main")
    neither = _run(tmp_path, *base)
    assert neither.exit_code == 2 and "exactly one of --snapshot ID and --latest" in neither.output
    both = _run(tmp_path, *base, "--latest", "--snapshot", "abc")
    assert both.exit_code == 2 and "exactly one" in both.output


def test_restore_from_offsite_without_one_is_refused(tmp_path: Path):
    args = ("restore", "--host", "db-1.invalid", "--instance", "main", "--latest")
    result = _run(tmp_path, *args, "--from", "offsite")
    assert result.exit_code == 1 and "valkey_backup.offsite is not set" in result.output


def test_restore_of_an_unknown_host_or_instance_is_refused(tmp_path: Path):
    host = _run(tmp_path, "restore", "--host", "nope", "--instance", "main", "--latest")
    assert host.exit_code == 1 and "no host 'nope'" in host.output
    args = ("restore", "--host", "db-1.invalid", "--instance", "other", "--latest")
    inst = _run(tmp_path, *args)
    assert inst.exit_code == 1 and "no instance 'other'" in inst.output


def test_backup_of_nothing_is_refused(tmp_path: Path):
    result = _run(tmp_path, "backup", "--instance", "other")
    assert result.exit_code == 1 and "nothing to back up" in result.output


def test_prune_without_a_backup_host_is_refused(tmp_path: Path):
    result = _run(tmp_path, "prune")
    assert result.exit_code == 1 and "no host is a valkey_backup.backup_host" in result.output
