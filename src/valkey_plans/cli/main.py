"""The `valkey-plans` command line: validate, deploy and verify a plan from one place.

It works installed, without this repository: the deploy file pyinfra runs
(`valkey_plans/deploy/entry.py`) and the checks pytest runs (`valkey_plans/verify/checks/`)
ship in the package. Only the user's inventory and group data come from outside, read
the way pyinfra reads them: `group_data/` in the project directory (`--project-dir`,
default the current directory) and beside the inventory file.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import click

from valkey_plans.plan import PlanError

if TYPE_CHECKING:
    from valkey_plans.plan.inventory import Target

BIN = Path(sys.executable).parent


def deploy_file() -> Path:
    """The packaged deploy file (`valkey_plans.deploy.entry`), wherever the package is installed."""
    return Path(str(resources.files("valkey_plans.deploy").joinpath("entry.py")))


def _project_dir() -> Path:
    """The directory pyinfra and pytest run in: where the user's group_data/ lives."""
    return click.get_current_context().find_root().obj["project_dir"]


def _note_missing_group_data(inventory: str) -> None:
    """Say so when pyinfra would find no group_data/: the plan would silently be defaults."""
    places = (_project_dir(), Path(inventory).resolve().parent)
    if not any((place / "group_data").is_dir() for place in places):
        click.echo(
            f"note: no group_data/ in {places[0]} or beside {inventory}: only the inventory's"
            " host data and the defaults apply (run from the directory holding group_data/,"
            " or pass --project-dir)",
            err=True,
        )


def _targets(inventory: str) -> list[Target]:
    # Imported here: the inventory loader needs pyinfra, which `valkey-plans lab` does not.
    from valkey_plans.plan.inventory import load_targets

    _note_missing_group_data(inventory)
    try:
        return load_targets(inventory, _project_dir())
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None


def _run(args: list[str]) -> int:
    click.echo("$ " + " ".join(args), err=True)
    return subprocess.call(args, cwd=_project_dir())


@click.group()
@click.option(
    "--project-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Directory holding group_data/ (pyinfra and the checks run there).",
)
@click.pass_context
def main(ctx: click.Context, project_dir: Path) -> None:
    """Run Valkey the way you planned it."""
    ctx.obj = {"project_dir": project_dir.resolve()}


@main.command("check-plan")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
def check_plan(inventory: str) -> None:
    """Validate every host's plan in INVENTORY, and that every secret its deploy reads is
    there (unless the plan generates them), without touching any host."""
    from valkey_plans.plan.secrets import SecretsError
    from valkey_plans.plan.secrets_needed import check_secrets

    targets = _targets(inventory)
    plans = [target.plan for target in targets]
    for target in targets:
        try:
            check_secrets(target.plan, plans)
        except SecretsError as exc:
            raise click.ClickException(str(exc)) from None
        names = ", ".join(f"{i.name} ({i.role}, port {i.port})" for i in target.plan.instances)
        click.echo(f"{target.name}: ok: {names}")


@main.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--pytest-arg", "pytest_args", multiple=True, help="Extra argument for pytest.")
def verify(inventory: str, pytest_args: tuple[str, ...], as_json: bool = False) -> None:
    """Run the packaged checks against every host of INVENTORY: one table, host x check.

    Exits non-zero when any check fails; advisory results (kernel settings) and checks
    that do not apply to a host (N/A) do not.
    """
    from dataclasses import asdict

    from valkey_plans.verify import report as checks

    targets = _targets(inventory)
    click.echo(f"verifying {', '.join(t.name for t in targets)} ...", err=True)
    code, results, output = checks.run(
        targets, inventory, pytest_args, str(BIN / "pytest"), _project_dir()
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
@click.option("--watch", is_flag=True, help="Refresh the table in place until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON.")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=1.0,
    show_default=True,
    help="Seconds the rates are measured over (and between --watch refreshes).",
)
def status(inventory: str, watch: bool, as_json: bool, interval: float) -> None:
    """Memory, ops/s, hit ratio, evictions, connections per workload, replication and
    cluster state of every instance of INVENTORY (read-only, as the checks user).

    Exits non-zero when an instance could not be reached.
    """
    from valkey_plans.verify import status as live

    if watch and as_json:
        raise click.UsageError("--watch refreshes a table; --json prints one snapshot")
    if not as_json and importlib.util.find_spec("rich") is None:
        raise click.ClickException(
            "the status table needs rich: pip install 'valkey-plans[verify]'"
        )
    targets = _targets(inventory)
    if watch:
        live.watch(targets, interval)
        return
    snap = live.snapshot(targets, interval)
    if as_json:
        click.echo(json.dumps(snap.to_dict(), indent=1))
    else:
        live.console().print(live.table(snap))
    if not snap.ok:
        sys.exit(1)


@main.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option("--no-verify", is_flag=True, help="Deploy only; skip the checks.")
@click.pass_context
def up(ctx: click.Context, inventory: str, no_verify: bool) -> None:
    """Validate, deploy (pyinfra INVENTORY with the packaged deploy) and verify INVENTORY."""
    _targets(inventory)  # a bad plan stops here, before pyinfra connects anywhere
    code = _run([str(BIN / "pyinfra"), "-y", str(Path(inventory).resolve()), str(deploy_file())])
    if code:
        sys.exit(code)
    if not no_verify:
        ctx.invoke(verify, inventory=inventory, pytest_args=())


from valkey_plans.lab.cli import lab  # noqa: E402  (registered last, kept apart)

main.add_command(lab)

from valkey_plans.cli.backup import backup, prune, restore_command  # noqa: E402

main.add_command(backup)
main.add_command(prune)
main.add_command(restore_command)
