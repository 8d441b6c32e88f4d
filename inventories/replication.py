"""Replication with Sentinel on three lab hosts: one primary, two replicas, three sentinels.

    valkey-plans lab up 3
    pyinfra -y inventories/replication.py deploy.py
    valkey-plans verify inventories/replication.py

The first lab host runs the primary `main` (port 6390); the other two run replicas of
it. Every host runs a Sentinel (`valkey-sentinel@main`, port 26379, quorum 2), so a
majority survives the loss of any one host. After a failover Sentinel owns the
topology: a later deploy of the same plan changes nothing and restarts nobody.
Passwords are generated once into the lab dir (`replication-secrets.json`, 0600).
A changed config restarts the instances, then the sentinels, one host at a time (try
VALKEY_PLANS_REPL_MAXMEMORY=96mb VALKEY_PLANS_REPL_DOWN_AFTER_MS=6000).

With VALKEY_PLANS_LAB_RELEASE=forky it takes the first lab hosts of that release
instead (`valkey-plans lab up 3 --release forky`): one Valkey series for the whole group.
"""

import os

from valkey_plans.lab.inventory import connection, first_hosts, running_lab, secrets_file

PORT = 6390
MAXMEMORY = os.environ.get("VALKEY_PLANS_REPL_MAXMEMORY") or "64mb"
DOWN_AFTER_MS = int(os.environ.get("VALKEY_PLANS_REPL_DOWN_AFTER_MS") or 5000)

_lab = running_lab(3, "inventories/replication.py")
_hosts = first_hosts(_lab, 3, "inventories/replication.py")
_primary = _hosts[0].name


def _data(index: int) -> dict:
    host = _hosts[index]
    instance = {
        "name": "main",
        "port": PORT,
        "bind": ["127.0.0.1", host.address],
        "maxmemory": MAXMEMORY,
    }
    if index == 0:
        instance["role"] = "primary"
    else:
        instance |= {"role": "replica", "replicaof": f"{_primary}/main"}
    return {
        **connection(_lab, host),
        "valkey_instances": [instance],
        "valkey_sentinel": {
            "primary": f"{_primary}/main",
            "bind": ["127.0.0.1", host.address],
            "down_after_ms": DOWN_AFTER_MS,
        },
        "valkey_acl": True,
        "valkey_secrets_file": secrets_file(_lab, "replication"),
        "valkey_secrets_generate": True,
        "valkey_app": {"name": "repl", "hosted_instance": "main", "cache_instance": None},
    }


replication = [(h.name, _data(i)) for i, h in enumerate(_hosts)]
