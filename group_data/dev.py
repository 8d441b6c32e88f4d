"""The dev plan: the local cache, plus a local primary standing in for the hosted tier.

So a laptop has the same two tiers, and the same application settings, as production.
"""

import grp
import os
import pwd

valkey_instances = [
    {"name": "cache", "role": "cache", "port": 6379, "maxmemory": "128mb"},
    {"name": "hosted", "role": "primary", "port": 6380, "maxmemory": "128mb"},
]

# The developer who ran the deploy (through sudo or not) may read the app settings.
_developer = pwd.getpwnam(os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name)

valkey_app = {
    "name": "app",
    "hosted_instance": "hosted",
    "cache_instance": "cache",
    "group": grp.getgrgid(_developer.pw_gid).gr_name,
}

# ACL users per workload, with passwords generated once into the developer's config dir
# (mode 0600, never in the repo). The env file hands them to the applications.
valkey_acl = True
valkey_secrets_file = f"{_developer.pw_dir}/.config/valkey-plans/dev-secrets.json"
valkey_secrets_generate = True
