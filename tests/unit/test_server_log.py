"""Reading a Valkey log: only the current run's warnings count."""

from __future__ import annotations

from valkey_plans.verify.server_log import startup_warnings

BANNER = "{pid}:C 27 Nov 2026 02:{m}:00.000 * oO0OoO0OoO0Oo Valkey is starting oO0OoO0OoO0Oo"
AOF_ERROR = (
    "{pid}:M 27 Nov 2026 02:{m}:01.000 # == CRITICAL == This server is sending an error to"
    " its AOF-loading-client: '-NOPERM ACLs rules changed' after processing the command 'exec'"
)
OVERCOMMIT = "{pid}:M 27 Nov 2026 02:{m}:01.000 # WARNING Memory overcommit must be enabled!"
READY = "{pid}:M 27 Nov 2026 02:{m}:02.000 * Ready to accept connections tcp"


def run(pid: int, minute: int, *lines: str) -> list[str]:
    return [line.format(pid=pid, m=f"{minute:02}") for line in (BANNER, *lines, READY)]


def test_a_killed_run_s_warnings_do_not_count_against_the_next_run():
    killed = run(11, 10, AOF_ERROR)  # SIGKILLed: no "ready to exit" line
    clean = run(12, 20, OVERCOMMIT)
    assert startup_warnings("\n".join(killed + clean)) == []


def test_the_current_run_s_warnings_count():
    log = "\n".join(run(11, 10) + run(12, 20, AOF_ERROR))
    (warning,) = startup_warnings(log)
    assert "AOF-loading-client" in warning


def test_a_log_without_banner_is_read_whole():
    assert len(startup_warnings(AOF_ERROR.format(pid=1, m="00"))) == 1
