"""testinfra wiring: each testinfra host gets the plan that the same inventory gives it.

    pytest checks/ --hosts=local:// --plan-inventory=inventories/dev.py

`valkey-plans verify INVENTORY` builds that command line for every host itself.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from functools import partial

import pytest

from valkey_plans.deploy.valkey_cli import cli_format
from valkey_plans.plan import Plan, topology
from valkey_plans.plan.inventory import load_targets
from valkey_plans.plan.render import instance_config


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--plan-inventory",
        default="inventories/dev.py",
        help="pyinfra inventory whose plans the hosts are checked against",
    )


#: Seconds an SSH connection shared by a host's checks outlives its last command.
SHARED_SSH_SECONDS = 15


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every check of an ssh:// host runs over one shared SSH connection.

    testinfra starts a new `ssh` for each command and asks for a ControlMaster, but
    without a ControlPath (its `--ssh-extra-args` never reaches the hosts) each command
    is a full handshake: about 0.25 s, hundreds of times per verify. The sockets live in
    a private directory, removed at the end of the run."""
    directory = None
    for item in items:
        callspec = getattr(item, "callspec", None)
        host = callspec.params.get("_testinfra_host") if callspec else None
        backend = getattr(host, "backend", None)
        if getattr(backend, "NAME", None) != "ssh" or backend.controlpath:
            continue
        if directory is None:
            directory = tempfile.mkdtemp(prefix="vp-ssh-")
            config.add_cleanup(partial(shutil.rmtree, directory, ignore_errors=True))
        # testinfra pastes it into a shell line that it %-formats: %%C becomes ssh's %C
        backend.controlpath = shlex.quote(directory.replace("%", "%%") + "/%%C")
        backend.controlpersist = SHARED_SSH_SECONDS


@pytest.fixture(scope="session")
def targets(pytestconfig: pytest.Config) -> dict:
    return {
        t.testinfra_url.split("?")[0]: t for t in load_targets(pytestconfig.option.plan_inventory)
    }


@pytest.fixture
def plan(host, targets) -> Plan:
    """The plan of the host under test, matched by its testinfra URL."""
    backend = host.backend
    key = "local://" if backend.NAME == "local" else f"ssh://{backend.host.name}"
    matches = [
        t for url, t in targets.items() if url == key or url.endswith(f"@{backend.host.name}")
    ]
    if not matches and backend.NAME != "local":
        matches = [t for url, t in targets.items() if backend.host.name in url]
    if not matches:
        pytest.fail(
            f"host {key} is not in the inventory given by --plan-inventory ({list(targets)})"
        )
    return matches[0].plan


@pytest.fixture(scope="session")
def plans(targets) -> list[Plan]:
    """Every plan of the inventory: replicas, clusters and sentinels span hosts."""
    return [t.plan for t in targets.values()]


@pytest.fixture
def rendered(plan, plans):
    """rendered(instance) -> (path the deploy compares, config text the plan renders).

    A config Sentinel manages is compared through the deploy's record of what it
    installed: after a failover Sentinel rewrites the live file, and that is its right.
    """
    watched = topology.sentinel_watched(plans)

    def expected(inst) -> tuple[str, str]:
        text = instance_config(plan, inst, replicaof=topology.replicaof(plans, inst))
        record = f"{plan.host}/{inst.name}" in watched
        return (inst.paths.config_record if record else inst.paths.config), text

    return expected


class Valkey:
    """valkey-cli on the host under test, reaching one instance over its unix socket.

    With ACLs on it logs in as the read-only `checks` user; the password is read on
    the host from the deploy's root-only file, so it never shows in a command line.
    The command line is the deploy's own (`cli_format`), and every path and argument
    goes through testinfra's quoting (`host.run(fmt, *args)`).
    """

    def __init__(self, host, instance, acl: bool) -> None:
        self.host = host
        self.socket = instance.paths.unixsocket
        self.auth_file = instance.paths.auth_file("checks") if acl else None

    def cli(self, *args: str) -> str:
        """valkey-cli's reply to `args`; it exits 0 on error replies too, 1 when unreachable."""
        command = cli_format(
            None, *args, socket=self.socket, auth_file=self.auth_file, user="checks"
        )
        return self.host.run_expect([0], *command).stdout

    def config(self, name: str) -> str:
        lines = self.cli("CONFIG", "GET", name).splitlines()
        assert len(lines) >= 2, f"CONFIG GET {name} gave {lines!r}: is the instance up?"
        return lines[1]


@pytest.fixture
def valkey(host, plan):
    """valkey(instance) -> a Valkey that talks to that instance on the host under test."""
    return lambda instance: Valkey(host, instance, plan.acl)
