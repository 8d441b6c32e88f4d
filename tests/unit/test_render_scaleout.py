"""Rendered configs and app settings of scale-out instances."""

from __future__ import annotations

from valkey_plans.plan import Plan
from valkey_plans.plan.app_settings import app_environment
from valkey_plans.plan.render import instance_config


def test_include_comes_after_every_save_rule():
    # Valkey 8 leaves config-file mode after an `include`, so a `save` line below it
    # replaces the rules above it: live `save` was '60 10000' instead of all three.
    plan = Plan.from_host_data(
        "db-1",
        {
            "valkey_instances": [
                {
                    "name": "n0",
                    "role": "cluster-node",
                    "cluster": "main",
                    "port": 7000,
                    "bind": ["127.0.0.1", "10.0.0.1"],
                }
            ],
            "valkey_acl": True,
            "valkey_app": {"hosted_instance": "n0", "cache_instance": None},
        },
    )
    lines = instance_config(plan, plan.instance("n0")).splitlines()
    saves = [i for i, line in enumerate(lines) if line.startswith("save ")]
    includes = [i for i, line in enumerate(lines) if line.startswith("include ")]
    assert len(saves) == 3 and len(includes) == 1, lines
    assert includes[0] > max(saves)


def test_cluster_app_settings_name_every_node_as_a_seed():
    """A client starts from any node that answers, not only from the local one."""
    plans = [
        Plan.from_host_data(
            host,
            {
                "valkey_instances": [
                    {
                        "name": f"n{i}",
                        "role": "cluster-node",
                        "cluster": "main",
                        "port": 7000 + i,
                        "bind": [f"10.0.0.{h}"],
                    }
                    for i in range(2)
                ],
                "valkey_acl": True,
                "valkey_app": {"hosted_instance": "n0", "cache_instance": None},
            },
        )
        for h, host in enumerate(["db-1", "db-2", "db-3"], start=1)
    ]
    env = app_environment(plans[1], plans=plans)
    assert env["VALKEY_MODE"] == "cluster"
    assert (env["VALKEY_HOST"], env["VALKEY_PORT"]) == ("10.0.0.2", "7000")
    assert env["VALKEY_CLUSTER_NODES"].split(",") == [
        f"10.0.0.{h}:{7000 + i}" for h in (1, 2, 3) for i in range(2)
    ]
