"""The settings applications read: one dict, rendered as an env file and as JSON.

Variable names match what Node.js/iovalkey code of such teams reads (VALKEY_HOST,
VALKEY_PORT, ...), and `valkey_plans.client.settings` parses exactly these names back.
The hosted tier is db 0 only: nothing here ever points it at another db.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import SecretStr

from valkey_plans.client.schema import BOUND_SETTINGS, db_setting
from valkey_plans.client.settings import CACHE_PREFIX, HOSTED_PREFIX
from valkey_plans.plan import topology
from valkey_plans.plan.model import Hosted, Instance, Plan
from valkey_plans.plan.secrets import HOSTED_SHARED, WORKLOAD_USERS


def _hosted_endpoint(plan: Plan) -> tuple[str, int, bool] | None:
    external = plan.app.hosted.url if plan.app.hosted else None
    if plan.app.hosted_url or external:
        url = urlsplit(plan.app.hosted_url or external or "")
        return url.hostname or "", url.port or 6379, url.scheme == "valkeys"
    if plan.app.hosted_instance:
        inst = plan.instance(plan.app.hosted_instance)
        return inst.client_address, inst.client_port, inst.tls is not None
    return None


def _credentials(prefix: str, passwords: dict[str, SecretStr] | None) -> dict[str, str]:
    if not passwords:
        return {}
    env = {}
    for workload, user in WORKLOAD_USERS.items():
        env[f"{prefix}{workload.upper()}_USER"] = user
        env[f"{prefix}{workload.upper()}_PASSWORD"] = passwords[user].get_secret_value()
    return env


def _external(
    hosted: Hosted, passwords: dict[str, SecretStr] | None, ca_path: str | None
) -> dict[str, str]:
    """An external hosted tier: its mode, seeds, TLS trust and every workload's login.

    Each workload gets its own variables even when they share one login, so application
    code reads `VALKEY_<WORKLOAD>_*` alike for every kind of service; a token login has
    no `_USER` (AUTH with the password alone, as Node.js clients do without a username).
    """
    url = urlsplit(hosted.url)
    env: dict[str, str] = {"VALKEY_MODE": hosted.mode}
    if hosted.mode == "cluster":
        env["VALKEY_CLUSTER_NODES"] = ",".join([f"{url.hostname}:{url.port}", *hosted.seeds])
    if ca_path:
        env["VALKEY_TLS_CA_FILE"] = ca_path
    if hosted.tls_server_name:
        env["VALKEY_TLS_SERVERNAME"] = hosted.tls_server_name
    for workload in WORKLOAD_USERS:
        secret = HOSTED_SHARED if hosted.login != "per-workload" else f"hosted_{workload}"
        user = {"user": hosted.user, "per-workload": hosted.users.get(workload)}.get(hosted.login)
        if user:
            env[f"{HOSTED_PREFIX}{workload.upper()}_USER"] = user
        if passwords and secret in passwords:
            password = passwords[secret].get_secret_value()
            env[f"{HOSTED_PREFIX}{workload.upper()}_PASSWORD"] = password
    return env


def _sentinel(plan: Plan, plans: list[Plan], passwords: dict[str, SecretStr] | None) -> dict:
    """Sentinel settings when this host's hosted instance is one Sentinel manages."""
    hosted = f"{plan.host}/{plan.app.hosted_instance}"
    if not plan.app.hosted_instance or hosted not in topology.sentinel_watched(plans):
        return {}
    watchers = [p.sentinel for p in plans if p.sentinel]
    env = {
        "VALKEY_MODE": "sentinel",
        "VALKEY_SENTINELS": ",".join(f"{s.address}:{s.port}" for s in watchers),
        "VALKEY_SENTINEL_NAME": watchers[0].name,
    }
    if passwords and "sentinel" in passwords:
        env["VALKEY_SENTINEL_PASSWORD"] = passwords["sentinel"].get_secret_value()
    return env


def _cluster(plan: Plan, plans: list[Plan]) -> dict[str, str]:
    """Every node of the hosted instance's cluster, so clients start even with it down."""
    hosted = plan.instance(plan.app.hosted_instance) if plan.app.hosted_instance else None
    if hosted is None or hosted.role != "cluster-node" or not hosted.cluster:
        return {}
    members = topology.cluster_nodes(plans, hosted.cluster)
    seeds = (f"{node.instance.peer_address}:{node.instance.client_port}" for node in members)
    return {"VALKEY_CLUSTER_NODES": ",".join(seeds)}


def _cache_tier(cache: Instance, passwords: dict[str, SecretStr] | None) -> dict[str, str]:
    """The local cache: endpoint, logins, and its db map and bounds by the schema's names."""
    env = {
        "VALKEY_CACHE_HOST": cache.client_address,
        "VALKEY_CACHE_PORT": str(cache.client_port),
        "VALKEY_CACHE_TLS": "1" if cache.tls else "0",
    }
    if cache.tls:
        env["VALKEY_CACHE_TLS_CA_FILE"] = cache.tls.ca_cert_file
    env |= _credentials(CACHE_PREFIX, passwords)
    for name, db in cache.cache_dbs.items():
        env[f"{CACHE_PREFIX}{db_setting(name).upper()}"] = str(db.db)
    for name, bound, setting in BOUND_SETTINGS:
        value = getattr(cache.db(name), bound)
        shown = ("1" if value else "0") if isinstance(value, bool) else str(value)
        env[f"{CACHE_PREFIX}{setting.upper()}"] = shown
    return env


def app_environment(
    plan: Plan,
    passwords: dict[str, SecretStr] | None = None,
    plans: list[Plan] | None = None,
    hosted_passwords: dict[str, SecretStr] | None = None,
    env_dir: str | None = None,
) -> dict[str, str]:
    """The settings; with ACLs on, `passwords` adds each workload's user and password.

    `plans` (the whole inventory) is needed where Sentinel manages the hosted tier;
    `hosted_passwords` (secrets `hosted`, `hosted_<workload>`) are an external hosted
    tier's logins; `env_dir` is where the settings go when not the plan's (macOS).
    """
    hosted_role = plan.instance(plan.app.hosted_instance).role if plan.app.hosted_instance else None
    mode = "cluster" if hosted_role == "cluster-node" else "standalone"
    env: dict[str, str] = {"VALKEY_APP": plan.app.name, "VALKEY_MODE": mode}
    hosted = _hosted_endpoint(plan)
    if hosted:
        host, port, tls = hosted
        env |= {
            "VALKEY_HOST": host,
            "VALKEY_PORT": str(port),
            "VALKEY_TLS": "1" if tls else "0",
            "VALKEY_DB": "0",
        }
        env |= _sentinel(plan, plans or [plan], passwords)
        env |= _cluster(plan, plans or [plan])
        if plan.app.hosted:
            env |= _external(plan.app.hosted, hosted_passwords, plan.app.hosted_ca_path(env_dir))
        if plan.app.hosted_instance:
            env |= _credentials(HOSTED_PREFIX, passwords)
            if tls:
                env["VALKEY_TLS_CA_FILE"] = plan.instance(plan.app.hosted_instance).tls.ca_cert_file  # type: ignore[union-attr]
    if plan.app.cache_instance:
        env |= _cache_tier(plan.instance(plan.app.cache_instance), passwords)
    return env
