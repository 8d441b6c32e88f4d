"""The distribution as users get it: the client alone for applications, extras for operators.

(a) the client imports nothing from the plan, deploy, verify, lab or CLI, nor any of
their third-party dependencies; (b) the wheel's base install, in a fresh venv outside
the checkout, has the client and none of pyinfra, pytest, testinfra; (c) a fresh venv
with `[deploy,verify]` runs `valkey-plans check-plan` in a project directory laid out
the way README's "Use it from your own repository" says, and the packaged checks from
there. The venvs get their packages from one wheelhouse filled once (pip may download
into it from PyPI); nothing in them comes from this machine's site-packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT_MODULES = (
    "valkey_plans.client",
    "valkey_plans.client.cache",
    "valkey_plans.client.store",
    "valkey_plans.client.clients",
    "valkey_plans.client.aclients",
    "valkey_plans.client.cache_async",
    "valkey_plans.client.settings",
)
#: What an application that imports the client must never load.
NOT_FOR_THE_CLIENT = (
    "valkey_plans.plan",
    "valkey_plans.deploy",
    "valkey_plans.verify",
    "valkey_plans.lab",
    "valkey_plans.cli",
    "pyinfra",
    "pyinfra_cli",
    "jinja2",
    "pytest",
    "_pytest",
    "testinfra",
    "click",
)


def clean_env() -> dict[str, str]:
    """The environment without anything that would point Python at this checkout."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    return {k: v for k, v in os.environ.items() if k not in drop}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args, cwd=cwd, env=clean_env(), capture_output=True, text=True, check=False, timeout=900
    )
    if check:
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_client_imports_nothing_of_the_operator_side(tmp_path: Path):
    """(a) A clean interpreter (-I: no cwd, no PYTHONPATH) imports every client module."""
    code = f"import json, sys, {', '.join(CLIENT_MODULES)}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(run([sys.executable, "-I", "-c", code], cwd=tmp_path).stdout)
    leaked = [m for m in loaded if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_THE_CLIENT)]
    assert not leaked, f"the client loaded {leaked}"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's wheel, built from a copy of the sources, and every dependency's wheel."""
    tmp = tmp_path_factory.mktemp("packaging")
    source, house = tmp / "source", tmp / "wheelhouse"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: the dev extra brings setuptools, so the build needs no download.
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(house), str(source)], tmp)
    (wheel,) = house.glob("valkey_plans-*.whl")
    # The dependencies of every extra the tests install, by the wheel's own path: a
    # `valkey-plans` on PyPI must never stand in for this build.
    run([*pip, "wheel", "-w", str(house), f"{wheel}[deploy,verify]"], tmp)
    return house


def fresh_venv(where: Path, house: Path, requirement: str) -> Path:
    """A venv without pip or system site-packages, filled from the wheelhouse only."""
    venv.EnvBuilder(with_pip=False, system_site_packages=False, clear=True).create(where)
    python = where / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--python"]
    run([*pip, str(python), "install", "--no-index", "-f", str(house), requirement], where)
    return where / "bin"


@pytest.mark.slow
def test_base_install_is_the_client_only(wheelhouse: Path, tmp_path: Path):
    """(b) `pip install valkey-plans`: the client works, the operator's tools are absent."""
    bin_dir = fresh_venv(tmp_path / "base", wheelhouse, "valkey-plans")
    python = str(bin_dir / "python")
    where = run(
        [python, "-c", "import valkey_plans.client.cache as m; print(m.__file__)"], tmp_path
    )
    assert where.stdout.startswith(str(tmp_path / "base")), where.stdout
    for module in ("pyinfra", "pytest", "testinfra", "jinja2", "click"):
        missing = run([python, "-c", f"import {module}"], tmp_path, check=False)
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, module
    command = run([str(bin_dir / "valkey-plans"), "--help"], tmp_path, check=False)
    assert command.returncode != 0
    assert "pip install 'valkey-plans[deploy]'" in command.stderr, command.stderr


#: What check-plan prints for the dev inventory with its group_data/.
DEV_PLAN = "@local: ok: cache (cache, port 6379), hosted (primary, port 6380)"


def user_project(where: Path) -> Path:
    """A user's own repository, the README way: inventories/ and group_data/ side by side."""
    (where / "inventories").mkdir(parents=True)
    shutil.copy(ROOT / "inventories" / "dev.py", where / "inventories" / "dev.py")
    shutil.copytree(
        ROOT / "group_data", where / "group_data", ignore=shutil.ignore_patterns("__pycache__")
    )
    return where


@pytest.fixture(scope="module")
def operator_bin(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_venv(
        tmp_path_factory.mktemp("operator"), wheelhouse, "valkey-plans[deploy,verify]"
    )


@pytest.mark.slow
def test_deploy_verify_install_checks_a_plan_outside_the_checkout(
    operator_bin: Path, tmp_path: Path
):
    """(c) check-plan in the user's project directory reads its group_data/ (the second
    instance, `hosted`, comes from group_data/dev.py); so does --project-dir from elsewhere.
    """
    project = user_project(tmp_path / "my-site")
    command = str(operator_bin / "valkey-plans")
    result = run([command, "check-plan", "inventories/dev.py"], project)
    assert result.stdout.strip() == DEV_PLAN, result.stdout
    assert "group_data" not in result.stderr, result.stderr
    inventory = str(project / "inventories" / "dev.py")
    elsewhere = run([command, "--project-dir", str(project), "check-plan", inventory], tmp_path)
    assert elsewhere.stdout == result.stdout


@pytest.mark.slow
def test_installed_checks_run_outside_the_checkout(operator_bin: Path, tmp_path: Path):
    """(c) `valkey-plans verify` finds the packaged checks; on a host they never reach,
    the ones that do not apply say N/A (the others are deselected: nothing is contacted).
    """
    (tmp_path / "site.py").write_text(
        'site = [("db-1.invalid", {"valkey_instances": [{"name": "main", "role": "primary",'
        ' "port": 6379}], "valkey_app": {"cache_instance": None}})]\n'
    )
    select = ["--pytest-arg=-k", "--pytest-arg=scaleout or acl_users"]
    result = run(
        [str(operator_bin / "valkey-plans"), "verify", "--json", *select, "site.py"], tmp_path
    )
    rows = json.loads(result.stdout)
    assert len(rows) == 5 and {r["status"] for r in rows} == {"n/a"}, rows
    assert {r["host"] for r in rows} == {"db-1.invalid"}
