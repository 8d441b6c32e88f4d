"""Every default of the plan, in one place: what a host gets unless its data says otherwise.

README's "Plan settings" documents each value. The model (`valkey_plans.plan.model`)
never writes a default of its own: its fields and its merges read these tables, and the
packaged deploy hands `DEFAULTS` to pyinfra as `data_defaults`, so inventories and
`group_data/` override any of them the usual pyinfra way. One exception lives on the
client side, where applications read it without loading the plan: the cache role's db
map and bounds, `valkey_plans.client.schema.CACHE_DBS`.
"""

from __future__ import annotations

from typing import Any

#: The host-data keys the deploy reads, with their defaults: pyinfra's `data_defaults`
#: for the packaged deploy. Inventories and group_data/ override any of them.
DEFAULTS: dict[str, Any] = {
    # The Valkey instances on the host; each entry is merged over its role's defaults.
    "valkey_instances": [{"name": "cache", "role": "cache", "port": 6379}],
    # Key domains the applications on this host use (a subset of valkey_plans.domains).
    "valkey_domains": ["usr", "ses", "msg"],
    # Extra 3-letter domains of your own: {"abc": "what they hold"}.
    "valkey_custom_domains": {},
    # What applications get: their name and where the hosted tier and local cache are.
    "valkey_app": {
        "name": "app",
        "env_dir": "/etc/valkey-plans",
        # Group that may read the settings files (mode 0640); the app's own group.
        "group": "root",
        "hosted_instance": None,
        "hosted_url": None,
        # An external (managed) hosted tier with its mode, TLS and logins; HOSTED_DEFAULTS
        # fill what it leaves out.
        "hosted": None,
        "cache_instance": "cache",
    },
    # Valkey Cluster: replicas per primary (valkey-cli --cluster create --cluster-replicas).
    "valkey_cluster_replicas": 1,
    # Valkey Sentinel on this host: {"primary": "HOST/INSTANCE", "bind": [...], ...};
    # SENTINEL_DEFAULTS fill the rest.
    "valkey_sentinel": None,
    # ACL users per workload with passwords; the default user is off. Required to
    # bind beyond loopback.
    "valkey_acl": False,
    # JSON file (user -> password, mode 0600) on the machine running pyinfra; never in
    # the repo. VALKEY_PLANS_SECRET_<USER> environment variables override it.
    "valkey_secrets_file": None,
    # Create the secrets file with random passwords if it is missing (dev laptops).
    "valkey_secrets_generate": False,
    # Valkey series to run ("8.0", "8.1", "9.1", or a major: "9"), per OS (plan/versions.py);
    # None: keep what the host runs, else its OS's own. Changing it upgrades the host;
    # a downgrade is refused.
    "valkey_version": None,
    # Debian mirror used for the bookworm-backports and forky source lines.
    "valkey_debian_mirror": "http://deb.debian.org/debian",
    # Seconds an apt package list stays fresh before the deploy refreshes it.
    "valkey_apt_cache_time": 86400,
    # Thresholds of the Prometheus alert rules rendered from the plan (plan/alerts.py).
    "valkey_alerts": {
        # A cache's keyspace hits / (hits + misses) over 10 minutes below this alerts.
        "hit_ratio_min": 0.8,
        # A replica this many bytes behind its primary's offset (for 2 minutes) alerts.
        "replication_lag_max_bytes": 1048576,
        # used_memory / maxmemory of a noeviction instance above this: writes will fail.
        "primary_memory_max_ratio": 0.9,
        # Seconds since the last good backup (two backup intervals); None: no backup
        # alert. None until valkey-plans runs backups, so that it never fires for nothing.
        "backup_max_age_s": None,
        # Connections rejected (maxclients) within 5 minutes above this alert.
        "rejected_connections": 0,
    },
    # restic backups (plan/backup.py, README "Backups"); the repository password is the
    # secret `backup` (VALKEY_PLANS_SECRET_BACKUP or the secrets file), never generated.
    "valkey_backup": {
        "enabled": False,
        # None: every primary (from its first replica when the inventory has one).
        "instances": None,
        # hourly, daily, Nmin (N divides 60) or Nh (N divides 24).
        "interval": "hourly",
        # restic forget --keep-hourly/--keep-daily (weekly, monthly: 0 unless set).
        "retention": {"hourly": 24, "daily": 30},
        # Local restic repositories, one per instance below this directory.
        "repository": "/var/backups/valkey-plans",
        # An off-host restic repository URL (sftp:..., rest:..., s3:...); None: local only.
        "offsite": None,
        # Another inventory host that keeps the off-host repositories (instead of offsite):
        # the deploy sets it up (rest-server append-only on Debian 13+).
        "backup_host": None,
        # The timer's RandomizedDelaySec=: hosts do not all back up on the same second.
        "random_delay_s": 300,
    },
    # Debian's prometheus-redis-exporter, one per instance, logging in as the ACL user
    # `exporter`; it serves http://LISTEN:(instance port + port_offset)/metrics.
    "valkey_exporter": {
        "enabled": True,
        # Address /metrics listens on: loopback unless the plan says otherwise.
        "listen": "127.0.0.1",
        # Exporter port = the instance's port + this (6379 -> 9379).
        "port_offset": 3000,
        # Key patterns whose sizes it reports ("db1=usr:*"; plain "usr:*" is db 0).
        "key_patterns": [],
    },
}

#: What each role implies unless the plan says otherwise. maxmemory-policy is one
#: setting per instance in Valkey, so it follows the role, never the db.
ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cache": {
        "databases": 4,
        "maxmemory-policy": "volatile-lru",
        "maxmemory-samples": 10,
        "save": ["3600 1", "300 100"],
        "appendonly": False,
    },
    "primary": {
        "databases": 1,
        "maxmemory-policy": "noeviction",
        "maxmemory-samples": 5,
        "save": ["3600 1", "300 100", "60 10000"],
        "appendonly": True,
    },
}
ROLE_DEFAULTS["replica"] = ROLE_DEFAULTS["primary"]
ROLE_DEFAULTS["cluster-node"] = ROLE_DEFAULTS["primary"]

#: Defaults of every instance, whatever its role (`name`, `role` and `port` have none).
INSTANCE_DEFAULTS: dict[str, Any] = {
    "bind": ["127.0.0.1"],
    "maxmemory": "256mb",
    "appendfsync": "everysec",
    "loglevel": "notice",
    "extra_config": {},
    # Milliseconds a cluster node may be unreachable before it counts as failing.
    "cluster_node_timeout": 5000,
}

#: Defaults of an instance's `tls` (`port` and the three certificate paths have none).
TLS_DEFAULTS: dict[str, Any] = {
    # Whether clients must show a certificate: "no", "yes" or "optional".
    "auth_clients": "no",
    # Turn the plain-text port off, so every client must use TLS.
    "only": False,
}

#: Defaults of `valkey_app.hosted`, an external hosted tier (`url` has none).
HOSTED_DEFAULTS: dict[str, Any] = {
    # "standalone", or "cluster" (a managed cluster; `seeds` lists more of its nodes).
    "mode": "standalone",
    # Cluster mode: other "HOST:PORT" nodes to start from when the url's node is down.
    "seeds": [],
    # valkeys:// only: "system" (the app host's CA store) or a PEM file on the machine
    # running pyinfra, which the deploy installs beside the settings.
    "tls_ca_file": "system",
    # valkeys:// only: the name the certificate must carry, when not the url's host.
    "tls_server_name": None,
    # "token" (AUTH with the password alone), "user" (one username + password for every
    # workload) or "per-workload" (each workload its own user and password).
    "login": "user",
    # login "user": the service's username.
    "user": None,
    # login "per-workload": each workload's username on the service.
    "users": {
        "api": "api",
        "blocking": "queue",
        "subscriber": "subscriber",
        "background": "background",
    },
}

#: Defaults of `valkey_sentinel` (`primary` and `bind` have none).
SENTINEL_DEFAULTS: dict[str, Any] = {
    # Name Sentinel knows the group by (clients ask for it).
    "name": "main",
    "port": 26379,
    # Sentinels that must agree a primary is down before a failover.
    "quorum": 2,
    "down_after_ms": 5000,
    "failover_timeout_ms": 60000,
}
