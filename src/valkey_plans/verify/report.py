"""`valkey-plans verify`'s view of the checks: one row per host and check.

The checks stay plain pytest-testinfra modules, shipped in the package
(`valkey_plans/verify/checks/`; `pytest checks/ --hosts=...` in the repository runs
them on its own). `verify` runs pytest over them with this module as a plugin
(`-p valkey_plans.verify.report --verify-report=FILE`): it records, per test and host,
the outcome and the first line of the failure message, and writes them as JSON for
the CLI to print as one table.

Not applicable: a check that cannot apply to a host (cluster checks on a host with no
cluster node, ACL checks without ACLs) calls `not_applicable(reason)`, a pytest skip
whose reason starts with `N/A: `. verify reports it as `n/a`, never as a pass that
could not have failed, and it does not fail the run.

Advisory results: a check that finds something worth knowing which the plan cannot
fix (kernel settings Valkey warns about) emits `AdvisoryWarning`; the check still
passes, so the exit code stays 0, and the table shows `advisory` with the message.
Plain pytest lists the same messages in its warnings summary.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

PASS, FAIL, ERROR, SKIP, ADVISORY, NA = "pass", "fail", "error", "skip", "advisory", "n/a"
#: Every status a result can have: the `status` values of `valkey-plans verify --json`.
STATUSES = (PASS, FAIL, ERROR, SKIP, ADVISORY, NA)
FAILING = (FAIL, ERROR)
#: How a check's skip reason says that the check does not apply to the host.
NA_PREFIX = "N/A: "


class AdvisoryWarning(UserWarning):
    """Something verify reports without failing: the plan cannot change it."""


def advise(message: str) -> None:
    """Report `message` as advisory from inside a check."""
    warnings.warn(AdvisoryWarning(message), stacklevel=2)


def not_applicable(reason: str) -> NoReturn:
    """End a check that does not apply to the host under test: verify shows N/A."""
    pytest.skip(f"{NA_PREFIX}{reason}")


@dataclass
class Result:
    """One row of verify's table and of its JSON (README "Verify and audit")."""

    #: Inventory host name (`@local`, `db-1`, ...).
    host: str
    #: The check's test function name (`test_live_config_matches_plan`).
    check: str
    #: One of STATUSES.
    status: str
    #: Why, for anything but a pass: the failure's first line, the advisory or N/A reason.
    reason: str = ""


def first_line(report: pytest.TestReport) -> str:
    """The first line of the assertion/failure message, without the exception's type name."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    if isinstance(report.longrepr, tuple):  # skips: (path, line, reason)
        text = report.longrepr[2]
    line = (text.strip().splitlines() or [""])[0]
    for prefix in ("AssertionError: ", "Failed: ", "Skipped: "):
        line = line.removeprefix(prefix)
    return line


class Collector:
    """The plugin: outcomes per (host, check) collected from the test reports."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.results: dict[str, Result] = {}
        self.ids: dict[str, tuple[str, str]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        outcome = yield
        report = outcome.get_result()
        if report.nodeid not in self.ids:
            params = getattr(getattr(item, "callspec", None), "params", {})
            host = params.get("_testinfra_host")
            host_id = host.backend.get_pytest_id() if host is not None else "?"
            self.ids[report.nodeid] = (host_id, getattr(item, "originalname", item.name))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        host, check = self.ids.get(report.nodeid, ("?", report.nodeid))
        current = self.results.get(report.nodeid)
        if report.when == "call" or report.failed or report.skipped:
            reason = "" if report.passed else first_line(report)
            if report.passed:
                status = PASS
            elif report.skipped:
                status = NA if reason.startswith(NA_PREFIX) else SKIP
                reason = reason.removeprefix(NA_PREFIX)
            else:
                status = FAIL if report.when == "call" else ERROR
            if current is None or current.status in (PASS, ADVISORY):
                keep = current.reason if current and current.status == ADVISORY else ""
                self.results[report.nodeid] = Result(
                    host, check, ADVISORY if keep and status == PASS else status, reason or keep
                )

    def pytest_warning_recorded(
        self, warning_message: Any, when: str, nodeid: str, location: Any
    ) -> None:
        if not nodeid or not issubclass(warning_message.category, AdvisoryWarning):
            return
        host, check = self.ids.get(nodeid, ("?", nodeid))
        current = self.results.get(nodeid)
        message = str(warning_message.message)
        if current is None or current.status == PASS:
            self.results[nodeid] = Result(host, check, ADVISORY, message)
        elif current.status == ADVISORY:
            current.reason += f"; {message}"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.path.write_text(json.dumps([asdict(r) for r in self.results.values()], indent=1))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--verify-report", default=None, help="write per-check results as JSON")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("verify_report")
    if path:
        config.pluginmanager.register(Collector(path), "valkey-plans-verify-collector")


# --- for the CLI ---------------------------------------------------------------------------


def load(path: Path, host_names: dict[str, str]) -> list[Result]:
    """Results from the plugin's file, hosts renamed from testinfra ids to inventory names."""
    rows = [Result(**row) for row in json.loads(path.read_text())]
    for row in rows:
        row.host = host_names.get(row.host, row.host)
    return rows


def table(results: list[Result]) -> str:
    """One table, host x check, with the reason for anything but a pass."""
    header = Result("HOST", "CHECK", "RESULT", "REASON")
    rows = [header, *sorted(results, key=lambda r: (r.host, r.check))]
    width = [max(len(getattr(r, f)) for r in rows) for f in ("host", "check", "status")]
    lines = [
        f"{r.host:<{width[0]}}  {r.check:<{width[1]}}  {r.status.upper() if r is not header else r.status:<{width[2]}}  {r.reason}".rstrip()  # noqa: E501
        for r in rows
    ]
    failed = sum(r.status in FAILING for r in results)
    advisory = sum(r.status == ADVISORY for r in results)
    na = sum(r.status == NA for r in results)
    hosts = len({r.host for r in results})
    lines.append(
        f"{hosts} host(s), {len(results)} results: {failed} failed, {advisory} advisory, {na} n/a"
    )
    return "\n".join(lines)


def run(
    targets: list[Any],
    inventory: str,
    pytest_args: tuple[str, ...] = (),
    pytest_bin: str = "pytest",
    cwd: Path | None = None,
) -> tuple[int, list[Result], str]:
    """Run the packaged checks against every target in `cwd` (the project directory, for
    the inventory's group_data/); (pytest's exit code, results, pytest's output).
    """
    import os
    import subprocess
    import tempfile
    from importlib import resources

    import testinfra

    hosts = ",".join(t.testinfra_url for t in targets)
    names = {testinfra.get_host(t.testinfra_url).backend.get_pytest_id(): t.name for t in targets}
    package = resources.files("valkey_plans.verify")
    with (
        tempfile.TemporaryDirectory(prefix="valkey-plans-verify-") as tmp,
        resources.as_file(package.joinpath("pytest.ini")) as ini,
        resources.as_file(package.joinpath("checks")) as checks,
    ):
        report = Path(tmp) / "results.json"
        args = [
            pytest_bin,
            "-c",
            str(ini),
            "-p",
            "no:cacheprovider",
            "-p",
            "valkey_plans.verify.report",
            "-q",
            "--tb=short",
            "-rN",
            str(checks),
            f"--hosts={hosts}",
            f"--plan-inventory={Path(inventory).resolve()}",
            f"--verify-report={report}",
        ]
        if os.geteuid() != 0 and any(t.testinfra_url == "local://" for t in targets):
            args.append("--sudo")  # config files are 0640 valkey: reading them needs root
        proc = subprocess.run([*args, *pytest_args], cwd=cwd, capture_output=True, text=True)
        results = load(report, names) if report.exists() else []
    return proc.returncode, results, proc.stdout + proc.stderr
