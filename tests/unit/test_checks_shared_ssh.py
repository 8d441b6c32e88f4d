"""verify's checks reach each ssh:// host over one shared SSH connection.

testinfra asks ssh for a ControlMaster but names no ControlPath, so without the checks'
hook every command is a new handshake. These tests read the ssh command line testinfra
would run (no host is contacted).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any

import testinfra

from valkey_plans.verify.checks import conftest


@dataclass
class Item:
    callspec: Any


@dataclass
class CallSpec:
    params: dict[str, Any]


@dataclass
class Config:
    cleanups: list[Any] = field(default_factory=list)

    def add_cleanup(self, func: Any) -> None:
        self.cleanups.append(func)


def ssh_line(host: Any) -> list[str]:
    cmd, args = host.backend._build_ssh_command("true")
    return shlex.split(host.backend.quote(" ".join(cmd), *args))


def test_every_ssh_host_gets_one_control_path_in_a_private_directory():
    hosts = [testinfra.get_host(f"ssh://root@192.0.2.{n}?controlpersist=60") for n in (7, 8)]
    local = testinfra.get_host("local://")
    items = [Item(CallSpec({"_testinfra_host": h})) for h in [*hosts, hosts[0], local]]
    items.append(Item(None))  # a check without a host
    config = Config()

    conftest.pytest_collection_modifyitems(config, items)  # type: ignore[arg-type]

    paths = []
    for host in hosts:
        line = ssh_line(host)
        assert (
            "ControlMaster=auto" in line
            and f"ControlPersist={conftest.SHARED_SSH_SECONDS}s" in line
        )
        (path,) = [a.split("=", 1)[1] for a in line if a.startswith("ControlPath=")]
        assert path.endswith("/%C"), path
        paths.append(path)
    directory = os.path.dirname(paths[0])
    assert {os.path.dirname(p) for p in paths} == {directory}
    assert os.stat(directory).st_mode & 0o777 == 0o700, "others could plant a socket there"
    assert len(config.cleanups) == 1
    config.cleanups[0]()
    assert not os.path.exists(directory)
