"""`valkey-plans audit`: the keyspace audit of every instance of an inventory, printed.

Kept out of `valkey_plans.cli.main` so the command line module stays a table of
commands; the audit itself (`valkey_plans.verify.audit`) knows nothing about terminals.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from valkey_plans.verify.audit import VANISHED, InstanceAudit, audit_instance, total_keys
from valkey_plans.verify.audit_rules import CONFORMING, STRUCTURAL, VIOLATION
from valkey_plans.verify.reach import instance_clients

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


def run_audit(
    targets: list[Any], only_host: str | None, only_instance: str | None, limit: int, as_json: bool
) -> list[InstanceAudit]:
    """Audit the selected instances; prints a report each (or one JSON document)."""
    reports: list[InstanceAudit] = []
    out: list[dict[str, Any]] = []
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
            reports.append(report)
            if as_json:
                out.append({"host": target.name, **report.to_dict()})
            else:
                _print(target.name, report)
    if as_json:
        click.echo(json.dumps(out, indent=1))
    return reports
