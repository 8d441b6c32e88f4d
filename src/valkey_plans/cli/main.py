"""The `valkey-plans` command line: validate, deploy and verify a plan from one place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from valkey_plans.plan import PlanError
from valkey_plans.plan.inventory import PROJECT_DIR, Target, load_targets

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
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--pytest-arg", "pytest_args", multiple=True, help="Extra argument for pytest.")
def verify(inventory: str, pytest_args: tuple[str, ...], as_json: bool = False) -> None:
    """Run the checks/ suite against every host of INVENTORY: one table, host x check.

    Exits non-zero when any check fails; advisory results (kernel settings) do not.
    """
    from dataclasses import asdict

    from valkey_plans.verify import report as checks

    targets = _targets(inventory)
    click.echo(f"verifying {', '.join(t.name for t in targets)} ...", err=True)
    code, results, output = checks.run(
        targets, inventory, pytest_args, str(BIN / "pytest"), PROJECT_DIR
    )
    if not results or code not in (0, 1):  # pytest itself failed: show why
        click.echo(output, err=True)
        raise click.ClickException(f"the checks did not run (pytest exit code {code})")
    if as_json:
        click.echo(json.dumps([asdict(r) for r in results], indent=1))
    else:
        click.echo(checks.table(results))
    if code or any(r.status in checks.FAILING for r in results):
        sys.exit(1)


@main.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "only_host", help="Only this inventory host.")
@click.option("--instance", "only_instance", help="Only this instance.")
@click.option("--limit", default=20, show_default=True, help="Violations listed per instance.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def audit(
    inventory: str, only_host: str | None, only_instance: str | None, limit: int, as_json: bool
) -> None:
    """Classify every key of every instance of INVENTORY (read-only, as the checks user).

    Exits non-zero when any key violates the plan's conventions.
    """
    from valkey_plans.verify.audit_cli import run_audit

    reports = run_audit(_targets(inventory), only_host, only_instance, limit, as_json)
    if any(not r.ok for r in reports):
        sys.exit(1)


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


from valkey_plans.lab.cli import lab  # noqa: E402  (registered last, kept apart)

main.add_command(lab)
