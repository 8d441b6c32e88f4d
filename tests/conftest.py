"""Shared fixtures: real valkey-server processes, and the rule that CI never skips."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.valkey_server import ValkeyProcess
from valkey_plans.client import functions

IN_CI = bool(os.environ.get("CI"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skipped test is a failure: tests that need root or the lab must run there."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which is an error: {reason}"


@pytest.fixture
def valkey_factory(tmp_path: Path) -> Iterator[Callable[..., ValkeyProcess]]:
    """Start real valkey-server processes on free ports; all are stopped after the test."""
    started: list[ValkeyProcess] = []

    def start(name: str = "valkey", **config: str) -> ValkeyProcess:
        proc = ValkeyProcess(tmp_path / f"{name}-{len(started)}", **config).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def valkey_server(valkey_factory: Callable[..., ValkeyProcess]) -> ValkeyProcess:
    """One plain real valkey-server with 16 dbs on a free port."""
    return valkey_factory()


@pytest.fixture(scope="module")
def cache_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyProcess]:
    """One cache-role server per module (4 dbs, volatile-lru), the library loaded the way
    the deploy loads it (starting one per test is too slow for the state machines)."""
    server = ValkeyProcess(
        tmp_path_factory.mktemp("cache"), databases="4", maxmemory_policy="volatile-lru"
    ).start()
    functions.ensure_loaded(server.client())
    yield server
    server.stop()
