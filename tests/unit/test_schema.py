"""The cache-db schema lives on the client side, and the plan's defaults are read off it."""

from __future__ import annotations

from dataclasses import asdict

from valkey_plans.client.schema import CACHE_DB_NAMES, CACHE_DBS, STRUCTURAL_KEYS
from valkey_plans.plan import Instance, Plan


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
