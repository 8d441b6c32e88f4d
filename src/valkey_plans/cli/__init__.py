"""The `valkey-plans` command (console script `valkey_plans.cli:main`)."""

from valkey_plans.cli.main import main

__all__ = ["main"]
