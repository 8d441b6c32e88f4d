"""`valkey-plans lab up|status|down`: real systemd hosts for deploy tests, from the shell."""

from __future__ import annotations

import time

import click

from valkey_plans.lab import config


@click.group()
def lab() -> None:
    """Bring lab hosts (systemd-nspawn, own netns, ssh, apt via a proxy) up or down. Needs root."""


@lab.command()
@click.argument("n", type=click.IntRange(min=1, max=50))
@click.option(
    "--release",
    "releases",
    multiple=True,
    type=click.Choice(config.RELEASES),
    help="Debian release (bookworm, trixie, forky); repeat to assign them round-robin"
    " (default: bookworm, trixie).",
)
def up(n: int, releases: tuple[str, ...]) -> None:
    """Bring up N booted hosts (reusing a running lab of the same shape)."""
    from valkey_plans.lab import lifecycle

    started = time.monotonic()
    state = lifecycle.up(n, releases)
    click.echo(f"lab up: {len(state.hosts)} hosts in {time.monotonic() - started:.1f}s")
    for host in state.hosts:
        click.echo(f"  {host.name}  {host.release:<9} {host.address}")
    click.echo(f"ssh:    ssh -F {state.ssh_config} {state.hosts[0].name}")
    click.echo("pyinfra: pyinfra -y inventories/lab.py deploy.py")
    click.echo(f"state:  {config.state_file()}")


@lab.command()
def status() -> None:
    """Show the lab's hosts and whether each runs and answers over SSH (exit 1 if not all)."""
    from valkey_plans.lab import lifecycle

    state, report = lifecycle.status()
    if state is None:
        click.echo("lab: down")
        return
    for host in report:
        health = "up" if host.running and host.ssh else ("no-ssh" if host.running else "stopped")
        click.echo(f"{host.name}  {host.release:<9} {host.address:<15} {health}")
    if not all(h.running and h.ssh for h in report):
        raise SystemExit(1)


@lab.command()
def hosts() -> None:
    """Print the `--hosts=` value for `pytest checks/` (testinfra over SSH) against the lab."""
    from valkey_plans.lab import ssh, state

    lab_state = state.load(config.lab_dir())
    if lab_state is None:
        raise click.ClickException("no lab is up: run `valkey-plans lab up N` first")
    click.echo(ssh.testinfra_hosts(lab_state))


@lab.command()
def down() -> None:
    """Stop and remove every host, namespace, mount, bridge and process the lab started."""
    from valkey_plans.lab import lifecycle

    lifecycle.down()
    click.echo("lab: down")
