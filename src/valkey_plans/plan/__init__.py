"""The validated plan: what Valkey should look like on each host of an inventory.

The model lives in `valkey_plans.plan.model` and every default in
`valkey_plans.plan.defaults`; the names callers need are re-exported here
(`from valkey_plans.plan import Plan, PlanError, DEFAULTS`). Topology, layout,
secrets, ACL, application settings, rendering and inventory loading are the
package's other modules, imported by their own names (rendering needs jinja2 and
inventory loading pyinfra, so importing this facade needs neither).
"""

from valkey_plans.plan.defaults import (
    DEFAULTS,
    INSTANCE_DEFAULTS,
    ROLE_DEFAULTS,
    SENTINEL_DEFAULTS,
    TLS_DEFAULTS,
)
from valkey_plans.plan.model import (
    CACHE_DB_NAMES,
    App,
    CacheDb,
    Exporter,
    Instance,
    Plan,
    PlanError,
    Sentinel,
    Tls,
)

__all__ = [
    "CACHE_DB_NAMES",
    "DEFAULTS",
    "INSTANCE_DEFAULTS",
    "ROLE_DEFAULTS",
    "SENTINEL_DEFAULTS",
    "TLS_DEFAULTS",
    "App",
    "CacheDb",
    "Exporter",
    "Instance",
    "Plan",
    "PlanError",
    "Sentinel",
    "Tls",
]
