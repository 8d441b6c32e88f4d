"""The `valkey-plans` command line."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Run Valkey the way you planned it."""
