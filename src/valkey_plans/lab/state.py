"""The lab's state file: what `up()` made, so `status()`, `down()` and the inventory agree.

Written atomically after every change, so a crash leaves a file that still names everything the
lab had created up to that point, which the next `up()` then removes.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from valkey_plans.lab import config


class Proc(BaseModel):
    """A process the lab started, identified by pid *and* start time so a reused pid is not ours."""

    pid: int
    start_time: int


class Host(BaseModel):
    """One lab host: a booted systemd container in its own network namespace."""

    name: str
    release: str
    address: str
    netns: str
    veth: str
    lower: str
    upper: str
    work: str
    root: str
    proc: Proc | None = None


class LabState(BaseModel):
    """Everything the lab currently owns."""

    lab_dir: str
    subnet: str = str(config.SUBNET)
    bridge: str = config.BRIDGE
    bridge_address: str = str(config.BRIDGE_ADDRESS)
    proxy_url: str = Field(default_factory=config.proxy_url)
    ssh_key: str
    known_hosts: str
    ssh_config: str
    bridge_created: bool = False
    proxy: Proc | None = None
    hosts: list[Host] = Field(default_factory=list)


def load(base: Path | None = None) -> LabState | None:
    """The saved state, or None when no lab has been brought up here."""
    path = config.state_file(base)
    if not path.exists():
        return None
    return LabState.model_validate_json(path.read_text())


def save(state: LabState) -> None:
    """Write the state atomically (rename over the old file)."""
    path = config.state_file(Path(state.lab_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)


def remove(base: Path | None = None) -> None:
    """Forget the lab (after `down()` removed everything it named)."""
    config.state_file(base).unlink(missing_ok=True)
