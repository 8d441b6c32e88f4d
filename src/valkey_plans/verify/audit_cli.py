"""`valkey-plans audit`: the keyspace audit of every instance of an inventory, printed.

Kept out of `valkey_plans.cli.main` so the command line module stays a table of
commands; the audit itself (`valkey_plans.verify.audit`) knows nothing about terminals.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from valkey_plans.plan import Instance
from valkey_plans.verify.audit import VANISHED, InstanceAudit, audit_instance, total_keys
from valkey_plans.verify.audit_rules import CONFORMING, STRUCTURAL, VIOLATION
from valkey_plans.verify.reach import instance_clients
from valkey_plans.verify.store_links import LinkWalk

#: The columns of the report: how many keys of a db fell into each class.
CLASSES = (CONFORMING, STRUCTURAL, VIOLATION, VANISHED)


def _print(host: str, report: InstanceAudit) -> None:
    click.echo(
        f"{host} {report.instance} ({report.role}): "
        + ("ok" if report.ok else f"{report.violations} violations")
    )
    click.echo(f"  {'db':>3}  {'name':<14}{'keys':>10}" + "".join(f"{c:>12}" for c in CLASSES))
    for count in sorted(report.dbs.values(), key=lambda d: d.db):
        cells = "".join(f"{count.classes.get(c, 0):>12}" for c in CLASSES)
        click.echo(f"  {count.db:>3}  {count.name:<14}{count.keys:>10}{cells}")
    for violation in report.sample:
        click.echo(f"  ! {violation.kind}: {violation}")
    if report.violations > len(report.sample):
        click.echo(f"  ... and {report.violations - len(report.sample)} more")


def _store_of(host: str, inst: Instance, client: Any) -> str | None:
    """Which store a running primary serves (a cluster's nodes serve one together);
    None for a cache, a replica, or a cluster node that is a replica now."""
    if inst.role not in ("primary", "cluster-node"):
        return None
    if client.info("replication").get("role") != "master":
        return None
    return f"cluster {inst.cluster}" if inst.cluster else f"{host} {inst.name}"


def run_audit(
    targets: list[Any], only_host: str | None, only_instance: str | None, limit: int, as_json: bool
) -> list[InstanceAudit]:
    """Audit the selected instances; prints a report each (or one JSON document), then
    what the store's writes left to repair on each primary (or cluster) it walked."""
    reports: list[InstanceAudit] = []
    out: list[dict[str, Any]] = []
    walks: dict[str, LinkWalk] = {}
    for target in targets:
        if only_host and target.name != only_host:
            continue
        for inst in target.plan.instances:
            if only_instance and inst.name != only_instance:
                continue
            with instance_clients(target.testinfra_url, target.plan, inst) as client_for_db:
                total = total_keys(client_for_db(0))
                label = f"{target.name} {inst.name}"
                with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
                    report = audit_instance(target.plan, inst, client_for_db, limit, bar.update)
                if store := _store_of(target.name, inst, client_for_db(0)):
                    walks.setdefault(store, LinkWalk()).walk(client_for_db(0))
            reports.append(report)
            if as_json:
                out.append({"host": target.name, **report.to_dict()})
            else:
                _print(target.name, report)
    for store, walk in walks.items():
        links = walk.report()
        if as_json:
            out.append({"store": store, "store_links": links.to_dict()})
        else:
            click.echo(f"{store}: " + "\n".join(links.lines()))
    if as_json:
        click.echo(json.dumps(out, indent=1))
    return reports
