"""The deploy file that ships in the package: `valkey-plans up` hands its path to pyinfra.

The same two lines as the repository's `deploy.py`, so an installed valkey-plans deploys
a user's own inventory without this checkout. Never import it: it runs the deploy, which
only works inside a pyinfra run (`valkey_plans.cli.main.deploy_file()` finds its path).
"""

from valkey_plans.deploy import valkey_plan

valkey_plan()
