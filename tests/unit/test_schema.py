"""The cache-db schema lives on the client side, and the plan's defaults are read off it."""

from __future__ import annotations

from dataclasses import asdict

from valkey_plans.client.schema import (
    BOUND_SETTINGS,
    CACHE_DB_NAMES,
    CACHE_DB_USES,
    CACHE_DBS,
    INDEX,
    LRU,
    MAX_DATABASES,
    MAX_TTL,
    SESSIONS,
    STRUCTURAL_KEYS,
    cache_dbs_of,
)
from valkey_plans.client.settings import load_settings
from valkey_plans.plan import CacheDb, Instance, Plan
from valkey_plans.plan.app_settings import app_environment
from valkey_plans.plan.render import app_files
from valkey_plans.verify.audit_rules import instance_rules


def test_schema_values_are_the_documented_db_map():
    """README's cache db map: numbers, caps, TTLs and sliding."""
    assert {name: asdict(spec) for name, spec in CACHE_DBS.items()} == {
        "user_index": {"db": 0, "cap": None, "ttl": None, "sliding": False},
        "user_cache": {"db": 1, "cap": 100, "ttl": 3600, "sliding": False},
        "session_cache": {"db": 2, "cap": None, "ttl": 86400, "sliding": True},
        "message_queue": {"db": 3, "cap": 1000, "ttl": 86400, "sliding": False},
    }
    assert tuple(CACHE_DBS) == CACHE_DB_NAMES == tuple(STRUCTURAL_KEYS)


def test_plan_cache_dbs_default_to_the_schema():
    (cache,) = Plan.from_host_data("h", {}).instances
    assert {name: db.model_dump() for name, db in cache.cache_dbs.items()} == {
        name: asdict(spec) for name, spec in CACHE_DBS.items()
    }
    assert (
        Instance.model_validate({"name": "c", "role": "cache", "port": 6379}).cache_dbs
        == cache.cache_dbs
    )


def test_schema_says_what_each_db_holds():
    """The record domain and type, the structural keys and the kind of each cache db."""
    uses = {
        name: (u.kind, u.domain, u.record_type, u.points_at) for name, u in CACHE_DB_USES.items()
    }
    assert uses == {
        "user_index": (INDEX, None, "string", "usr"),
        "user_cache": (LRU, "usr", "string", None),
        "session_cache": (SESSIONS, "ses", "hash", None),
        "message_queue": (LRU, "msg", "string", None),
    }
    assert cache_dbs_of(LRU) == ("user_cache", "message_queue")
    assert cache_dbs_of(SESSIONS) == ("session_cache",) and cache_dbs_of(INDEX) == ("user_index",)
    assert {
        name: [(s.name, s.type, s.prefix) for s in keys] for name, keys in STRUCTURAL_KEYS.items()
    } == {
        "user_index": [],
        "user_cache": [
            ("vp:lru:users", "zset", False),
            ("vp:lru:users:clock", "string", False),
            ("vp:lru:users:touches", "list", False),
            ("vp:lru:users:leases", "hash", False),
        ],
        "session_cache": [("vp:sessions:", "set", True), ("vp:leases:sessions", "hash", False)],
        "message_queue": [
            ("vp:lru:messages", "zset", False),
            ("vp:lru:messages:clock", "string", False),
            ("vp:lru:messages:touches", "list", False),
            ("vp:lru:messages:leases", "hash", False),
            ("vp:lru:messages:deliveries", "hash", False),
            ("vp:queue:messages", "list", False),
            ("vp:queue:messages:processing", "list", False),
            ("vp:queue:messages:taken", "hash", False),
        ],
    }


def test_audit_rules_are_read_off_the_schema():
    plan = Plan.from_host_data("h", {})
    rules = instance_rules(plan, plan.instances[0])
    assert {r.name: (r.db, r.domain, r.record_type, r.cap, r.is_index) for r in rules.values()} == {
        "user_index": (0, None, "string", None, True),
        "user_cache": (1, "usr", "string", 100, False),
        "session_cache": (2, "ses", "hash", None, False),
        "message_queue": (3, "msg", "string", 1000, False),
    }
    assert rules[1].homes == {"usr": 1, "ses": 2, "msg": 3}
    assert rules[0].ttl_forbidden and all(r.ttl_required for db, r in rules.items() if db)


def test_every_cache_setting_the_client_reads_is_rendered_from_the_schema():
    """The env file's cache part, in its order: the names the client's cache tier parses."""
    plan = Plan.from_host_data("h", {"valkey_app": {"name": "shop"}})
    env = app_environment(plan)
    cache_part = {k: v for k, v in env.items() if k.startswith("VALKEY_CACHE_")}
    assert list(cache_part.items()) == [
        ("VALKEY_CACHE_HOST", "127.0.0.1"),
        ("VALKEY_CACHE_PORT", "6379"),
        ("VALKEY_CACHE_TLS", "0"),
        ("VALKEY_CACHE_DB_USER_INDEX", "0"),
        ("VALKEY_CACHE_DB_USER_CACHE", "1"),
        ("VALKEY_CACHE_DB_SESSION_CACHE", "2"),
        ("VALKEY_CACHE_DB_MESSAGE_QUEUE", "3"),
        ("VALKEY_CACHE_USER_CAP", "100"),
        ("VALKEY_CACHE_USER_TTL", "3600"),
        ("VALKEY_CACHE_MESSAGE_CAP", "1000"),
        ("VALKEY_CACHE_MESSAGE_TTL", "86400"),
        ("VALKEY_CACHE_SESSION_TTL", "86400"),
        ("VALKEY_CACHE_SESSION_SLIDING", "1"),
    ]
    tier = load_settings(env).cache
    assert tier is not None
    for name, bound, setting in BOUND_SETTINGS:
        assert getattr(tier, setting) == getattr(plan.instances[0].db(name), bound), setting
    assert tier.dbs.model_dump() == {name: CACHE_DBS[name].db for name in CACHE_DB_NAMES}


def test_rendered_env_file_is_exactly_the_plan():
    plan = Plan.from_host_data(
        "h",
        {
            "valkey_instances": [
                {"name": "cache", "role": "cache", "port": 6379, "maxmemory": "128mb"},
                {"name": "hosted", "role": "primary", "port": 6380, "save": []},
            ],
            "valkey_app": {"name": "shop", "hosted_instance": "hosted"},
        },
    )
    assert app_files(plan)["shop.env"] == (
        "# Managed by valkey-plans (pyinfra): do not edit, change the plan.\n"
        '# Settings for application "shop" on h: Valkey endpoints and the local cache.\n'
        "# Read by valkey_plans.client.settings and by Node.js/iovalkey code alike"
        " (same variable names).\n"
        "VALKEY_APP=shop\n"
        "VALKEY_MODE=standalone\n"
        "VALKEY_HOST=127.0.0.1\n"
        "VALKEY_PORT=6380\n"
        "VALKEY_TLS=0\n"
        "VALKEY_DB=0\n"
        "VALKEY_CACHE_HOST=127.0.0.1\n"
        "VALKEY_CACHE_PORT=6379\n"
        "VALKEY_CACHE_TLS=0\n"
        "VALKEY_CACHE_DB_USER_INDEX=0\n"
        "VALKEY_CACHE_DB_USER_CACHE=1\n"
        "VALKEY_CACHE_DB_SESSION_CACHE=2\n"
        "VALKEY_CACHE_DB_MESSAGE_QUEUE=3\n"
        "VALKEY_CACHE_USER_CAP=100\n"
        "VALKEY_CACHE_USER_TTL=3600\n"
        "VALKEY_CACHE_MESSAGE_CAP=1000\n"
        "VALKEY_CACHE_MESSAGE_TTL=86400\n"
        "VALKEY_CACHE_SESSION_TTL=86400\n"
        "VALKEY_CACHE_SESSION_SLIDING=1\n"
    )


def test_plan_bounds_are_the_schemas():
    """db numbers 0..15 and TTLs up to ten years, as the plan refuses them."""
    assert (MAX_DATABASES, MAX_TTL) == (16, 315_360_000)
    limits = {
        name: [m.le for m in field.metadata if hasattr(m, "le")]
        for name, field in CacheDb.model_fields.items()
    }
    assert limits["db"] == [MAX_DATABASES - 1] and limits["ttl"] == [MAX_TTL]
    assert [m.le for m in Instance.model_fields["databases"].metadata if hasattr(m, "le")] == [
        MAX_DATABASES
    ]
