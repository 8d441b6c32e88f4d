"""Plan validation: every bad value stops with host, field, value and what is allowed."""

from __future__ import annotations

import pytest

from valkey_plans.plan import DEFAULTS, Plan, PlanError


def cache(**over):
    return {"name": "cache", "role": "cache", "port": 6379, **over}


def error_of(data: dict, host: str = "web-1") -> str:
    with pytest.raises(PlanError) as info:
        Plan.from_host_data(host, data)
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"valkey_instances": [cache(maxmemory="lots")]},
            "host web-1: valkey_instances[cache].maxmemory = 'lots': allowed: bytes as an integer",
        ),
        (
            {"valkey_instances": [cache(**{"maxmemory-policy": "lru"})]},
            "host web-1: valkey_instances[cache].maxmemory-policy = 'lru': allowed: one of"
            " 'noeviction', 'allkeys-lru'",
        ),
        (
            {"valkey_instances": [cache(port=70000)]},
            "host web-1: valkey_instances[cache].port = 70000: allowed: a TCP port from 1 to 65535",
        ),
        (
            {"valkey_instances": [cache(databases=2)]},
            "host web-1: valkey_instances[cache]: databases = 2: a cache instance needs at least 4",
        ),
        (
            {
                "valkey_instances": [
                    {"name": "main", "role": "primary", "port": 6379, "databases": 4}
                ]
            },
            "host web-1: valkey_instances[main]: databases = 4: a primary instance has db 0 only;"
            " allowed: 1",
        ),
        (
            {"valkey_instances": [cache(), {"name": "main", "role": "primary", "port": 6379}]},
            "host web-1: valkey_instances: two instances with port 6379; allowed: one instance per port",
        ),
        (
            {"valkey_instances": [cache(), cache(port=6380)]},
            "host web-1: valkey_instances: two instances with name 'cache'; allowed: one instance per name",
        ),
        (
            {"valkey_domains": ["usr", "zzz"]},
            "host web-1: valkey_domains: unknown domain 'zzz'; allowed: con, crt, msg, ord, otp, prd,"
            " ses, usr, or declare it in valkey_custom_domains",
        ),
        (
            {"valkey_domains": ["usr", "User"]},
            "host web-1: valkey_domains = ['usr', 'User']: 'User': allowed: exactly 3 lowercase letters",
        ),
        (
            {"valkey_custom_domains": {"invoice": "bills"}},
            "'invoice': allowed: exactly 3 lowercase letters a-z",
        ),
        (
            {"valkey_instances": [cache(role="master")]},
            "valkey_instances[cache].role = 'master': allowed: one of 'cache', 'primary', 'replica'"
            " or 'cluster-node'",
        ),
        (
            {"valkey_instances": [cache(maxmemory_samples=0)]},
            "valkey_instances[cache].maxmemory-samples = 0: allowed: an integer from 1 to 64",
        ),
        (
            {"valkey_instances": [cache(bind=["localhost"])]},
            "'localhost' is not an IP address",
        ),
        (
            {"valkey_instances": [cache(colour="blue")]},
            "valkey_instances[cache].colour = 'blue': unknown setting",
        ),
    ],
)
def test_bad_plan_names_host_field_value_and_what_is_allowed(data, expected):
    message = error_of(data)
    assert expected in message, message


def test_every_problem_is_reported_at_once():
    message = error_of({"valkey_instances": [cache(port=0, maxmemory="x")]})
    assert "port = 0" in message and "maxmemory = 'x'" in message


def test_defaults_give_a_cache_on_6379_with_the_db_map():
    plan = Plan.from_host_data("h", {})
    (inst,) = plan.instances
    assert (inst.role, inst.port, inst.databases) == ("cache", 6379, 4)
    assert inst.maxmemory_policy == "volatile-lru"
    assert [
        inst.db(n).db for n in ("user_index", "user_cache", "session_cache", "message_queue")
    ] == [
        0,
        1,
        2,
        3,
    ]
    assert inst.db("user_cache").cap == 100
    assert inst.db("user_index").ttl is None, "the index must never expire"


def test_role_decides_policy_and_persistence_unless_the_plan_says_otherwise():
    plan = Plan.from_host_data(
        "h",
        {
            "valkey_instances": [
                {"name": "main", "role": "primary", "port": 6380},
                cache(**{"maxmemory-policy": "allkeys-lru"}),
            ]
        },
    )
    main, local = plan.instances
    assert (main.maxmemory_policy, main.appendonly, main.databases) == ("noeviction", True, 1)
    assert local.maxmemory_policy == "allkeys-lru"


def test_python_spelling_of_valkey_directives_is_accepted():
    plan = Plan.from_host_data("h", {"valkey_instances": [cache(maxmemory_policy="allkeys-lfu")]})
    assert plan.instances[0].maxmemory_policy == "allkeys-lfu"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("100", 100), ("1k", 1000), ("1kb", 1024), ("2GB", 2 * 1024**3)],
)
def test_maxmemory_in_bytes_matches_valkey_units(text, expected):
    plan = Plan.from_host_data("h", {"valkey_instances": [cache(maxmemory=text)]})
    assert plan.instances[0].maxmemory_bytes == expected


def test_app_references_must_name_instances_of_the_right_role():
    assert "valkey_app.hosted_instance = 'nope'" in error_of(
        {"valkey_app": {"hosted_instance": "nope"}}
    )
    message = error_of(
        {
            "valkey_instances": [{"name": "main", "role": "primary", "port": 6380}],
            "valkey_app": {"cache_instance": "main"},
        }
    )
    assert "valkey_app.cache_instance = 'main': allowed: an instance with role cache" in message


def test_defaults_surface_is_what_the_plan_reads():
    plan = Plan.from_host_data("h", DEFAULTS)
    assert plan.domains == DEFAULTS["valkey_domains"]
    assert plan.app.name == DEFAULTS["valkey_app"]["name"]
