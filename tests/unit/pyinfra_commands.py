"""The commands pyinfra would run on a host, given the facts it reports.

pyinfra's own operation tests work this way (facts in, commands out). For macOS laptops,
which this project cannot run, it is the only proof of the deploy. For Linux hosts, whose
every path runs for real in tests/deploy and tests/lab, it shows the exact command lines
built from a plan (for the quoting property test), without touching any host.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra.api import Config, FileUploadCommand, Inventory, State
from pyinfra.api.command import PyinfraCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_host, ctx_inventory, ctx_state
from pyinfra.facts.apt import AptSources
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import (
    Directory,
    File,
    FindInFile,
    FindLinks,
    Md5File,
    Sha1File,
    Sha256File,
)
from pyinfra.facts.server import LinuxDistribution, Os, TmpDir
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus
from pyinfra.facts.sysvinit import InitdStatus

from valkey_plans.deploy.adoption import ListeningPrograms
from valkey_plans.deploy.backup import ResticRepository
from valkey_plans.deploy.cluster import ClusterView, OpenSlots
from valkey_plans.deploy.cluster_upgrade import RunningVersion
from valkey_plans.deploy.facts import HasSystemd, RunningPid
from valkey_plans.deploy.functions import ValkeyLibraryVersion
from valkey_plans.deploy.handover import ReplicationRole
from valkey_plans.deploy.packages import HeldPackages

HostData = dict[str, Any]
Planned = list[tuple[str, list[PyinfraCommand]]]

BOOKWORM = {"name": "Debian", "major": 12, "release_meta": {"VERSION_CODENAME": "bookworm"}}
#: What a cluster node reports before any `--cluster create`: alone, no slots.
LONE_NODE = {"state": "fail", "slots_assigned": 0, "known_nodes": 1, "members": []}


def linux_facts(**overrides: Any) -> dict[type, Any]:
    """The facts of a fresh Debian 12 host with systemd (nothing of Valkey on it yet).

    `overrides` replace facts by class name, e.g. `HasSystemd=False`, `RunningPid=lambda
    pidfile: 4242`. Values that are callables are called with the fact's arguments; the
    defaults build their dicts and lists afresh per call, as pyinfra may update a fact.
    """
    facts: dict[type, Any] = {
        Os: "Linux",
        LinuxDistribution: lambda: dict(BOOKWORM),
        HasSystemd: True,
        AptSources: lambda: [],
        FindInFile: lambda **kwargs: [],
        DebPackages: lambda: {},
        TmpDir: "/tmp",
        SystemdStatus: lambda **kwargs: {},
        SystemdEnabled: lambda **kwargs: {},
        InitdStatus: lambda: {},
        FindLinks: lambda **kwargs: [],
        Directory: lambda path: None,
        File: lambda path: None,
        Sha1File: lambda path: None,
        Md5File: lambda path: None,
        Sha256File: lambda path: None,
        RunningPid: lambda pidfile: None,
        ValkeyLibraryVersion: lambda **kwargs: None,
        ClusterView: lambda **kwargs: dict(LONE_NODE),
        OpenSlots: lambda **kwargs: {},
        HeldPackages: lambda: [],
        ReplicationRole: lambda **kwargs: None,
        RunningVersion: lambda **kwargs: None,
        ResticRepository: lambda **kwargs: False,
        ListeningPrograms: {},
    }
    by_name = {cls.__name__: cls for cls in facts}
    for name, value in overrides.items():
        facts[by_name[name]] = value
    return facts


def planned_operations(
    deploy: Callable[[], None],
    facts: Mapping[type, Any],
    host_data: HostData,
    host_name: str = "laptop.local",
    others: Sequence[tuple[str, HostData]] = (),
    every_branch: bool = False,
) -> Planned:
    """(operation name, pyinfra commands) for `host_name`, as on a run with `facts`.

    `others` are the inventory's other hosts (name, data): the deploy validates the
    whole inventory, and replicas, clusters and sentinels span hosts. `every_branch`
    generates every operation's commands whatever its `_if=` says (a restart after a
    changed config, ACL LOAD after a changed ACL file), so that those show too.
    """
    inventory = Inventory(([(host_name, host_data), *others], {}))
    state = State(inventory=inventory, config=Config())
    host = inventory.get_host(host_name)

    def get_fact(cls: type, *args: Any, **kwargs: Any) -> Any:
        if cls not in facts:
            raise KeyError(f"the test gives no value for fact {cls.__module__}.{cls.__name__}")
        value = facts[cls]
        return value(**kwargs) if callable(value) else value

    host.get_fact = get_fact  # the facts the host would report; nothing here connects
    with ctx_inventory.use(inventory):
        add_deploy(state, deploy, host=host)
    # pyinfra evaluates `_if=` only while executing
    state.is_executing = not every_branch
    planned = []
    with ctx_state.use(state), ctx_host.use(host):
        for op_hash in state.get_op_order():
            planned.append(_execute(state, host, op_hash))
    return planned


def planned_commands(
    deploy: Callable[[], None],
    facts: Mapping[type, Any],
    host_data: HostData,
    host_name: str = "laptop.local",
    others: Sequence[tuple[str, HostData]] = (),
    every_branch: bool = False,
) -> list[tuple[str, list[str]]]:
    """(operation name, shell commands) in execution order, as on a run with `facts`."""
    planned = planned_operations(deploy, facts, host_data, host_name, others, every_branch)
    return [(name, [shell_text(c) for c in commands]) for name, commands in planned]


def shell_text(command: object) -> str:
    """The command line a host's shell gets (an upload shows as `FileUploadCommand(...)`)."""
    return command.get_raw_value() if hasattr(command, "get_raw_value") else repr(command)


def upload_destinations(planned: Planned) -> list[str]:
    """Where every upload of `planned` writes (the connector moves files there itself)."""
    return [c.dest for _, commands in planned for c in commands if isinstance(c, FileUploadCommand)]


def installed_hashes(planned: Planned) -> dict[str, str]:
    """sha256 of each file that `checked_file` installs in `planned`, by its final path:
    what Sha256File reports on a host that ran them (to plan the rerun of that host)."""
    hashes = {}
    for _, commands in planned:
        for command in commands:
            if isinstance(command, FileUploadCommand) and isinstance(command.src, StringIO):
                directory, name = posixpath.split(command.dest)
                if name.startswith(".") and name.endswith(".candidate"):
                    final = posixpath.join(directory, name[1 : -len(".candidate")])
                    digest = hashlib.sha256(command.src.getvalue().encode())
                    hashes[final] = digest.hexdigest()
    return hashes


def _execute(state: State, host: Any, op_hash: str) -> tuple[str, list[PyinfraCommand]]:
    """Generate one operation's commands and mark it done, so later `_if=` checks see it."""
    op_data = state.get_op_data_for_host(host, op_hash)
    commands = list(op_data.command_generator())
    op_data.operation_meta.set_complete(True, [shell_text(c) for c in commands], CommandOutput([]))
    return ", ".join(state.op_meta[op_hash].names), commands


def uploaded(planned: Sequence[tuple[Any, Sequence[Any]]]) -> dict[str, str]:
    """dest -> content of every file the planned operations upload from memory."""
    return {
        c.dest: c.src.getvalue()
        for _, commands in planned
        for c in commands
        if isinstance(c, FileUploadCommand) and isinstance(c.src, StringIO)
    }
