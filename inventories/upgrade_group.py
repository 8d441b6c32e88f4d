"""A Sentinel group on the lab's last three trixie hosts, at the Valkey the plan names.

    valkey-plans lab up 6 --release trixie
    pyinfra -y inventories/upgrade_group.py deploy.py                              # 8.1
    VALKEY_PLANS_UPGRADE_VERSION=9 pyinfra -y inventories/upgrade_group.py deploy.py  # 9.1

The first of the three runs the primary `grp` (port 6398), the other two its replicas,
and every one a Sentinel (port 26398, quorum 2). Changing `valkey_version` upgrades the
replicas' hosts first (one at a time, settled), then hands the primary role over to an
upgraded replica (writes paused meanwhile, never lost) and upgrades the old primary's
host last. Passwords are generated once into the lab dir (`upgrade-group-secrets.json`).
"""

import os

from valkey_plans.lab.inventory import connection, running_lab, secrets_file

PORT = 6398

_lab = running_lab(3, "inventories/upgrade_group.py")
_trixie = [h for h in _lab.hosts if h.release == "trixie"][-3:]
if len(_trixie) < 3:
    raise RuntimeError("inventories/upgrade_group.py needs three trixie lab hosts")
_primary = _trixie[0].name


def _data(index: int) -> dict:
    host = _trixie[index]
    bind = ["127.0.0.1", host.address]
    instance = {"name": "grp", "port": PORT, "bind": bind}
    if index == 0:
        instance["role"] = "primary"
    else:
        instance |= {"role": "replica", "replicaof": f"{_primary}/grp"}
    return {
        **connection(_lab, host),
        "valkey_version": os.environ.get("VALKEY_PLANS_UPGRADE_VERSION") or None,
        "valkey_instances": [instance],
        "valkey_sentinel": {
            "name": "grp",
            "primary": f"{_primary}/grp",
            "bind": bind,
            "port": 26398,
        },
        "valkey_acl": True,
        "valkey_secrets_file": secrets_file(_lab, "upgrade-group"),
        "valkey_secrets_generate": True,
        "valkey_exporter": {"enabled": False},
        "valkey_app": {"name": "grp", "hosted_instance": "grp", "cache_instance": None},
    }


upgrade_group = [(h.name, _data(i)) for i, h in enumerate(_trixie)]
