"""Rendered configs of scale-out instances keep every planned `save` rule."""

from __future__ import annotations

from valkey_plans.plan import Plan
from valkey_plans.render import instance_config


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
