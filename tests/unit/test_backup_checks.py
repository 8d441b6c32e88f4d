"""The packaged backup checks: N/A where backups are off, and restic's time read right."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from tests.unit.test_verify_report import UNREACHABLE_PRIMARY
from valkey_plans.plan.inventory import load_targets
from valkey_plans.verify import report
from valkey_plans.verify.checks.test_backup import snapshot_time

CHECKS = ("test_backup_timers_active", "test_backups_reachable_and_fresh")


def test_backup_checks_are_na_when_backups_are_off(tmp_path: Path):
    (tmp_path / "site.py").write_text(UNREACHABLE_PRIMARY)
    targets = load_targets(tmp_path / "site.py", tmp_path)
    pytest_bin = str(Path(sys.executable).parent / "pytest")
    code, results, output = report.run(
        targets, str(tmp_path / "site.py"), ("-k", "backup"), pytest_bin, tmp_path
    )
    assert code == 0, output
    got = {r.check: (r.status, r.reason) for r in results}
    expected = {c: ("n/a", "valkey_backup.enabled is false") for c in CHECKS}
    expected["test_backups_leave_the_host"] = ("n/a", "valkey_backup.enabled is false")
    assert got == expected


def test_restic_times_with_nanoseconds_and_offsets():
    utc = dt.UTC
    assert snapshot_time("2026-12-01T13:21:39.083382449Z") == dt.datetime(
        2026, 12, 1, 13, 21, 39, 83382, tzinfo=utc
    )
    assert snapshot_time("2026-12-01T14:21:39+01:00").astimezone(utc).hour == 13
