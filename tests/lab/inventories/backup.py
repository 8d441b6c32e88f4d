"""The backup drill of tests/lab/test_backup_lab.py: the production plan on three lab hosts.

Group `production`, so group_data/production.py applies as on a real box (ACL on,
secrets from a 0600 file and never generated, hourly restic backups), with the drill's
own instance `vault` (a primary on port 6421, no other lab module's port) in place of
the production instance list, and no exporter (nothing left listening for later lab
modules to find):

- the first host (bookworm) is the production box, reached as the non-root `ops` with sudo (the
  README walkthrough's login); it backs `vault` up to its local repository and to
- the forky host, the backup host (`valkey_backup.backup_host`): the deploy
  makes it serve the box's off-host repository with restic's rest-server, append-only,
  behind TLS, as the account `vpbackup`, and prune it daily; its own `vault` (AOF on)
  is where the drill restores too;
- the trixie host is the box that replaces a lost one: `vault` with
  appendonly off, restored onto with `--onto`.

The box keeps 2 hourly and 1 daily snapshots (not the production plan's 24 + 30), so
that the drill sees pruning remove some. The two restore targets back nothing up (`instances: []`), so no timer of theirs
touches the repository during the drill; they still get restic and the repository
password. VALKEY_PLANS_BACKUP_EVERY_MINUTE=HOST gives that host its own backups every
minute, to its local repository (the timer drill); VALKEY_PLANS_LAB_HOST_DATA (JSON, host name -> object)
layers more on top.
"""

import json
import os

from valkey_plans.lab.inventory import connection, running_lab, secrets_file

PORT = 6421
OPS_USER = "ops"
#: The box's retention in the drill: few enough that pruning shows.
RETENTION = {"hourly": 2, "daily": 1}

_lab = running_lab(3, "tests/lab/inventories/backup.py")
#: One host of each release: Valkey 8.0 backs up, 9.1 serves the repository and restores
#: with AOF, 8.1 restores from RDB (and refuses Valkey 9's RDB format).
_box = _lab.hosts[0]
_vault = next(h for h in _lab.hosts if h.release == "forky")
_spare = next(h for h in _lab.hosts if h.release == "trixie")
_extra = json.loads(os.environ.get("VALKEY_PLANS_LAB_HOST_DATA") or "{}")
#: The host whose backups run every minute from its own timer (the timer drill).
_every_minute = os.environ.get("VALKEY_PLANS_BACKUP_EVERY_MINUTE", "")


def _data(host, instance: dict, ssh: dict, restore_target: bool) -> dict:
    """One host's plan: the vault instance, and backups to both repositories."""
    backup: dict = {"enabled": True, "backup_host": _vault.name, "retention": RETENTION}
    if host.name == _every_minute:
        # Its local repository only: no lock of its runs meets the drill's in the other.
        backup = {"enabled": True, "interval": "1min"}
    elif restore_target:
        backup = {"enabled": True, "instances": []}
    data = {
        **connection(_lab, host),
        **ssh,
        "valkey_instances": [
            {"name": "vault", "role": "primary", "port": PORT, "maxmemory": "256mb", **instance}
        ],
        "valkey_app": {"name": "drill", "hosted_instance": "vault", "cache_instance": None},
        "valkey_exporter": {"enabled": False},
        "valkey_secrets_file": secrets_file(_lab, "backup-drill"),
        "valkey_backup": backup,
    }
    return {**data, **_extra.get(host.name, {})}


production = [
    (_box.name, _data(_box, {}, {"ssh_user": OPS_USER, "_sudo": True}, False)),
    (_vault.name, _data(_vault, {"appendonly": True}, {}, True)),
    (_spare.name, _data(_spare, {"appendonly": False}, {}, True)),
]
