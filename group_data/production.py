"""The production plan for one small box: its primary holds the only copy of the data.

A primary (AOF everysec + RDB snapshots, noeviction, db 0 only) for what must not be
lost, the local cache beside it, ACL users with passwords, the application's settings,
and hourly restic backups of the primary (24 hourly + 30 daily kept). Passwords come
from VALKEY_PLANS_SECRET_<USER> or the 0600 file below on the machine running pyinfra,
and are never generated here: a missing one stops the deploy before any change.
"""

valkey_instances = [
    {"name": "cache", "role": "cache", "port": 6379, "maxmemory": "256mb"},
    {
        "name": "primary",
        "role": "primary",
        "port": 6380,
        "maxmemory": "1gb",
        # The primary's role defaults, written out: the plan says what production runs.
        "maxmemory-policy": "noeviction",
        "appendonly": True,
        "appendfsync": "everysec",
        "save": ["3600 1", "300 100", "60 10000"],
    },
]

# The application on this box: the hosted tier is the primary, the cache is local.
valkey_app = {
    "name": "app",
    "hosted_instance": "primary",
    "cache_instance": "cache",
    # The application's own group may read /etc/valkey-plans/app.env (0640).
    "group": "www-data",
}

valkey_acl = True
valkey_secrets_file = "~/.config/valkey-plans/production-secrets.json"
valkey_secrets_generate = False

valkey_backup = {
    "enabled": True,
    "interval": "hourly",
    "retention": {"hourly": 24, "daily": 30},
    # A second copy off this box (verify advises until it is set), e.g.
    # "offsite": "sftp:valkey-backup@backup-1.example.internal:/srv/restic",
    "offsite": None,
}
