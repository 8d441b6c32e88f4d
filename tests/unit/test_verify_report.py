"""verify's report plugin: every outcome of a check becomes one documented status.

The checks run in their own pytest process (as `valkey-plans verify` runs them), so
this repository's rule that a skip fails under CI never reaches them: a check that
does not apply reports N/A.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from valkey_plans.plan.inventory import load_targets
from valkey_plans.verify import report

SAMPLE = """
import pytest

from valkey_plans.verify.report import advise, not_applicable


def test_passes():
    pass


def test_not_here():
    not_applicable("no cluster-node instance on this host")


def test_plain_skip():
    pytest.skip("library not at 3: see the library check")


def test_fails():
    assert False, "live CONFIG differs from the plan"


def test_advisory():
    advise("vm.overcommit_memory = 0, Valkey wants 1")
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample checks run once through the plugin; the directory holds results.json."""
    tmp_path = tmp_path_factory.mktemp("verify-report")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = tmp_path / "results.json"
    args = ["-p", "no:cacheprovider", "-p", "valkey_plans.verify.report", "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args, f"--verify-report={out}", "test_sample.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # test_fails fails, nothing else
    return tmp_path


def test_each_outcome_has_its_status_and_reason(sample: Path):
    rows = {r.check: r for r in report.load(sample / "results.json", {})}
    assert {c: (r.status, r.reason) for c, r in rows.items()} == {
        "test_passes": ("pass", ""),
        "test_not_here": ("n/a", "no cluster-node instance on this host"),
        "test_plain_skip": ("skip", "library not at 3: see the library check"),
        "test_fails": ("fail", "live CONFIG differs from the plan"),
        "test_advisory": ("advisory", "vm.overcommit_memory = 0, Valkey wants 1"),
    }
    assert {r.status for r in rows.values()} <= set(report.STATUSES)
    assert report.NA not in report.FAILING


def test_json_rows_have_the_documented_keys(sample: Path):
    rows = json.loads((sample / "results.json").read_text())
    assert rows and all(set(row) == {"host", "check", "status", "reason"} for row in rows)


def test_table_shows_na_and_counts_it(sample: Path):
    text = report.table(report.load(sample / "results.json", {}))
    line = next(x for x in text.splitlines() if "test_not_here" in x)
    assert " N/A " in line and line.endswith("no cluster-node instance on this host")
    assert text.splitlines()[-1].endswith("1 failed, 1 advisory, 1 n/a")


#: A host the checks never reach: every selected check decides N/A from the plan alone.
UNREACHABLE_PRIMARY = """
site = [("db-1.invalid", {
    "valkey_instances": [{"name": "main", "role": "primary", "port": 6379}],
    "valkey_app": {"cache_instance": None},
    "valkey_exporter": {"enabled": False},
})]
"""
#: The packaged checks that do not apply to a lone loopback primary without ACLs.
NOT_APPLICABLE = {
    "test_acl_users_on_and_default_user_off": "the plan has no ACL users (valkey_acl: false)",
    "test_cache_lru_bound_and_ttls_hold_live": "no cache instance on this host",
    "test_functions_library_loaded_on_cache_instances": "no cache instance on this host",
    "test_exporters_up_and_serving_their_instance": "valkey_exporter.enabled is false",
    "test_cluster_members_are_the_planned_nodes": "no cluster-node instance on this host",
    "test_cluster_state_ok_and_every_slot_served": "no cluster-node instance on this host",
    "test_every_primary_has_its_replicas_on_other_hosts": "no cluster-node instance on this host",
    "test_replicas_linked_and_close_behind_their_primary": (
        "no replica, cluster node or primary reachable by replicas on this host"
    ),
}


def test_packaged_checks_say_na_where_they_do_not_apply(tmp_path: Path):
    """verify's own runner over the packaged checks, from a directory outside the checkout."""
    (tmp_path / "site.py").write_text(UNREACHABLE_PRIMARY)
    targets = load_targets(tmp_path / "site.py", tmp_path)
    selected = ("-k", "scaleout or acl_users or functions_library or cache_lru or exporters")
    pytest_bin = str(Path(sys.executable).parent / "pytest")
    code, results, output = report.run(
        targets, str(tmp_path / "site.py"), selected, pytest_bin, tmp_path
    )
    assert code == 0, output
    assert {r.check: (r.status, r.reason) for r in results} == {
        check: ("n/a", reason) for check, reason in NOT_APPLICABLE.items()
    }
