"""The deploy's side of adopting a running Redis (README "Coming from Redis").

Before any change the deploy looks at who listens on each planned port: a redis-server
there without the instance's `adopt` setting stops the run, since moving someone's only
copy of their data is never implied. With `adopt`, until the host holds the record of a
finished adoption, the instance is converged on its spare port (same unit, same files),
the adoption package (`valkey_plans.adopt`, standard library only) is copied to the host
and run there; it ends with Valkey on the planned port, the final config in place and
the record written, so the next run finds everything as planned and changes nothing.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Callable, Generator
from importlib import resources
from io import StringIO
from pathlib import Path

from pydantic import SecretStr
from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import File
from pyinfra.operations import files

from valkey_plans.deploy.operations import checked_file
from valkey_plans.plan import Instance, Plan, topology
from valkey_plans.plan.adoption import redis_port, spare_port
from valkey_plans.plan.layout import DEBIAN
from valkey_plans.plan.render import instance_config
from valkey_plans.plan.secrets import ENV_PREFIX, SecretsError, check_location

#: Where the adoption package lives on the host (`python3 -m vp_adopt`).
HELPER_DIR = "/usr/local/lib/valkey-plans"
STATE_DIR = f"{DEBIAN.state}/adopt"
PROGRAM = re.compile(r'\("([^"]+)",pid=')


class ListeningPrograms(FactBase[dict[int, list[str]]]):
    """Programs listening on each TCP port, from `ss -Hltnp` (root sees every process)."""

    def command(self) -> str:
        return "ss -Hltnp 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[int, list[str]]:
        return parse_listeners(output)


def parse_listeners(lines: list[str]) -> dict[int, list[str]]:
    """`ss -Hltnp` lines -> {port: [program, ...]} (`users:(("redis-server",pid=9,fd=6))`)."""
    found: dict[int, list[str]] = {}
    for line in lines:
        parts = line.split()
        port = parts[3].rsplit(":", 1)[-1] if len(parts) > 3 else ""
        if port.isdigit():
            names = found.setdefault(int(port), [])
            names += [n for n in dict.fromkeys(PROGRAM.findall(line)) if n not in names]
    return found


def marker(inst: Instance) -> str:
    """The record of a finished adoption (JSON: method, pause, Redis's kept files)."""
    return f"{STATE_DIR}/{inst.name}.done.json"


def switch_file(inst: Instance) -> str:
    """Written by the adoption just before Redis lets go of its port: while it exists
    (a run killed during the switch) the next run finishes the switch."""
    return f"{STATE_DIR}/{inst.name}.switch.json"


def refusal(plan: Plan, listeners: dict[int, list[str]]) -> str | None:
    """Why this host must not be touched: a redis-server on a planned port without `adopt`."""
    for inst in plan.instances:
        if inst.adopt is None and "redis-server" in listeners.get(inst.port, []):
            return (
                f"host {plan.host}: redis-server is running on port {inst.port}, planned for"
                f" instance {inst.name}; to move its data into Valkey, add"
                f' "adopt": {{"from": "redis"}} to that instance (README "Coming from Redis");'
                " otherwise stop redis-server or plan another port. Nothing was changed"
            )
    return None


def redis_password(plan: Plan, secret: str | None) -> str | None:
    """Redis's requirepass from the secrets (environment first), read on this machine."""
    if secret is None:
        return None
    value = os.environ.get(f"{ENV_PREFIX}{secret.upper()}")
    if not value and plan.secrets_file:
        path = Path(plan.secrets_file).expanduser()
        try:
            check_location(path)
            value = json.loads(path.read_text()).get(secret)
        except (SecretsError, OSError, ValueError) as exc:
            raise DeployError(f"host {plan.host}: {exc}") from None
    if not value:
        raise DeployError(
            f"host {plan.host}: no secret {secret!r} for Redis's password; set"
            f" {ENV_PREFIX}{secret.upper()} or add it to the secrets file"
        )
    return value


Converge = Callable[[Instance], None]


def adopting(
    plan: Plan,
    plans: list[Plan],
    inst: Instance,
    converge: Converge,
    passwords: dict[str, SecretStr] | None = None,
) -> bool:
    """Run the adoption of `inst` if it is due; False: converge it the usual way."""
    if inst.adopt is None or host.get_fact(File, path=marker(inst)):
        return False
    rport = redis_port(inst.port, inst.adopt)
    listening = host.get_fact(ListeningPrograms).get(rport, [])
    if "redis-server" not in listening and not host.get_fact(File, path=switch_file(inst)):
        raise DeployError(
            f"host {plan.host}: instance {inst.name} has adopt set, but no redis-server"
            f" listens on port {rport} and {marker(inst)} (a finished adoption) is missing;"
            " start redis-server to adopt it, or remove adopt to deploy a fresh instance"
        )
    spare = inst.model_copy(update={"port": spare_port(inst.port, inst.adopt), "adopt": None})
    converge(spare)
    final = posixpath.join(DEBIAN.etc, f".valkey-{inst.name}.conf.adopted")
    checked_file(
        name=f"Final config of {inst.name} for after the switch (checked first)",
        content=instance_config(plan, inst, replicaof=topology.replicaof(plans, inst)),
        dest=final,
        checker=f"{HELPER_DIR}/check-config",
    )
    spec = _spec(plan, inst, final, passwords)
    _package()
    redis_adopted(
        name=f"Adopt Redis on port {rport} into {inst.name} (Redis keeps serving until the switch)",
        spec=spec,
        marker=marker(inst),
    )
    return True


def _spec(plan: Plan, inst: Instance, final: str, passwords: dict[str, SecretStr] | None) -> str:
    """The adoption's spec on the host (no secret in it), and Redis's password file."""
    files.directory(name="Adoption state directory", path=STATE_DIR, mode="700")
    password_file = None
    password = redis_password(plan, inst.adopt.password_secret if inst.adopt else None)
    if password is not None:
        password_file = f"{STATE_DIR}/{inst.name}.redis-password"
        checked_file(
            name=f"Redis's password for the adoption into {inst.name}",
            content=password,
            dest=password_file,
            user="root",
            group="root",
            mode="600",
        )
    admin = None
    if passwords:
        # The login valkey-cli uses too (written again, unchanged, with the others later).
        admin = inst.paths.auth_file("admin")
        for path in (DEBIAN.state, posixpath.dirname(posixpath.dirname(admin))):
            files.directory(name=f"Root-only directory {path}", path=path, mode="700")
        files.directory(
            name=f"Root-only {posixpath.dirname(admin)}", path=posixpath.dirname(admin), mode="700"
        )
        checked_file(
            name=f"Password of ACL user admin for the adoption into {inst.name}",
            content=passwords["admin"].get_secret_value(),
            dest=admin,
            user="root",
            group="root",
            mode="600",
        )
    spec = {
        "redis_port": redis_port(inst.port, inst.adopt),  # type: ignore[arg-type]
        "redis_password_file": password_file,
        "redis_user": inst.adopt.user if inst.adopt else None,
        "valkey_socket": inst.paths.unixsocket,
        "valkey_auth_file": admin,
        "port": inst.port,
        "databases": inst.databases,
        "final_config": final,
        "config": inst.paths.config,
        "marker": marker(inst),
        "state_file": f"{STATE_DIR}/{inst.name}.state.json",
        "switch_file": switch_file(inst),
        "log": f"{STATE_DIR}/{inst.name}.log",
    }
    dest = f"{STATE_DIR}/{inst.name}.spec.json"
    files.put(name=f"Adoption spec of {inst.name}", src=StringIO(json.dumps(spec)), dest=dest)
    return dest


def _package() -> None:
    """The adoption package, as `vp_adopt` beside the config checker."""
    files.directory(name="Adoption package directory", path=f"{HELPER_DIR}/vp_adopt")
    package = resources.files("valkey_plans.adopt")
    for item in sorted(package.iterdir(), key=lambda i: i.name):
        if item.name.endswith(".py"):
            files.put(
                name=f"Adoption package {item.name}",
                src=StringIO(item.read_text()),
                dest=f"{HELPER_DIR}/vp_adopt/{item.name}",
            )


@operation()
def redis_adopted(spec: str, marker: str) -> Generator[StringCommand, None, None]:
    """
    Run the adoption on the host, unless its record says it is done.

    + spec: the adoption's JSON spec on the host
    + marker: the record a finished adoption writes

    **Example:** ``redis_adopted(spec="/var/lib/valkey-plans/adopt/cache.spec.json", ...)``
    """
    if host.get_fact(File, path=marker):
        host.noop(f"adopted already ({marker})")
        return
    yield StringCommand("cd", HELPER_DIR, "&&", "python3", "-m", "vp_adopt", QuoteString(spec))
