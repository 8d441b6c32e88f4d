"""The `valkey-plans` command line."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Run Valkey the way you planned it."""


from valkey_plans.lab_cli import lab  # noqa: E402  (registered last, kept apart)

main.add_command(lab)
