"""pyinfra entry point: `pyinfra INVENTORY deploy.py` converges each host to its plan."""

from valkey_plans.deploy import valkey_plan

valkey_plan()
