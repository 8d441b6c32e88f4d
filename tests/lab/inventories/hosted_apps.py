"""The application hosts of tests/lab/test_hosted_external_lab.py: a local cache in front
of an external hosted tier that this inventory does not deploy.

The lab hosts that VALKEY_PLANS_LAB_HOSTED names (JSON: host name -> the `hosted`
mapping, the test's choice) each run their own `cache` instance and that `hosted` tier,
so the test can point them at the service, rotate or break a login, or swap the CA
between deploys. The hosted passwords come as VALKEY_PLANS_SECRET_HOSTED* variables.
"""

import json
import os

from valkey_plans.lab.inventory import connection, running_lab

_lab = running_lab(3, "tests/lab/inventories/hosted_apps.py")
_hosted = json.loads(os.environ.get("VALKEY_PLANS_LAB_HOSTED") or "{}")

hosted_apps = [
    (
        host.name,
        {
            **connection(_lab, host),
            "valkey_app": {"name": "shop", "hosted": _hosted[host.name]},
        },
    )
    for host in _lab.hosts
    if host.name in _hosted
]
