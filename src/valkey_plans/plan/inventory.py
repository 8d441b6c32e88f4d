"""Read a pyinfra inventory the way the pyinfra CLI does, for the checks and the CLI.

`valkey-plans verify` and the checks must see the same hosts, data and plans as the
deploy did, so they load the inventory with pyinfra's own loader instead of re-reading
the files themselves. Like pyinfra, the loader reads `group_data/` from the project
directory (the one pyinfra runs in: the current directory unless told otherwise) and
from the inventory file's own directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from valkey_plans.plan import topology
from valkey_plans.plan.model import Plan


@dataclass(frozen=True)
class Target:
    """One inventory host: its pyinfra name, its validated plan and its testinfra URL."""

    name: str
    plan: Plan
    testinfra_url: str


def hostspec(name: str, data: dict) -> str:
    """The testinfra host spec that reaches `name` over the connection pyinfra uses."""
    if name == "@local":
        return "local://"
    if name.startswith("@"):
        raise ValueError(f"{name}: only @local and SSH hosts can be verified")
    user = data.get("ssh_user")
    address = data.get("ssh_hostname") or name
    port = data.get("ssh_port")
    netloc = f"{quote(user)}@{address}" if user else address
    if port:
        netloc += f":{port}"
    query = {}
    if data.get("ssh_key"):
        query["ssh_identity_file"] = str(data["ssh_key"])
    if data.get("ssh_config_file"):
        query["ssh_config"] = str(data["ssh_config_file"])
    if user and user != "root":
        # The checks read root-only files (restic's password, auth files): a non-root
        # login runs them through sudo, as pyinfra's `_sudo` and `valkey-plans backup` do.
        query["sudo"] = "true"
    return f"ssh://{netloc}" + (f"?{urlencode(query)}" if query else "")


def load_targets(inventory: str | Path, project_dir: str | Path | None = None) -> list[Target]:
    """Every host of `inventory` with its plan; raises PlanError for a bad plan.

    `project_dir` holds the `group_data/` pyinfra would read: the current directory by
    default, as when pyinfra itself runs there.
    """
    # pyinfra's loader executes inventory and group data files inside a state context.
    with ctx_state.use(State()):
        inv = make_inventory(str(inventory), cwd=str(Path(project_dir or Path.cwd()).resolve()))
    targets = []
    for host in inv:
        data = host.data.dict()
        plan = Plan.from_host_data(host.name, data)
        targets.append(Target(host.name, plan, hostspec(host.name, data)))
    topology.validate(t.plan for t in targets)
    return targets
