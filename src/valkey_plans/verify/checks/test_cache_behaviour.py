"""After a rollout: the cache instances bound their records and expire them, live.

The canary (`valkey_plans.verify.canary`) works on its own `vp:canary:` keys only, with a
cap of its own, so real users, sessions and messages are never evicted; it deletes
everything it wrote. It logs in as the `api` user, the one applications use.
"""

from __future__ import annotations

import pytest

from valkey_plans.client.functions import library_version, loaded_version
from valkey_plans.verify.canary import Canary
from valkey_plans.verify.reach import host_url, instance_clients
from valkey_plans.verify.report import not_applicable


def test_cache_lru_bound_and_ttls_hold_live(host, plan):
    caches = [inst for inst in plan.instances if inst.role == "cache"]
    if not caches:
        not_applicable("no cache instance on this host")
    for inst in caches:
        with instance_clients(host_url(host), plan, inst, "api", "valkey-plans:canary") as cf:
            if loaded_version(cf(0)) != library_version():
                pytest.skip(
                    f"{inst.name}: library not at {library_version()}: see the library check"
                )
            canary = Canary(cf, inst)
            try:
                canary.run()
            finally:
                left = canary.cleanup()
            assert not left, f"{inst.name}: canary keys left behind: {left}"
