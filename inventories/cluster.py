"""Valkey Cluster on three lab hosts: 3 hosts x 2 nodes = 3 primaries with 1 replica each.

    valkey-plans lab up 3
    pyinfra -y inventories/cluster.py deploy.py
    valkey-plans verify inventories/cluster.py

Every host runs two cluster-node instances of cluster `main` (`n0` on 7000, `n1` on
7001), bound to loopback and the host's lab address so that the other nodes and the
clients reach them. The first deploy lets `valkey-cli --cluster create` place the
primaries and their replicas (one per primary, on another host); a later deploy of a
grown inventory adds the new hosts' nodes and rebalances slots onto them. To grow it in
the lab: `valkey-plans lab up 4`, then deploy with VALKEY_PLANS_CLUSTER_HOSTS=4. A
changed config restarts the nodes one at a time (try VALKEY_PLANS_CLUSTER_MAXMEMORY=96mb).

Binding beyond loopback needs passwords: they are generated once into the lab dir
(`cluster-secrets.json`, mode 0600), never into the repository. Applications on each
host get `VALKEY_MODE=cluster` settings pointing at the host's `n0`; cluster hosts
have no local cache instance.

With VALKEY_PLANS_LAB_RELEASE=forky it takes the first lab hosts of that release
instead (`valkey-plans lab up 3 --release forky`): one Valkey series for the whole group.
"""

import os

from valkey_plans.lab.inventory import connection, first_hosts, running_lab, secrets_file

#: Instance name -> port of the two nodes on every host.
PORTS = {"n0": 7000, "n1": 7001}
#: How many lab hosts the cluster spans (the first N of the lab).
HOSTS = int(os.environ.get("VALKEY_PLANS_CLUSTER_HOSTS") or 3)
#: maxmemory of every node: change it to see a rolling restart, one node at a time.
MAXMEMORY = os.environ.get("VALKEY_PLANS_CLUSTER_MAXMEMORY") or "64mb"

_lab = running_lab(HOSTS, "inventories/cluster.py")
_hosts = first_hosts(_lab, HOSTS, "inventories/cluster.py")


def _data(index: int) -> dict:
    host = _hosts[index]
    return {
        **connection(_lab, host),
        "valkey_instances": [
            {
                "name": name,
                "role": "cluster-node",
                "cluster": "main",
                "port": port,
                "bind": ["127.0.0.1", host.address],
                "maxmemory": MAXMEMORY,
            }
            for name, port in PORTS.items()
        ],
        "valkey_cluster_replicas": 1,
        "valkey_acl": True,
        "valkey_secrets_file": secrets_file(_lab, "cluster"),
        "valkey_secrets_generate": True,
        "valkey_app": {"hosted_instance": "n0", "cache_instance": None},
    }


cluster = [(h.name, _data(i)) for i, h in enumerate(_hosts)]
bookworm = [h.name for h in _hosts if h.release == "bookworm"]
trixie = [h.name for h in _hosts if h.release == "trixie"]
