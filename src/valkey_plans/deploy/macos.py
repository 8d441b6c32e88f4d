"""macOS dev laptops: Homebrew's valkey, the cache instance under `brew services`.

`brew services` manages one service per formula, so it runs the plan's cache
instance (Homebrew's `etc/valkey.conf` includes that instance's config); any other
instance (the dev plan's local stand-in for the hosted tier) runs daemonized from
its own config with a pidfile. Nothing here can run on this project's Linux CI:
tests/unit/test_macos_commands.py checks the commands pyinfra would run, given the
facts a Mac would report.
"""

from __future__ import annotations

from io import StringIO

from pydantic import SecretStr
from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.facts.server import User
from pyinfra.operations import brew, files

from valkey_plans.deploy import app_settings
from valkey_plans.deploy.operations import checked_file
from valkey_plans.deploy.service import Init, Service, service_runner
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
        changed_ops = [config]
        if inst is service_inst:
            changed_ops.append(
                files.put(
                    name=f"Homebrew's valkey.conf includes {inst.name}",
                    src=StringIO(brew_service_config(paths.config)),
                    dest=f"{prefix}/etc/valkey.conf",
                    user=user,
                    mode="600",
                )
            )
        service = Service(
            label=f"valkey-server {inst.name}",
            config=paths.config,
            pidfile=paths.pidfile,
            server=server,
            formula=FORMULA if inst is service_inst else None,
        )
        runner = service_runner(service, Init.BREW)
        runner.running()
        runner.restart_if(changed_ops)
    # /etc needs root on a Mac; the app settings live beside Homebrew's own config.
    app_settings(plan, passwords, f"{prefix}/etc/valkey-plans", user, None)
