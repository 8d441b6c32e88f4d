"""A standalone primary on the lab's last trixie host, at the Valkey the plan names.

    valkey-plans lab up 2
    pyinfra -y inventories/upgrade.py deploy.py                              # trixie's 8.1
    VALKEY_PLANS_UPGRADE_VERSION=9 pyinfra -y inventories/upgrade.py deploy.py  # 9.1, forky's

`valkey_version` comes from VALKEY_PLANS_UPGRADE_VERSION (unset: keep what the host
runs). Changing it upgrades Valkey (only Valkey's packages from forky, pinned and held)
and restarts the instance the settled way; a downgrade is refused before any change.
"""

import os

from valkey_plans.lab.inventory import connection, running_lab

_lab = running_lab(1, "inventories/upgrade.py")
_trixie = [h for h in _lab.hosts if h.release == "trixie"]
if not _trixie:
    raise RuntimeError("inventories/upgrade.py needs a trixie lab host: `valkey-plans lab up 2`")
_host = _trixie[-1]

upgrade = [
    (
        _host.name,
        {
            **connection(_lab, _host),
            "valkey_version": os.environ.get("VALKEY_PLANS_UPGRADE_VERSION") or None,
            "valkey_instances": [{"name": "up", "role": "primary", "port": 6397}],
            "valkey_app": {"name": "up", "hosted_instance": "up", "cache_instance": None},
        },
    )
]
