"""The settings applications read: one dict, rendered as an env file and as JSON.

Variable names match what Node.js/iovalkey code of such teams reads (VALKEY_HOST,
VALKEY_PORT, ...), and `valkey_plans.settings` parses exactly these names back.
The hosted tier is db 0 only: nothing here ever points it at another db.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from valkey_plans.plan import Plan

WORKLOADS = ("api", "blocking", "subscriber", "background")


def _hosted_endpoint(plan: Plan) -> tuple[str, int, bool] | None:
    if plan.app.hosted_url:
        url = urlsplit(plan.app.hosted_url)
        return url.hostname or "", url.port or 6379, url.scheme == "valkeys"
    if plan.app.hosted_instance:
        inst = plan.instance(plan.app.hosted_instance)
        return inst.client_address, inst.port, False
    return None


def app_environment(plan: Plan) -> dict[str, str]:
    env: dict[str, str] = {"VALKEY_APP": plan.app.name, "VALKEY_MODE": "standalone"}
    hosted = _hosted_endpoint(plan)
    if hosted:
        host, port, tls = hosted
        env |= {
            "VALKEY_HOST": host,
            "VALKEY_PORT": str(port),
            "VALKEY_TLS": "1" if tls else "0",
            "VALKEY_DB": "0",
        }
    if plan.app.cache_instance:
        cache = plan.instance(plan.app.cache_instance)
        env |= {
            "VALKEY_CACHE_HOST": cache.client_address,
            "VALKEY_CACHE_PORT": str(cache.port),
            "VALKEY_CACHE_TLS": "0",
        }
        for name, db in cache.cache_dbs.items():
            env[f"VALKEY_CACHE_DB_{name.upper()}"] = str(db.db)
        user_cache, messages = cache.db("user_cache"), cache.db("message_queue")
        sessions = cache.db("session_cache")
        env |= {
            "VALKEY_CACHE_USER_CAP": str(user_cache.cap),
            "VALKEY_CACHE_USER_TTL": str(user_cache.ttl),
            "VALKEY_CACHE_MESSAGE_CAP": str(messages.cap),
            "VALKEY_CACHE_MESSAGE_TTL": str(messages.ttl),
            "VALKEY_CACHE_SESSION_TTL": str(sessions.ttl),
            "VALKEY_CACHE_SESSION_SLIDING": "1" if sessions.sliding else "0",
        }
    return env
