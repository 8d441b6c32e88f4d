"""The lab's hosts (`valkey-plans lab up`), read from the lab's state file.

    valkey-plans lab up 2 --release bookworm --release trixie
    pyinfra -y inventories/lab.py deploy.py
    valkey-plans verify inventories/lab.py

Connection data is exactly what a real server needs: address, root over SSH with the key
the lab generated, strict host key checking against the lab's known_hosts (the lab wrote
each host's key itself, so nothing is trusted on first use). Groups: `lab` (every host,
so group_data/lab.py applies) and one group per Debian release.

Plan values for tests come from group_data/ as usual; two environment variables layer
JSON host data on top, read here so that the deploy and the checks see the same plan:
VALKEY_PLANS_LAB_DATA (an object, for every lab host) and VALKEY_PLANS_LAB_HOST_DATA
(an object of host name -> object).
"""

import json
import os

from valkey_plans.lab import config, state

_lab = state.load()
if _lab is None or not _lab.hosts:
    raise RuntimeError(
        f"no lab is up (no hosts in {config.state_file()}): "
        "run `valkey-plans lab up 2 --release bookworm --release trixie` first"
    )

_common = json.loads(os.environ.get("VALKEY_PLANS_LAB_DATA") or "{}")
_per_host = json.loads(os.environ.get("VALKEY_PLANS_LAB_HOST_DATA") or "{}")


def _data(host: state.Host) -> dict:
    """Connection data of one lab host, then the plan overrides from the environment."""
    return {
        "ssh_hostname": host.address,
        "ssh_user": "root",
        "ssh_key": _lab.ssh_key,
        "ssh_known_hosts_file": _lab.known_hosts,
        "ssh_strict_host_key_checking": "yes",
        "ssh_config_file": _lab.ssh_config,
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "lab_release": host.release,
        **_common,
        **_per_host.get(host.name, {}),
    }


lab = [(h.name, _data(h)) for h in _lab.hosts]
bookworm = [h.name for h in _lab.hosts if h.release == "bookworm"]
trixie = [h.name for h in _lab.hosts if h.release == "trixie"]
