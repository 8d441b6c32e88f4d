"""The backup runner against a real valkey-server and a real restic repository."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.server.backup_helpers import (
    RUNNER,
    instance_with_repository,
    run_backup,
    snapshots,
)
from valkey_plans.plan import Plan


def fill(client, n: int = 1000) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"usr:{i}", "x" * 20)
    pipe.execute()


def test_a_backup_is_one_checked_snapshot_tagged_with_version_format_and_keys(
    valkey_factory, tmp_path: Path
):
    server, settings = instance_with_repository(valkey_factory, tmp_path)
    fill(server.client(), 1234)
    server.client(db=3).set("other", "1")
    done = run_backup(settings, tmp_path)
    assert done.returncode == 0, done.stderr
    (snap,) = snapshots(settings)
    tags = set(snap["tags"])
    assert {"instance=main", "rdb=11", "db0=1234", "db3=1"} <= tags, tags
    assert any(t.startswith("valkey=8.") for t in tags), tags
    assert snap["hostname"] == "db-1" and snap["paths"] == ["/dump.rdb"]


def test_the_password_is_in_no_command_line_and_no_world_readable_file(
    valkey_factory, tmp_path: Path
):
    server, settings = instance_with_repository(valkey_factory, tmp_path)
    fill(server.client(), 10)
    env_text = settings.env_file()
    password = Path(settings.password_file).read_text()
    assert password not in env_text and settings.password_file in env_text
    assert os.stat(settings.password_file).st_mode & 0o077 == 0
    done = run_backup(settings, tmp_path)
    assert done.returncode == 0, done.stderr
    assert password not in done.stderr + done.stdout
    staging = Path(settings.staging)
    assert staging.stat().st_mode & 0o077 == 0
    assert not (staging / "dump.rdb").exists(), "the staged copy outlived a good backup"


def test_a_bgsave_already_running_is_waited_for_then_a_fresh_one_is_taken(
    valkey_factory, tmp_path: Path
):
    server, settings = instance_with_repository(valkey_factory, tmp_path)
    client = server.client()
    fill(client, 20000)
    client.config_set("rdb-key-save-delay", "50")  # microseconds per key: a 1 s save
    client.bgsave()
    started = time.monotonic()
    client.set("written-during-the-first-save", "1")
    done = run_backup(settings, tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started > 1.0, "the first save cannot have finished that fast"
    (snap,) = snapshots(settings)
    assert "db0=20001" in snap["tags"], snap["tags"]


def save_children(server) -> list[int]:
    """The pids of the server's BGSAVE child (the only child valkey-server forks here)."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(server.proc.pid)], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def slow_save(server, keys: int = 20000) -> None:
    fill(server.client(), keys)
    server.client().config_set("rdb-key-save-delay", "200")  # about 4 s per save


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_bgsave_fails_the_run_and_keeps_earlier_snapshots(valkey_factory, tmp_path):
    server, settings = instance_with_repository(valkey_factory, tmp_path)
    fill(server.client(), 10)
    assert run_backup(settings, tmp_path).returncode == 0
    slow_save(server)
    env_file = tmp_path / "main.env"
    runner = subprocess.Popen(["sh", str(RUNNER), str(env_file)], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: save_children(server))
    for pid in save_children(server):
        os.kill(pid, signal.SIGKILL)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode != 0 and "rdb_last_bgsave_status:err" in err, err
    assert len(snapshots(settings)) == 1
    server.client().config_set("rdb-key-save-delay", "0")
    assert run_backup(settings, tmp_path).returncode == 0
    assert len(snapshots(settings)) == 2


def test_a_runner_killed_during_bgsave_or_restic_leaves_earlier_snapshots(valkey_factory, tmp_path):
    server, settings = instance_with_repository(valkey_factory, tmp_path)
    fill(server.client(), 10)
    assert run_backup(settings, tmp_path).returncode == 0
    slow_save(server)
    env_file = tmp_path / "main.env"
    for moment in ("bgsave", "restic"):
        runner = subprocess.Popen(
            ["setsid", "sh", str(RUNNER), str(env_file)], stderr=subprocess.DEVNULL
        )
        if moment == "bgsave":
            wait_for(lambda: save_children(server))
        else:
            wait_for(lambda: _running("restic") and not save_children(server), 60)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
        assert len(snapshots(settings)) == 1, moment
    wait_for(lambda: not save_children(server), 60)
    server.client().config_set("rdb-key-save-delay", "0")
    done = run_backup(settings, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(snapshots(settings)) == 2


def _running(program: str) -> bool:
    out = subprocess.run(["pgrep", "-x", program], capture_output=True)
    return out.returncode == 0


def test_retention_over_30_simulated_days_keeps_exactly_the_plan(valkey_factory, tmp_path):
    server, settings = instance_with_repository(valkey_factory, tmp_path)
    fill(server.client(), 5)
    start = dt.datetime(2026, 1, 1, 0, 30)
    # Daily for 35 days, then hourly for the last 26 hours: 35 + 26 snapshots.
    moments = [start + dt.timedelta(days=i) for i in range(35)]
    last = moments[-1]
    moments += [last + dt.timedelta(hours=h + 1) for h in range(26)]
    for moment in moments[:-1]:
        _backup_at(settings, moment)
    plan = Plan.from_host_data("db-1", {"valkey_backup": {"enabled": True}})
    keep = plan.backup.retention.keep_args()
    done = run_backup(settings, tmp_path, time=moments[-1].strftime("%Y-%m-%d %H:%M:%S"), keep=keep)
    assert done.returncode == 0, done.stderr
    kept = sorted(s["time"][:13] for s in snapshots(settings))
    hours = sorted({m.strftime("%Y-%m-%dT%H") for m in moments}, reverse=True)
    days = sorted({m.strftime("%Y-%m-%d") for m in moments}, reverse=True)
    newest_hours = set(hours[:24])
    # --keep-daily 30: the newest snapshot of each of the 30 newest days.
    newest_of_day = {max(h for h in hours if h.startswith(day)) for day in days[:30]}
    assert set(kept) == newest_hours | newest_of_day
    assert len(kept) == len(newest_hours | newest_of_day)


def _backup_at(settings, moment: dt.datetime) -> None:
    """One snapshot as the runner writes it (same host, path and instance tag), dated."""
    subprocess.run(
        ["restic", "-r", settings.repositories[0], "backup", "--quiet", "--host", "db-1"]
        + ["--stdin", "--stdin-filename", "dump.rdb", "--tag", "instance=main"]
        + ["--time", moment.strftime("%Y-%m-%d %H:%M:%S")],
        input=moment.isoformat().encode(),
        env={**os.environ, "RESTIC_PASSWORD_FILE": settings.password_file},
        check=True,
    )


def test_a_file_valkey_check_rdb_refuses_is_never_backed_up_and_nothing_is_pruned(
    valkey_factory, tmp_path
):
    server, settings = instance_with_repository(valkey_factory, tmp_path)
    fill(server.client(), 100)
    assert run_backup(settings, tmp_path).returncode == 0
    good = Path(settings.rdb).read_bytes()
    # The runner checks the file at VP_RDB after the save: point it at a truncated copy.
    cut = tmp_path / "cut.rdb"
    cut.write_bytes(good[: len(good) // 2])
    started = time.monotonic()
    done = run_backup(settings, tmp_path, rdb=str(cut), keep=["--keep-last", "1"])
    assert done.returncode != 0 and "valkey-check-rdb refused the file" in done.stderr, done.stderr
    assert time.monotonic() - started < 30, "a refused file waited for the full bound"
    assert len(snapshots(settings)) == 1, "a refused file was backed up"
    assert run_backup(settings, tmp_path).returncode == 0
    assert len(snapshots(settings)) == 2, "the earlier snapshot did not survive the failure"


def test_a_good_backup_publishes_its_time_for_the_alert_and_a_failed_one_does_not(
    valkey_factory, tmp_path
):
    server, settings = instance_with_repository(valkey_factory, tmp_path)
    fill(server.client(), 10)
    metrics = tmp_path / "textfile" / "valkey-plans-backup-main.prom"
    before = int(time.time())
    assert run_backup(settings, tmp_path, metrics_file=str(metrics)).returncode == 0
    sample = metrics.read_text().splitlines()[-1]
    series, stamp = sample.rsplit(" ", 1)
    assert series == (
        'valkey_plans_backup_last_success_timestamp_seconds{valkey_host="db-1",'
        'valkey_instance="main"}'
    ), sample
    assert before <= int(stamp) <= time.time() + 1, sample
    assert metrics.stat().st_mode & 0o777 == 0o644
    published = metrics.read_text()
    cut = tmp_path / "cut.rdb"
    cut.write_bytes(Path(settings.rdb).read_bytes()[:40])
    failed = run_backup(settings, tmp_path, metrics_file=str(metrics), rdb=str(cut))
    assert failed.returncode != 0, failed.stderr
    assert metrics.read_text() == published, "a failed backup moved the last-success time"
