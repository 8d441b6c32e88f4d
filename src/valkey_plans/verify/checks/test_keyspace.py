"""After a rollout: every key of every instance follows the plan's conventions.

The same audit as `valkey-plans audit`, read-only as the `checks` user, reached from
this machine (directly, or through an SSH port forward for ssh:// hosts).
"""

from __future__ import annotations

from valkey_plans.verify.audit import audit_instance
from valkey_plans.verify.reach import host_url, instance_clients


def test_keyspace_follows_the_plan(host, plan):
    verdicts = []
    for inst in plan.instances:
        with instance_clients(host_url(host), plan, inst) as client_for_db:
            report = audit_instance(plan, inst, client_for_db, limit=5)
        if not report.ok:
            verdicts.append(report.verdict())
    assert not verdicts, " | ".join(verdicts) + " (details: valkey-plans audit INVENTORY)"
