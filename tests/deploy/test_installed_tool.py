"""The tool as a team installs it: a fresh venv outside the checkout, their own repository.

README's "Use it from your own repository": `pip install 'valkey-plans[deploy,verify]'`,
then `valkey-plans check-plan|up|verify` in a directory holding inventories/ and
group_data/. Nothing here comes from the checkout but the wheel built from it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.deploy.conftest import _teardown
from tests.deploy.pyinfra_run import Run
from tests.unit.test_packaging import fresh_venv, run, wheelhouse  # noqa: F401 (fixture)
from tests.valkey_server import free_port
from valkey_plans.verify.report import FAILING

NAMES = ("vpi-cache", "vpi-primary")


def team_repository(where: Path, ports: dict[str, int]) -> Path:
    """inventories/site.py and group_data/all.py, written the way the README says."""
    (where / "inventories").mkdir(parents=True)
    (where / "group_data").mkdir()
    secrets = where.parent / "operator-home" / ".config" / "valkey-plans"
    (where / "inventories" / "site.py").write_text(
        f"site = [('@local', {{'_sudo': {os.geteuid() != 0}}})]\n"
    )
    (where / "group_data" / "all.py").write_text(
        "valkey_instances = [\n"
        f"    {{'name': 'vpi-cache', 'role': 'cache', 'port': {ports['vpi-cache']},"
        " 'maxmemory': '32mb'},\n"
        f"    {{'name': 'vpi-primary', 'role': 'primary', 'port': {ports['vpi-primary']},"
        " 'maxmemory': '32mb'},\n"
        "]\n"
        "valkey_app = {'name': 'vpinst', 'env_dir': "
        f"{str(where.parent / 'app-settings')!r}, 'hosted_instance': 'vpi-primary',"
        " 'cache_instance': 'vpi-cache'}\n"
        "valkey_acl = True\n"
        f"valkey_secrets_file = {str(secrets / 'site-secrets.json')!r}\n"
        "valkey_secrets_generate = True\n"
    )
    return where


@pytest.fixture
def ports() -> dict[str, int]:
    chosen = {name: free_port() for name in NAMES}
    yield chosen
    _teardown(list(NAMES))


@pytest.mark.slow
def test_installed_tool_checks_deploys_and_verifies_a_teams_own_repository(
    wheelhouse: Path,  # noqa: F811 (fixture)
    ports: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("COLUMNS", "250")  # pyinfra's results table on one line per row
    os.chmod(tmp_path, stat.S_IRWXU)
    bin_dir = fresh_venv(tmp_path / "operator-venv", wheelhouse, "valkey-plans[deploy,verify]")
    command = str(bin_dir / "valkey-plans")
    repo = team_repository(tmp_path / "my-site", ports)

    checked = run([command, "check-plan", "inventories/site.py"], repo)
    assert "vpi-cache (cache" in checked.stdout and "vpi-primary (primary" in checked.stdout

    up = run([command, "up", "inventories/site.py"], repo, check=False)
    assert up.returncode == 0, f"{up.stdout[-4000:]}\n{up.stderr[-4000:]}"
    assert Run(up.returncode, up.stdout + up.stderr).changed > 0

    again = run([command, "up", "--no-verify", "inventories/site.py"], repo)
    assert Run(again.returncode, again.stdout + again.stderr).changed == 0, again.stdout[-3000:]

    verified = run([command, "verify", "--json", "inventories/site.py"], repo)
    rows = json.loads(verified.stdout)
    assert not [r for r in rows if r["status"] in FAILING], rows
    assert sum(r["status"] == "pass" for r in rows) >= 10, rows
    env = (tmp_path / "app-settings" / "vpinst.env").read_text()
    assert f"VALKEY_PORT={ports['vpi-primary']}" in env
