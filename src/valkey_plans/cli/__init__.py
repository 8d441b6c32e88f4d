"""The `valkey-plans` command (console script `valkey_plans.cli:main`).

The command ships with every install, but it needs the `[deploy]` extra (pyinfra,
jinja2, click; `verify` also `[verify]`), which an application's base install of the
client does not bring: `main` says which extra to install instead of a traceback.
"""

from __future__ import annotations

import sys

#: Modules of the extras the command line needs, and the extra that brings each.
EXTRA_OF = {
    "click": "deploy",
    "jinja2": "deploy",
    "pyinfra": "deploy",
    "pyinfra_cli": "deploy",
    "pytest": "verify",
    "testinfra": "verify",
}


def main() -> None:
    """Run the command line, or name the extra that is missing."""
    try:
        from valkey_plans.cli.main import main as command
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRA_OF:
            raise
        sys.exit(
            f"valkey-plans: {top} is not installed; the command line needs it:"
            f" pip install 'valkey-plans[{EXTRA_OF[top]}]'"
        )
    command()
