"""The library operation in a real `pyinfra @local` run against a real test server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from valkey_plans.client import functions
from valkey_plans.deploy.functions import ValkeyLibraryVersion, valkey_cli

PYINFRA = str(Path(sys.executable).parent / "pyinfra")


def deploy(tmp_path: Path, port: int) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "deploy.py"
    script.write_text(
        "from valkey_plans.deploy.functions import library_loaded\n"
        f"library_loaded(name='valkey_plans library', port={port},"
        f" path={str(tmp_path / 'lib' / 'valkey_plans.lua')!r})\n"
    )
    # pyinfra logs to stderr; fold it into stdout so assertions read one stream
    return subprocess.run(
        [PYINFRA, "@local", str(script), "-y"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def results_row(output: str) -> list[str]:
    """The operation's row of pyinfra's results table: name, hosts, success, error, no change."""
    row = next(line for line in output.splitlines() if line.strip().startswith("valkey_plans"))
    return row.split()[2:]


def test_loads_when_missing_or_different_and_second_run_is_noop(valkey_server, tmp_path) -> None:
    client = valkey_server.client()
    first = deploy(tmp_path, valkey_server.port)
    assert first.returncode == 0, first.stdout
    assert results_row(first.stdout)[-4:] == ["1", "1", "-", "-"]
    assert functions.require_version(client) == functions.library_version()
    assert (tmp_path / "lib" / "valkey_plans.lua").read_text() == functions.library_source()

    second = deploy(tmp_path, valkey_server.port)
    assert second.returncode == 0, second.stdout
    assert "No changes" in second.stdout
    assert results_row(second.stdout)[-4:] == ["1", "-", "-", "1"]

    client.function_load(
        functions.library_source().replace(
            f"local VERSION = '{functions.library_version()}'", "local VERSION = 'old'"
        ),
        replace=True,
    )
    third = deploy(tmp_path, valkey_server.port)
    assert third.returncode == 0, third.stdout
    assert results_row(third.stdout)[-4:] == ["1", "1", "-", "-"]
    assert functions.loaded_version(client) == functions.library_version()


def test_unreachable_instance_fails_the_deploy(valkey_server, tmp_path) -> None:
    port = valkey_server.port
    valkey_server.stop()
    run = deploy(tmp_path, port)
    assert run.returncode != 0
    assert "Could not connect" in run.stdout


def test_fact_reads_version_absent_or_fails_loudly() -> None:
    fact = ValkeyLibraryVersion()
    assert fact.process(["1"]) == "1"
    assert fact.process(["ERR Function not found"]) is None
    with pytest.raises(ValueError, match="NOAUTH"):
        fact.process(["NOAUTH Authentication required."])
    assert "-p 6390 FCALL_RO vp_version 0" in str(fact.command(6390))


def test_cli_builder_refuses_a_non_port() -> None:
    with pytest.raises(ValueError, match="allowed: an int 1..65535"):
        valkey_cli(70000, "PING")
