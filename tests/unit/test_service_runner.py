"""The service runner (deploy/service.py): each init system's commands, facts in.

For every runner: a service that is down gets started (and enabled under systemd) and
not restarted; a running one is restarted only when one of the given operations
changed; nothing at all happens when nothing changed. The stops share one retry policy.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import pytest
from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.context import ctx_state

from tests.unit.pyinfra_commands import linux_facts, planned_commands
from valkey_plans.deploy.facts import BrewServiceRunning
from valkey_plans.deploy.service import (
    STOP_RETRY,
    SYSTEMD_RETRY,
    Init,
    Service,
    init_system,
    service_runner,
)

UNIT = "valkey-server@cache.service"
CACHE = Service(
    label="valkey-server cache",
    config="/etc/valkey/valkey-cache.conf",
    pidfile="/run/valkey-cache/valkey-server.pid",
    unit=UNIT,
    run_dir="/run/valkey-cache",
    socket="/run/valkey-cache/valkey-server.sock",
)
MAC_SERVER = "/opt/homebrew/bin/valkey-server"
HOSTED = Service(
    label="valkey-server hosted",
    config="/opt/homebrew/etc/valkey/valkey-hosted.conf",
    pidfile="/opt/homebrew/var/run/valkey-hosted/valkey-server.pid",
    server=MAC_SERVER,
)
SDD_STOP = (
    f"start-stop-daemon --stop --quiet --oknodo --retry {STOP_RETRY}"
    " --pidfile /run/valkey-cache/valkey-server.pid --exec /usr/bin/valkey-server"
)
SDD_START = (
    "install -d -o valkey -g valkey -m 2755 /run/valkey-cache && start-stop-daemon --start"
    " --quiet --chuid valkey:valkey --pidfile /run/valkey-cache/valkey-server.pid"
    " --exec /usr/bin/valkey-server -- /etc/valkey/valkey-cache.conf --daemonize yes "
    " && i=0; while [ ! -S /run/valkey-cache/valkey-server.sock ]"
)
#: Every restart of an instance waits until it is settled, before and after.
SETTLED = "i=0; until valkey-cli -s /run/valkey-cache/valkey-server.sock INFO 2>/dev/null"
MAC_START = f"{MAC_SERVER} {HOSTED.config} --daemonize yes"
MAC_STOP = (
    "kill 4242 && i=0 && while kill -0 4242 2>/dev/null; do i=$((i+1));"
    " [ $i -eq 600 ] && kill -KILL 4242; [ $i -gt 650 ] &&"
    " { echo 'valkey-server did not stop' >&2; exit 1; }; sleep 0.1; done"
)


@operation()
def touched(change: bool) -> Generator[str, None, None]:
    """Stands for a config file operation: changes the host or not."""
    if change:
        yield "true"
    else:
        host.noop("unchanged")


def facts_for(init: Init, running: bool) -> dict[type, Any]:
    """What a host with this init system reports, its service running or not."""
    status = lambda **kwargs: {s: running for s in kwargs["services"]}  # noqa: E731
    facts = linux_facts(
        SystemdStatus=status,
        SystemdEnabled=status,
        RunningPid=lambda pidfile: 4242 if running else None,
    )
    facts[BrewServiceRunning] = lambda formula: running
    return facts


#: (init, service, start commands, restart commands of a running service)
RUNNERS = [
    pytest.param(
        Init.SYSTEMD,
        CACHE,
        [f"systemctl start {UNIT}", f"systemctl enable {UNIT}"],
        [SETTLED, f"timeout 300 systemctl restart {UNIT}", SETTLED],
        id="systemd",
    ),
    pytest.param(
        Init.START_STOP_DAEMON,
        CACHE,
        [SDD_START],
        [SETTLED, f"{SDD_STOP} && {SDD_START}", SETTLED],
        id="sdd",
    ),
    pytest.param(
        Init.BREW,
        Service(label="valkey-server cache", config="/c", pidfile="/p", formula="valkey"),
        ["brew services start valkey"],
        ["brew services restart valkey"],
        id="brew-services",
    ),
    pytest.param(Init.BREW, HOSTED, [MAC_START], [MAC_STOP, MAC_START], id="background"),
]


def converge(init: Init, service: Service, config_changed: bool) -> Callable[[], None]:
    """A deploy: a config operation, then the service running and restarted if it changed."""

    def deploy() -> None:
        config = touched(name="config", change=config_changed)
        runner = service_runner(service, init)
        runner.running()
        runner.restart_if([config, None])

    return deploy


def service_commands(init: Init, service: Service, running: bool, changed: bool) -> list:
    """Commands of the start and the restart operation (the config's dropped)."""
    planned = planned_commands(converge(init, service, changed), facts_for(init, running), {})
    return [commands for _, commands in planned[1:]]


def starts_with(commands: list[str], expected: list[str]) -> bool:
    """The sdd start ends with a socket wait; compare each command by its expected start."""
    return len(commands) == len(expected) and all(
        c.startswith(e) for c, e in zip(commands, expected, strict=True)
    )


@pytest.mark.parametrize(("init", "service", "start", "restart"), RUNNERS)
def test_a_service_that_is_down_is_started_not_restarted(init, service, start, restart):
    for changed in (False, True):  # just started: it read the new config already
        started, restarted = service_commands(init, service, running=False, changed=changed)
        assert starts_with(started, start), started
        assert restarted == [], restarted


@pytest.mark.parametrize(("init", "service", "start", "restart"), RUNNERS)
def test_a_running_service_restarts_only_when_its_config_changed(init, service, start, restart):
    started, restarted = service_commands(init, service, running=True, changed=True)
    assert started == []
    assert starts_with(restarted, restart), restarted


@pytest.mark.parametrize(("init", "service", "start", "restart"), RUNNERS)
def test_nothing_changed_nothing_happens(init, service, start, restart):
    assert service_commands(init, service, running=True, changed=False) == [[], []]


@pytest.mark.parametrize("init", [Init.SYSTEMD, Init.START_STOP_DAEMON])
@pytest.mark.parametrize("cluster_node", [False, True])
def test_every_instance_restarts_settled_bounded_and_one_host_at_a_time(init, cluster_node):
    node = Service(
        label="valkey-server n0",
        config="/etc/valkey/valkey-n0.conf",
        pidfile="/run/valkey-n0/valkey-server.pid",
        unit="valkey-server@n0.service",
        run_dir="/run/valkey-n0",
        socket="/run/valkey-n0/valkey-server.sock",
        cluster_node=cluster_node,
        auth_file="/var/lib/valkey-plans/auth/n0/admin",
    )
    arguments = {}

    def deploy() -> None:
        config = touched(name="config", change=True)
        runner = service_runner(node, init)
        runner.running()
        restart = runner.restart_if([config])
        state = ctx_state.get()  # _serial is the operation's, _retries each host's
        arguments.update(state.op_meta[restart._hash].global_arguments)
        arguments.update(state.get_op_data_for_host(host, restart._hash).global_arguments)

    planned = planned_commands(deploy, facts_for(init, running=True), {})
    name, (before, restart, after) = planned[-1]
    assert "settled, one host at a time" in name
    if init is Init.SYSTEMD:
        assert restart == "timeout 300 systemctl restart valkey-server@n0.service"
        assert {k: arguments[k] for k in SYSTEMD_RETRY} == SYSTEMD_RETRY
    else:
        assert restart.startswith(f"start-stop-daemon --stop --quiet --oknodo --retry {STOP_RETRY}")
    assert ("cluster_state:ok" in before) is cluster_node
    assert "-s /run/valkey-n0/valkey-server.sock INFO" in before
    assert "[ $i -gt 240 ]" in before and "[ $i -gt 600 ]" in after  # 120 s, then 300 s
    assert after == before.replace("240", "600").replace("120 s", "300 s")
    assert 'REDISCLI_AUTH="$(cat /var/lib/valkey-plans/auth/n0/admin)"' in before
    assert arguments["_serial"] is True


def test_the_runner_follows_the_hosts_init_system():
    chosen = {}

    def deploy() -> None:
        chosen["init"] = init_system()

    for facts, expected in (
        (linux_facts(), Init.SYSTEMD),
        (linux_facts(HasSystemd=False), Init.START_STOP_DAEMON),
        (
            {**linux_facts(), **{k: "Darwin" for k in linux_facts() if k.__name__ == "Os"}},
            Init.BREW,
        ),
    ):
        planned_commands(deploy, facts, {})
        assert chosen["init"] is expected


def test_restart_if_needs_the_start_first():
    runner = service_runner(CACHE, Init.SYSTEMD)
    with pytest.raises(RuntimeError, match="running\\(\\) before restart_if"):
        runner.restart_if([])


def test_every_stop_is_a_noop_when_down_and_uses_the_one_retry_policy():
    stops = {init: service_runner(CACHE, init).stop().get_raw_value() for init in Init}
    assert stops[Init.SYSTEMD] == f"systemctl stop {UNIT}"
    assert stops[Init.START_STOP_DAEMON] == SDD_STOP
    assert STOP_RETRY == "TERM/60/KILL/5"
    brew = Service(label="x", config="/c", pidfile="/p", formula="valkey")
    assert service_runner(brew, Init.BREW).stop().get_raw_value() == "brew services stop valkey"
    assert stops[Init.BREW].startswith(f"pid=$(cat {CACHE.pidfile} 2>/dev/null) &&")


def test_the_macos_stop_ends_a_process_and_is_a_noop_without_one(tmp_path):
    """The shell of Background.stop() run for real, on a `sleep` standing for valkey-server."""
    pidfile = tmp_path / "valkey.pid"
    stop = service_runner(Service(label="x", config="/c", pidfile=str(pidfile)), Init.BREW).stop()
    assert isinstance(stop, StringCommand)
    done = subprocess.run(["sh", "-c", stop.get_raw_value()], capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr
    sleeper = subprocess.Popen(["sleep", "60"])
    # reap it the moment it dies, as its real parent would: a zombie still answers kill -0
    reaper = threading.Thread(target=sleeper.wait)
    reaper.start()
    pidfile.write_text(str(sleeper.pid))
    started = time.monotonic()
    try:
        done = subprocess.run(["sh", "-c", stop.get_raw_value()], capture_output=True, timeout=40)
    finally:
        sleeper.kill()
        reaper.join()
    assert done.returncode == 0, done.stderr
    assert sleeper.returncode == -signal.SIGTERM, "stopped by SIGTERM, within its grace period"
    assert time.monotonic() - started < 5
