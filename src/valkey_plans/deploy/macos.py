"""macOS dev laptops: Homebrew's valkey, the cache instance under `brew services`.

`brew services` manages one service per formula, so it runs the plan's cache
instance (Homebrew's `etc/valkey.conf` includes that instance's config); any other
instance (the dev plan's local stand-in for the hosted tier) runs daemonized from
its own config with a pidfile. Nothing here can run on this project's Linux CI:
tests/unit/test_macos_commands.py checks the commands pyinfra would run, given the
facts a Mac would report.
"""

from __future__ import annotations

from collections.abc import Generator
from io import StringIO

from pydantic import SecretStr
from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation
from pyinfra.facts.server import User
from pyinfra.operations import brew, files

from valkey_plans.deploy import app_settings
from valkey_plans.deploy.facts import RunningPid
from valkey_plans.deploy.operations import checked_file
from valkey_plans.plan import Instance, Plan
from valkey_plans.plan.layout import homebrew
from valkey_plans.plan.render import TEMPLATE_DIR, instance_config

FORMULA = "valkey"


class BrewPrefix(FactBase[str]):
    """Homebrew's prefix: /opt/homebrew on Apple silicon, /usr/local on Intel."""

    def command(self) -> str:
        return "brew --prefix"

    def process(self, output: list[str]) -> str:
        return output[0].strip()


class BrewServiceRunning(FactBase[bool]):
    """Whether `brew services` runs `formula`.

    + formula: the Homebrew formula
    """

    def command(self, formula: str) -> StringCommand:
        return StringCommand("brew services list | awk '$1 ==", QuoteString(formula), "{print $2}'")

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "started"


@operation()
def brew_service(
    formula: str, restarted: bool = False
) -> Generator[StringCommand | str, None, None]:
    """
    Keep a formula's service started with `brew services` (restart it on request).

    + formula: Homebrew formula whose service to run
    + restarted: restart it if already started

    **Example:**

    .. code:: python

        brew_service(name="valkey under brew services", formula="valkey")
    """
    if not host.get_fact(BrewServiceRunning, formula=formula):
        yield StringCommand("brew services start", QuoteString(formula))
    elif restarted:
        yield StringCommand("brew services restart", QuoteString(formula))
    else:
        host.noop(f"brew service {formula} is started")


@operation()
def background_server(
    server: str, config: str, pidfile: str, restarted: bool = False
) -> Generator[StringCommand, None, None]:
    """
    Keep one valkey-server running from its config, daemonized with a pidfile.

    + server: path of valkey-server
    + config: the instance config
    + pidfile: the pidfile the config names
    + restarted: restart it if it runs

    **Example:**

    .. code:: python

        background_server(
            server="/opt/homebrew/bin/valkey-server",
            config="/opt/homebrew/etc/valkey/valkey-hosted.conf",
            pidfile="/opt/homebrew/var/run/valkey-hosted/valkey-server.pid",
        )
    """
    pid = host.get_fact(RunningPid, pidfile=pidfile)
    start = StringCommand(QuoteString(server), QuoteString(config), "--daemonize yes")
    if pid and restarted:
        yield StringCommand(
            "kill", str(pid), "&& while kill -0", str(pid), "2>/dev/null; do sleep 0.1; done"
        )
        yield start
    elif not pid:
        yield start
    else:
        host.noop(f"{config}: running as pid {pid}")


def brew_service_config(instance_config_path: str) -> str:
    """Homebrew's etc/valkey.conf, which `brew services` starts: it includes one instance."""
    return f"# Managed by valkey-plans.\ninclude {instance_config_path}\n"


def _service_instance(plan: Plan) -> Instance:
    """The instance `brew services` runs: the app's cache, else the first instance."""
    for inst in plan.instances:
        if inst.name == plan.app.cache_instance:
            return inst
    return plan.instances[0]


def converge_macos(plan: Plan, passwords: dict[str, SecretStr] | None) -> None:
    prefix = host.get_fact(BrewPrefix)
    layout = homebrew(prefix)
    user = host.get_fact(User)
    server = f"{prefix}/bin/valkey-server"
    checker = f"{prefix}/lib/valkey-plans/check-config"
    brew.packages(name="Install valkey (Homebrew)", packages=[FORMULA])
    for path in (layout.etc, layout.run, layout.data, layout.log, f"{prefix}/lib/valkey-plans"):
        files.directory(name=f"{path} exists", path=path, user=user, mode="750")
    files.put(
        name="Config checker",
        src=str(TEMPLATE_DIR / "check-config.sh"),
        dest=checker,
        user=user,
        mode="755",
    )
    service_inst = _service_instance(plan)
    for inst in plan.instances:
        paths = layout.paths(inst.name)
        files.directory(name=f"{paths.run_dir} exists", path=paths.run_dir, user=user, mode="750")
        config = checked_file(
            name=f"Config of {inst.name} (checked by a throwaway valkey-server first)",
            content=instance_config(plan, inst, layout),
            dest=paths.config,
            checker=StringCommand(
                StringCommand("PATH=", QuoteString(f"{prefix}/bin"), ":$PATH", _separator=""),
                QuoteString(checker),
            ),
            user=user,
            group=None,
            mode="600",
        )
        if inst is service_inst:
            include = files.put(
                name=f"Homebrew's valkey.conf includes {inst.name}",
                src=StringIO(brew_service_config(paths.config)),
                dest=f"{prefix}/etc/valkey.conf",
                user=user,
                mode="600",
            )
            started = brew_service(name=f"{inst.name} under brew services", formula=FORMULA)
            brew_service(
                name=f"Restart {inst.name} for its new config",
                formula=FORMULA,
                restarted=True,
                _if=lambda c=config, i=include, s=started: (
                    (c.did_change() or i.did_change()) and not s.did_change()
                ),
            )
        else:
            started = background_server(
                name=f"valkey-server {inst.name} running",
                server=server,
                config=paths.config,
                pidfile=paths.pidfile,
            )
            background_server(
                name=f"Restart {inst.name} for its new config",
                server=server,
                config=paths.config,
                pidfile=paths.pidfile,
                restarted=True,
                _if=lambda c=config, s=started: c.did_change() and not s.did_change(),
            )
    # /etc needs root on a Mac; the app settings live beside Homebrew's own config.
    app_settings(plan, passwords, f"{prefix}/etc/valkey-plans", user, None)
