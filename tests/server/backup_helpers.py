"""A real valkey-server with a unix socket, a real restic repository, the real runner."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tests.valkey_server import ValkeyProcess
from valkey_plans.backup.settings import BackupSettings
from valkey_plans.plan.render import TEMPLATE_DIR

RUNNER = TEMPLATE_DIR / "valkey-plans-backup.sh"
PASSWORD = "correct-horse-battery-staple-0123"


def restic(settings: BackupSettings, *args: str, repo: str | None = None) -> str:
    """restic on the test's repository, its password read from the 0600 file."""
    env = {**os.environ, "RESTIC_PASSWORD_FILE": settings.password_file}
    out = subprocess.run(
        ["restic", "-r", repo or settings.repositories[0], *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def snapshots(settings: BackupSettings) -> list[dict]:
    return json.loads(restic(settings, "snapshots", "--json")) or []


def instance_with_repository(
    factory: Callable[..., ValkeyProcess], tmp: Path, name: str = "main", **config: str
) -> tuple[ValkeyProcess, BackupSettings]:
    """A running instance (socket, `dump-NAME.rdb`) and backup settings for it, with an
    initialised local restic repository; nothing of it needs root."""
    sock = tmp / f"{name}.sock"
    server = factory(name, unixsocket=str(sock), dbfilename=f"dump-{name}.rdb", **config)
    password = tmp / "restic-password"
    fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(PASSWORD)
    settings = BackupSettings(
        instance=name,
        host="db-1",
        socket=str(sock),
        config=str(tmp / f"{name}.conf"),
        rdb=str(server.workdir / f"dump-{name}.rdb"),
        data_dir=str(server.workdir),
        staging=str(tmp / f"staging-{name}"),
        repositories=[str(tmp / "repo" / name)],
        # Many backups within one hour here: the plan's retention would keep one of them.
        keep=["--keep-last", "50"],
        password_file=str(password),
        valkey_user=None,
    )
    restic(settings, "init")
    return server, settings


def run_backup(
    settings: BackupSettings, tmp: Path, time: str | None = None, **over: object
) -> subprocess.CompletedProcess[str]:
    """The runner, as the timer starts it: one argument, the env file."""
    settings = replace(settings, **over) if over else settings
    env_file = tmp / f"{settings.instance}.env"
    env_file.write_text(settings.env_file())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    if time:
        env["VP_TIME"] = time
    return subprocess.run(
        ["sh", str(RUNNER), str(env_file)], env=env, capture_output=True, text=True, timeout=120
    )
