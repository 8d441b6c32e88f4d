"""The `valkey-plans` command line: validate, deploy and verify a plan from one place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from valkey_plans.inventory import PROJECT_DIR, Target, load_targets
from valkey_plans.plan import PlanError

BIN = Path(sys.executable).parent


def _targets(inventory: str) -> list[Target]:
    try:
        return load_targets(inventory)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None


def _run(args: list[str]) -> int:
    click.echo("$ " + " ".join(args), err=True)
    return subprocess.call(args, cwd=PROJECT_DIR)


@click.group()
def main() -> None:
    """Run Valkey the way you planned it."""


@main.command("check-plan")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
def check_plan(inventory: str) -> None:
    """Validate every host's plan in INVENTORY without touching any host."""
    for target in _targets(inventory):
        names = ", ".join(f"{i.name} ({i.role}, port {i.port})" for i in target.plan.instances)
        click.echo(f"{target.name}: ok: {names}")


@main.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--pytest-arg", "pytest_args", multiple=True, help="Extra argument for pytest.")
def verify(inventory: str, pytest_args: tuple[str, ...]) -> None:
    """Run the checks/ testinfra suite against every host of INVENTORY."""
    targets = _targets(inventory)
    hosts = ",".join(t.testinfra_url for t in targets)
    args = [str(BIN / "pytest"), "-p", "no:cacheprovider", "-q", "checks/"]
    args += [f"--hosts={hosts}", f"--plan-inventory={Path(inventory).resolve()}"]
    if os.geteuid() != 0 and any(t.testinfra_url == "local://" for t in targets):
        args.append("--sudo")  # config files are 0640 valkey: reading them needs root
    sys.exit(_run(args + list(pytest_args)))


@main.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-verify", is_flag=True, help="Deploy only; skip the checks.")
@click.pass_context
def up(ctx: click.Context, inventory: str, no_verify: bool) -> None:
    """Validate, deploy (pyinfra INVENTORY deploy.py) and verify INVENTORY."""
    _targets(inventory)  # a bad plan stops here, before pyinfra connects anywhere
    code = _run([str(BIN / "pyinfra"), "-y", str(Path(inventory).resolve()), "deploy.py"])
    if code:
        sys.exit(code)
    if not no_verify:
        ctx.invoke(verify, inventory=inventory, pytest_args=())


from valkey_plans.lab_cli import lab  # noqa: E402  (registered last, kept apart)

main.add_command(lab)
