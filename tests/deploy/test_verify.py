"""`valkey-plans verify` on a real deploy: passes when right, fails on exactly the broken check.

One throwaway plan (instances `vpv-cache`/`vpv-primary` on free ports, ACLs on) is
deployed once for the module; each test breaks one thing
behind the deploy's back, runs `valkey-plans verify --json`, asserts that exactly the
matching check failed, and repairs what it broke.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import valkey

from tests.deploy.conftest import _teardown, write_inventory
from tests.deploy.pyinfra_run import PROJECT_DIR, pyinfra, valkey_plans
from tests.deploy.test_local_deploy import SUDO, read_root_file, root_output
from tests.valkey_server import free_port
from valkey_plans.client import functions
from valkey_plans.deploy.service import _daemon_stop, _env_daemon_start
from valkey_plans.keys import new_key
from valkey_plans.plan.inventory import load_targets
from valkey_plans.plan.layout import DEBIAN, EXPORTER_PROGRAM, exporter_paths
from valkey_plans.plan.secrets import load_secrets

NAMES = ("vpv-cache", "vpv-primary")


class Deployed:
    """The deployed throwaway plan, with an admin client per db of its cache instance."""

    def __init__(self, inventory: Path, ports: dict[str, int], secrets: Path) -> None:
        self.inventory = inventory
        self.ports = ports
        password = load_secrets(str(secrets))["admin"].get_secret_value()
        self.admin = {
            db: valkey.Valkey(port=ports["vpv-cache"], db=db, username="admin", password=password)
            for db in range(4)
        }

    def verify(self) -> tuple[int, dict[str, dict]]:
        run = valkey_plans("verify", "--json", str(self.inventory))
        start = run.output.find("[")
        assert start >= 0, f"no JSON from verify:\n{run.output[-3000:]}"
        rows = json.loads(run.output[start : run.output.rindex("]") + 1])
        return run.returncode, {row["check"]: row for row in rows}

    def failing(self) -> dict[str, str]:
        code, rows = self.verify()
        failed = {c: r["reason"] for c, r in rows.items() if r["status"] in ("fail", "error")}
        assert (code != 0) == bool(failed), (code, rows)
        return failed


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("verify")
    ports = {name: free_port() for name in NAMES}
    # The dev plan's secrets: the deploy keeps one host-wide copy of the checks/admin
    # passwords for valkey-cli (layout auth_dir), so a plan with other passwords would
    # lock the dev instances' host-side checks out until the next `./vp up`.
    dev = load_targets(PROJECT_DIR / "inventories" / "dev.py", PROJECT_DIR)[0].plan
    secrets = Path(str(dev.secrets_file))
    instances = [
        {"name": "vpv-cache", "role": "cache", "port": ports["vpv-cache"], "maxmemory": "32mb"},
        {
            "name": "vpv-primary",
            "role": "primary",
            "port": ports["vpv-primary"],
            "maxmemory": "32mb",
        },
    ]
    app = {
        "name": "vpv",
        "env_dir": str(tmp / "app"),
        "hosted_instance": "vpv-primary",
        "cache_instance": "vpv-cache",
    }
    inventory = write_inventory(
        tmp / "vpv.py",
        instances,
        app,
        valkey_acl=True,
        valkey_secrets_file=str(secrets),
        valkey_secrets_generate=True,
    )
    try:
        run = pyinfra(inventory)
        assert run.returncode == 0, run.output[-3000:]
        yield Deployed(inventory, ports, secrets)
    finally:
        _teardown(list(NAMES))


#: The checks that cannot apply to this plan (no replica, no cluster node, no external
#: hosted tier, backups off): N/A, not PASS.
NOT_APPLICABLE = {
    "test_cluster_state_ok_and_every_slot_served",
    "test_cluster_members_are_the_planned_nodes",
    "test_every_primary_has_its_replicas_on_other_hosts",
    "test_replicas_linked_and_close_behind_their_primary",
    "test_hosted_endpoint_reachable",
    "test_hosted_tls_verifies_certificate",
    "test_hosted_workloads_log_in",
    "test_hosted_canary_key_round_trip",
    "test_hosted_pubsub_reaches_subscriber",
    "test_backup_timers_active",
    "test_backups_reachable_and_fresh",
    "test_backups_leave_the_host",
}


def test_verify_passes_on_a_fresh_deploy_and_kernel_findings_are_advisory(deployed):
    code, rows = deployed.verify()
    assert code == 0, rows
    assert {r["status"] for r in rows.values()} <= {"pass", "advisory", "n/a"}, rows
    not_applicable = {c for c, r in rows.items() if r["status"] == "n/a"}
    assert not_applicable == NOT_APPLICABLE, rows
    assert all(rows[c]["reason"] for c in not_applicable), rows
    assert rows["test_kernel_settings_valkey_warns_about"]["status"] in ("pass", "advisory")
    expected = {
        "test_keyspace_follows_the_plan",
        "test_cache_lru_bound_and_ttls_hold_live",
        "test_functions_library_loaded_on_cache_instances",
        "test_live_persistence_acl_and_tls_match_rendered_config",
        "test_logs_free_of_startup_warnings_the_plan_can_fix",
        "test_live_config_matches_plan",
    }
    assert expected <= set(rows)


def test_table_names_host_check_result_and_reason(deployed):
    deployed.admin[1].set("cache:user:42", "x", ex=600)
    try:
        run = valkey_plans("verify", str(deployed.inventory))
    finally:
        deployed.admin[1].delete("cache:user:42")
    assert run.returncode != 0
    line = next(x for x in run.output.splitlines() if "test_keyspace_follows_the_plan" in x)
    assert line.startswith("@local") and " FAIL " in line and "cache:user:42" in line


def _config_set(deployed: Deployed, name: str, value: str) -> Callable[[], None]:
    old = deployed.admin[0].config_get(name)[name]
    deployed.admin[0].config_set(name, value)
    return lambda: deployed.admin[0].config_set(name, old)


def _key(deployed: Deployed, db: int, *command: str) -> Callable[[], None]:
    deployed.admin[db].execute_command(*command)
    return lambda: deployed.admin[db].delete(command[1])


def _chmod(path: str, mode: str) -> Callable[[], None]:
    root_output("chmod", mode, path)
    return lambda: root_output("chmod", "640", path)


def _unload_library(deployed: Deployed) -> Callable[[], None]:
    deployed.admin[0].function_delete(functions.LIBRARY_NAME)
    return lambda: functions.ensure_loaded(deployed.admin[0])


def _library_that_does_not_evict(deployed: Deployed) -> Callable[[], None]:
    source = functions.library_source()
    broken = source.replace("local excess = redis.call('ZCARD', zset) - cap", "local excess = 0")
    deployed.admin[0].function_load(broken, replace=True)
    return lambda: deployed.admin[0].function_load(source, replace=True)


def _log_warning(deployed: Deployed) -> Callable[[], None]:
    log = "/var/log/valkey/valkey-server-vpv-cache.log"
    size = int(root_output("stat", "-c", "%s", log))  # /var/log/valkey is not ours to read
    line = "1:M 01 Jan 2026 00:00:00.000 # WARNING: maxmemory is set to something odd\n"
    root_output("sh", "-c", f"printf '%s' '{line}' >> {log}")
    return lambda: root_output("truncate", "-s", str(size), log)


def _restart_exporter(name: str) -> None:
    """Restart the deploy's exporter of `name` the way its init system runs it."""
    if Path("/run/systemd/system").is_dir():
        root_output("systemctl", "restart", f"valkey-plans-exporter@{name}")
        return
    paths = exporter_paths(DEBIAN, name)
    stop = _daemon_stop(paths.pidfile, EXPORTER_PROGRAM)
    start = _env_daemon_start(
        EXPORTER_PROGRAM, paths.env_file, paths.pidfile, paths.run_dir, "prometheus"
    )
    root_output("sh", "-c", f"{stop.get_raw_value()} && {start.get_raw_value()}")


def _wrong_exporter_password(deployed: Deployed) -> Callable[[], None]:
    env = exporter_paths(DEBIAN, "vpv-cache").env_file
    original = read_root_file(env)
    wrong = re.sub(
        r"^REDIS_PASSWORD=.*$", "REDIS_PASSWORD='wrong-0123456789abcdef'", original, flags=re.M
    )
    subprocess.run([*SUDO, "tee", env], input=wrong, text=True, check=True, capture_output=True)
    _restart_exporter("vpv-cache")

    def repair() -> None:
        subprocess.run(
            [*SUDO, "tee", env], input=original, text=True, check=True, capture_output=True
        )
        _restart_exporter("vpv-cache")

    return repair


FAULTS: dict[str, tuple[Callable[[Deployed], Callable[[], None]], str, str]] = {
    "policy": (
        lambda d: _config_set(d, "maxmemory-policy", "allkeys-lru"),
        "test_live_config_matches_plan",
        "allkeys-lru",
    ),
    "no-snapshots": (
        lambda d: _config_set(d, "save", ""),
        "test_live_persistence_acl_and_tls_match_rendered_config",
        "save",
    ),
    "world-readable-config": (
        lambda d: _chmod("/etc/valkey/valkey-vpv-cache.conf", "644"),
        "test_config_files_owned_by_valkey_and_not_world_readable",
        "0o644",
    ),
    "library-unloaded": (
        _unload_library,
        "test_functions_library_loaded_on_cache_instances",
        "no Functions",
    ),
    "library-not-evicting": (
        _library_that_does_not_evict,
        "test_cache_lru_bound_and_ttls_hold_live",
        "exact LRU broken",
    ),
    "stray-keys-style-name": (
        lambda d: _key(d, 1, "SET", "cache:user:42", "x", "EX", "600"),
        "test_keyspace_follows_the_plan",
        "malformed-name",
    ),
    "session-without-ttl": (
        lambda d: _key(d, 2, "HSET", new_key("ses"), "owner", "x"),
        "test_keyspace_follows_the_plan",
        "missing-ttl",
    ),
    "log-warning": (
        _log_warning,
        "test_logs_free_of_startup_warnings_the_plan_can_fix",
        "maxmemory",
    ),
    "exporter-wrong-password": (
        _wrong_exporter_password,
        "test_exporters_up_and_serving_their_instance",
        "redis_up 0",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_verify_fails_on_exactly_the_broken_check(deployed, fault):
    breaks, check, reason = FAULTS[fault]
    repair = breaks(deployed)
    try:
        failed = deployed.failing()
    finally:
        repair()
    assert set(failed) == {check}, failed
    assert reason in failed[check], failed[check]
