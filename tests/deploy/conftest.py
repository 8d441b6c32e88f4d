"""Deploy tests run the real pyinfra against this machine (@local): they need root or sudo."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.valkey_server import free_port
from valkey_plans.plan.layout import DEBIAN, EXPORTER_PROGRAM, exporter_paths

HAS_ROOT = (
    os.geteuid() == 0 or subprocess.call(["sudo", "-n", "true"], stderr=subprocess.DEVNULL) == 0
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/deploy/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if not HAS_ROOT:
                item.add_marker(pytest.mark.skip(reason="needs root or passwordless sudo"))


def write_inventory(
    path: Path, instances: list[dict], app: dict | None = None, **data: object
) -> Path:
    """A one-host @local inventory whose host data is exactly this plan (plus group_data/all)."""
    host_data = {"_sudo": os.geteuid() != 0, "valkey_instances": instances, **data}
    if app is not None:
        host_data["valkey_app"] = app
    path.write_text(f"vptest = [('@local', {host_data!r})]\n")
    return path


def _teardown(names: list[str]) -> None:
    systemd = Path("/run/systemd/system").is_dir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for name in names:
        if systemd:
            subprocess.call([*sudo, "systemctl", "disable", "--now", f"valkey-server@{name}"])
        else:
            subprocess.call(
                [
                    *sudo,
                    "start-stop-daemon",
                    "--stop",
                    "--quiet",
                    "--retry",
                    "TERM/30/KILL/5",
                    "--pidfile",
                    f"/run/valkey-{name}/valkey-server.pid",
                    "--exec",
                    "/usr/bin/valkey-server",
                ]
            )
        _exporter_teardown(name, systemd, sudo)
        subprocess.call(
            [
                *sudo,
                "rm",
                "-f",
                f"/etc/valkey/valkey-{name}.conf",
                f"/var/lib/valkey/dump-{name}.rdb",
            ]
        )
        subprocess.call([*sudo, "rm", "-rf", f"/var/lib/valkey/appendonlydir-{name}"])


def _exporter_teardown(name: str, systemd: bool, sudo: list[str]) -> None:
    """The deploy's exporter of instance `name` stopped and its env file gone."""
    paths = exporter_paths(DEBIAN, name)
    if systemd:
        subprocess.call([*sudo, "systemctl", "disable", "--now", f"valkey-plans-exporter@{name}"])
    else:
        stop = ["start-stop-daemon", "--stop", "--quiet", "--oknodo", "--retry", "TERM/10/KILL/5"]
        stop += ["--pidfile", paths.pidfile, "--exec", EXPORTER_PROGRAM]
        subprocess.call([*sudo, *stop])
    subprocess.call([*sudo, "rm", "-f", paths.env_file, paths.pidfile])


@pytest.fixture
def test_plan(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Write @local inventories for throwaway instances `vpt-cache`/`vpt-primary`; removed after."""
    ports = {"vpt-cache": free_port(), "vpt-primary": free_port()}
    env_dir = tmp_path / "app-settings"

    def make(cache: dict | None = None, primary: dict | None = None, **data: object) -> Path:
        instances = [
            {
                "name": "vpt-cache",
                "role": "cache",
                "port": ports["vpt-cache"],
                "maxmemory": "32mb",
                **(cache or {}),
            },
            {
                "name": "vpt-primary",
                "role": "primary",
                "port": ports["vpt-primary"],
                "maxmemory": "32mb",
                **(primary or {}),
            },
        ]
        app = {
            "name": "vptest",
            "env_dir": str(env_dir),
            "hosted_instance": "vpt-primary",
            "cache_instance": "vpt-cache",
        }
        return write_inventory(tmp_path / "vptest.py", instances, app, **data)

    make.ports = ports  # type: ignore[attr-defined]
    yield make
    _teardown(list(ports))
