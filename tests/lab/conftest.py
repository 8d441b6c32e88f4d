"""The lab fixture: four hosts (bookworm, trixie, bookworm, forky), booted once per session.

Three of Valkey 8, because scale-out needs them: a Valkey Cluster of 3 primaries with
their replicas on other hosts, or a primary, its replicas and 3 Sentinels, each survive
losing one host. One of forky (Valkey 9.1), so that every module that deploys to each
host covers the third release; the scale-out modules run once per `lane` (Valkey 8, then
forky, which grows the lab to three forky hosts). Tests that need one host per release
use `Lab.host(release)` (the first of that release).

The hosts are brought up fresh (any earlier lab is removed first) so that every session
starts from a just-booted Debian, and are removed at the end of the session unless
VALKEY_PLANS_LAB_KEEP=1 (to poke at them after a failure: `ssh -F LAB_DIR/ssh/config vplab1`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from valkey_plans import lab
from valkey_plans.lab import inventory, ssh
from valkey_plans.lab.state import Host, LabState

RELEASES = ("bookworm", "trixie", "bookworm", "forky")
TOOLS = ("debootstrap", "systemd-nspawn", "apt-cacher-ng", "ip", "ssh", "ssh-keygen")
#: Modules that change the lab's shape, in the order they run after every other lab test:
#: the Sentinel module's forky lane adds two forky hosts, the cluster tests grow each lane
#: by a host, the upgrades add six trixie hosts, the teardown tests take the lab down.
LAST_MODULES = (
    "test_sentinel_lab.py",
    "test_cluster_lab.py",
    "test_upgrade_lab.py",
    "test_lab_teardown.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the shape-changing modules last, so that no other lab test finds its hosts changed."""
    last = [i for i in items if i.path.name in LAST_MODULES and "tests/lab" in str(i.path)]
    last.sort(key=lambda i: LAST_MODULES.index(i.path.name))
    items[:] = [i for i in items if i not in last] + last


@dataclass
class Lab:
    """The running lab as tests see it: state, hosts by release, a way to run commands."""

    state: LabState

    def host(self, release: str) -> Host:
        return next(h for h in self.state.hosts if h.release == release)

    @property
    def hosts(self) -> list[Host]:
        return self.state.hosts

    def grow(self, releases: list[str]) -> list[Host]:
        """Add hosts of `releases` at the end of the lab (the running ones keep running)."""
        before = [h.release for h in self.hosts]
        self.state = lab.up(len(before) + len(releases), [*before, *releases])
        return self.hosts[len(before) :]

    def run(self, host: Host, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `command` as root on `host` over SSH (rc not checked)."""
        return ssh.ssh_run(self.state, host, command, timeout=timeout)

    def check(self, host: Host, command: str, timeout: float = 300) -> str:
        """Run `command` on `host`; fail the test naming host, command and output unless rc 0."""
        done = self.run(host, command, timeout)
        assert done.returncode == 0, (
            f"{host.name}: `{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout


def _require_lab_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, mounts, systemd-nspawn)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the lab needs {', '.join(missing)} (./vp setup installs them)")


@pytest.fixture(scope="session")
def lab_hosts() -> Iterator[Lab]:
    """Fresh hosts of RELEASES (bookworm, trixie, bookworm, forky), booted, over SSH."""
    _require_lab_tools()
    lab.down()
    state = lab.up(len(RELEASES), RELEASES)
    yield Lab(state)
    if not os.environ.get("VALKEY_PLANS_LAB_KEEP"):
        lab.down()


@pytest.fixture
def lab_run(lab_hosts: Lab) -> Callable[[Host, str], str]:
    """check(host, command) -> stdout, failing loudly on a non-zero exit."""
    return lab_hosts.check


@dataclass
class Lane:
    """The lab hosts one scale-out plan may span: Valkey 8 (bookworm and trixie) or forky's
    9.1 (`release`). The inventories take them from VALKEY_PLANS_LAB_RELEASE, which the
    `lane` fixture sets for its module, so every deploy, verify and check there sees it."""

    lab: Lab
    release: str | None

    @property
    def hosts(self) -> list[Host]:
        return inventory.lane(self.lab.state, self.release)

    def grow(self, count: int) -> list[Host]:
        """At least `count` hosts in this lane (new ones join the end of the lab)."""
        missing = count - len(self.hosts)
        if missing > 0:
            self.lab.grow([self.release or "trixie"] * missing)
        return self.hosts[:count]


@pytest.fixture(scope="module", params=[None, "forky"], ids=["valkey8", "forky"])
def lane(request: pytest.FixtureRequest, lab_hosts: Lab) -> Iterator[Lane]:
    """Each scale-out module once on Valkey 8 and once on forky's Valkey 9.1, with three
    hosts of the lane up and the lane named in the environment of every command it runs."""
    chosen = Lane(lab_hosts, request.param)
    chosen.grow(3)
    with pytest.MonkeyPatch.context() as patch:
        if chosen.release:
            patch.setenv(inventory.RELEASE_ENV, chosen.release)
        else:
            patch.delenv(inventory.RELEASE_ENV, raising=False)
        yield chosen
