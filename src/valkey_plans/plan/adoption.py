"""The plan's `adopt` setting: a running Redis that a planned Valkey instance takes over.

Without it the deploy refuses a host where redis-server holds a planned port
(`valkey_plans.deploy.adoption`): moving someone's only copy of their data is never
implied. README "Coming from Redis" documents it; `valkey_plans.adopt` does the move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from valkey_plans.plan import values as rule

if TYPE_CHECKING:
    from valkey_plans.plan.model import Plan

Port = Annotated[int, AfterValidator(rule.port)]
Name = Annotated[str, AfterValidator(rule.name)]

#: The spare port (where Valkey runs until the switch) is the port + this by default.
SPARE_OFFSET = 10000
#: Roles that may adopt: the ones a Redis of a small site is (a cache, a primary).
ADOPTING_ROLES = ("cache", "primary")


class Adopt(BaseModel):
    """`adopt: {"from": "redis", "port": 6379, "password_secret": "redis"}` on an instance."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)

    #: What runs there now: only "redis" (redis-server 5.x to 8.x).
    source: Literal["redis"] = Field(alias="from")
    #: Redis's port on this host (default: the instance's own port, which Valkey takes over).
    port: Port | None = None
    #: Name of the secret (secrets file key, or VALKEY_PLANS_SECRET_<NAME>) holding
    #: Redis's requirepass; None: Redis has no password.
    password_secret: Name | None = None
    #: Redis's ACL user the adoption logs in as, with the password of `password_secret`
    #: (None: the default user); it must be allowed every command the adoption runs,
    #: checked on Redis (ACL DRYRUN) before any change.
    user: Name | None = None
    #: Where Valkey runs until the switch (default: the instance's port + 10000).
    spare_port: Port | None = None


def redis_port(inst_port: int, adopt: Adopt) -> int:
    return adopt.port if adopt.port is not None else inst_port


def spare_port(inst_port: int, adopt: Adopt) -> int:
    return adopt.spare_port if adopt.spare_port is not None else inst_port + SPARE_OFFSET


def check(plan: Plan) -> None:
    """The cross-field rules of `adopt`, against the whole host's plan."""
    taken = {p: i.name for i in plan.instances for p in i.taken_ports}
    taken.update({p: f"{n} exporter" for n, p in plan.exporter_ports.items()})
    if plan.sentinel:
        taken[plan.sentinel.port] = "sentinel"
    for inst in plan.instances:
        adopt = inst.adopt
        if adopt is None:
            continue
        where = f"valkey_instances[{inst.name}].adopt"
        if inst.role not in ADOPTING_ROLES:
            raise ValueError(
                f"{where}: a {inst.role} cannot adopt a Redis; allowed: adopt on role"
                f" {' or '.join(ADOPTING_ROLES)}"
            )
        if adopt.user is not None and adopt.password_secret is None:
            raise ValueError(
                f"{where}.user = {adopt.user!r}: a Redis ACL user needs its password;"
                " allowed: user together with password_secret"
            )
        rport, spare = redis_port(inst.port, adopt), spare_port(inst.port, adopt)
        if taken.get(rport, inst.name) != inst.name:
            raise ValueError(
                f"{where}.port = {rport}: {taken[rport]} is planned there; allowed: Redis's"
                f" port, which only {inst.name} may take over"
            )
        if spare > 65535 or spare in taken or spare == rport:
            what = "above 65535" if spare > 65535 else f"taken ({taken.get(spare, 'Redis')})"
            raise ValueError(
                f"{where}.spare_port = {spare}: {what}; allowed: a free port 1..65535 that no"
                " instance, TLS, cluster bus, exporter or sentinel port, nor Redis, uses"
            )
