"""A Valkey Cluster on three trixie lab hosts, at the Valkey the plan names.

    valkey-plans lab up 6 --release trixie
    pyinfra -y inventories/upgrade_cluster.py deploy.py                                 # 8.1
    VALKEY_PLANS_UPGRADE_VERSION=9 pyinfra -y inventories/upgrade_cluster.py deploy.py  # 9.1

It takes the first three of the lab's last six trixie hosts (the last three are
inventories/upgrade_group.py's). Each runs two nodes of cluster `up` (`u0` on 7100,
`u1` on 7101): 3 primaries with a replica each, on another host. Changing
`valkey_version` installs the new packages everywhere, restarts every replica node
(one at a time, settled), then fails each old primary over to its upgraded replica
(CLUSTER FAILOVER: no acknowledged write left behind) and restarts it. Passwords are
generated once into the lab dir (`upgrade-cluster-secrets.json`).
"""

import os

from valkey_plans.lab.inventory import connection, running_lab, secrets_file

PORTS = {"u0": 7100, "u1": 7101}

_lab = running_lab(6, "inventories/upgrade_cluster.py")
_trixie = [h for h in _lab.hosts if h.release == "trixie"][-6:-3]
if len(_trixie) < 3:
    raise RuntimeError("inventories/upgrade_cluster.py needs six trixie lab hosts")


def _data(index: int) -> dict:
    host = _trixie[index]
    return {
        **connection(_lab, host),
        "valkey_version": os.environ.get("VALKEY_PLANS_UPGRADE_VERSION") or None,
        "valkey_instances": [
            {
                "name": name,
                "role": "cluster-node",
                "cluster": "up",
                "port": port,
                "bind": ["127.0.0.1", host.address],
                "maxmemory": "64mb",
            }
            for name, port in PORTS.items()
        ],
        "valkey_cluster_replicas": 1,
        "valkey_acl": True,
        "valkey_secrets_file": secrets_file(_lab, "upgrade-cluster"),
        "valkey_secrets_generate": True,
        "valkey_exporter": {"enabled": False},
        "valkey_app": {"name": "up", "hosted_instance": "u0", "cache_instance": None},
    }


upgrade_cluster = [(h.name, _data(i)) for i, h in enumerate(_trixie)]
