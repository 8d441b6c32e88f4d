"""The ACL file of an instance: one user per workload, least privilege, hashed passwords.

Valkey keeps `#<sha256>` hashes in the file, never plaintext. Key and channel
patterns come from the plan's declared domains, so a workload user cannot touch a
key the plan does not know about.
"""

from __future__ import annotations

import hashlib

from pydantic import SecretStr

from valkey_plans.domains import STRUCTURAL_PREFIX
from valkey_plans.plan.model import Instance, Plan

#: What each user may run. Order matters: Valkey applies the rules left to right.
PERMISSIONS: dict[str, str] = {
    # The workload users end with +info: why, at CLUSTER_CLIENT below.
    # Fast request/response traffic: reads and writes, functions, publish; nothing
    # dangerous (KEYS, FLUSH*, CONFIG, DEBUG...), nothing blocking, no function admin.
    "api": "-@all +@read +@write +@transaction +@connection +fcall +fcall_ro +publish"
    " -@dangerous -@blocking -@admin -function +function|list +wait +waitaof +info",
    # Workers: lists and streams, including the blocking commands.
    "queue": "-@all +@read +@list +@stream +@blocking +@transaction +@connection +fcall"
    " +fcall_ro -@dangerous +info",
    # Pub/sub only, on the plan's channels.
    "subscriber": "-@all +@pubsub +@connection +info",
    # Maintenance: scan, inspect and delete; never FLUSHALL/FLUSHDB or KEYS.
    "background": "-@all +@read +@keyspace +@transaction +@connection -@dangerous +info",
    # Verification: read-only introspection.
    "checks": "-@all +@read +@connection -@dangerous +info +config|get +client|list"
    " +function|list +scan +dbsize +type +ttl +pttl +slowlog|get +acl|whoami",
    "admin": "+@all",
    # Replicas logging in to their primary (masteruser).
    "replica": "-@all +psync +replconf +ping",
    # Valkey Sentinel: what its failover needs, as Valkey's documentation lists it.
    "sentinel": "-@all +multi +slaveof +replicaof +ping +exec +subscribe +config|rewrite +role"
    " +publish +info +client|setname +client|kill +script|kill",
    # prometheus-redis-exporter 1.45/1.69 on each scrape (found with INFO commandstats and
    # an empty ACL LOG, tests/server/test_exporter.py): INFO ALL, SLOWLOG LEN/GET,
    # LATENCY LATEST, CLUSTER INFO on a cluster node, CLIENT SETNAME on connect. No CONFIG
    # GET: the exporter asks for `*`, which includes masterauth in plaintext; the deploy
    # turns its config scrape off (REDIS_EXPORTER_CONFIG_COMMAND=-) and INFO has maxmemory.
    "exporter": "-@all +info +ping +client|setname +slowlog|get +slowlog|len +latency|latest"
    " +cluster|info",
}

#: What the exporter runs on the keys of `valkey_exporter.key_patterns` (read-only key
#: rules `%R~PATTERN`): SELECT of the pattern's db, SCAN, TYPE, then each type's size,
#: and GET of strings, whose numeric value it exports as redis_key_value.
EXPORTER_KEY_SIZES = " +select +scan +type +strlen +get +pfcount +hlen +llen +scard +zcard +xlen"


#: What a cluster client needs to find its way (slot map, redirects) in Valkey Cluster,
#: and the CLUSTER INFO of iovalkey's cluster ready check (cluster_state:ok).
#: The workload users also get `+info` (last, after -@dangerous, which holds INFO):
#: iovalkey and ioredis run INFO on every connect (`enableReadyCheck`, their default)
#: to wait while the server is still loading; without it they log "Skipping the ready
#: check because INFO command fails: NOPERM" and send commands to a loading server.
#: INFO shows server statistics, never a key or a value.
CLUSTER_CLIENT = (
    " +cluster|slots +cluster|shards +cluster|nodes +cluster|myid +cluster|info"
    " +readonly +readwrite +asking"
)
WORKLOAD_USERS = ("api", "queue", "subscriber", "background")


def key_patterns(plan: Plan) -> list[str]:
    """Declared domains, structural keys, and the user index's email keys (they hold @)."""
    return [f"~{domain}:*" for domain in plan.domains] + [f"~{STRUCTURAL_PREFIX}*", "~*@*"]


def exporter_keys(plan: Plan, instance: Instance) -> list[str]:
    """Read-only key rules for the exporter's key patterns on `instance` (`dbN=` dropped)."""
    return [f"%R~{p.partition('=')[2] or p}" for p in plan.exporter.patterns_for(instance)]


def channel_patterns(plan: Plan) -> list[str]:
    return [f"&{STRUCTURAL_PREFIX}*", f"&{plan.app.name}:*"]


def password_hash(password: SecretStr) -> str:
    return hashlib.sha256(password.get_secret_value().encode()).hexdigest()


#: `default` is off with no password, so nobody can log in as it and new connections
#: start unauthenticated. It keeps every command and key all the same: Valkey replays
#: the AOF as `default` and re-checks permissions at EXEC (valkey-io/valkey#3983), so a
#: `default` without rights silently drops every MULTI/EXEC and every Function call's
#: writes from the AOF at the next start. tests/server/test_acl_aof.py proves both.
DEFAULT_USER = "user default off resetpass ~* &* +@all"


def acl_lines(plan: Plan, instance: Instance, passwords: dict[str, SecretStr]) -> list[str]:
    """`user ...` lines for the aclfile: DEFAULT_USER, then one line per planned user."""
    keys, channels = key_patterns(plan), channel_patterns(plan)
    scope = {
        "api": [*keys, *channels],
        "queue": keys,
        "subscriber": channels,
        "background": keys,
        "checks": ["~*"],
        "admin": ["~*", "&*"],
        "replica": [],
        "sentinel": ["&*"],
        "exporter": exporter_keys(plan, instance),
    }
    lines = [DEFAULT_USER]
    for user, rules in PERMISSIONS.items():
        if user not in passwords:
            continue  # scale-out users exist only where the plan needs them
        secret = password_hash(passwords[user])
        if user in WORKLOAD_USERS:
            rules += CLUSTER_CLIENT
        if user == "checks":
            rules += " +cluster|info +cluster|nodes +cluster|shards"
        if user == "exporter" and scope["exporter"]:
            rules += EXPORTER_KEY_SIZES
        lines.append(
            f"user {user} on #{secret} resetkeys resetchannels {' '.join(scope[user])} {rules}"
        )
    return lines
