"""Valkey's packages at the plan's series (`valkey_version`): source, pin, hold, upgrade.

The packages are held (`apt-mark hold`), so unattended upgrades or an operator's
`apt upgrade` never replace or restart Valkey behind the deploy. The deploy installs or
upgrades them only when the host's series differs from the plan's, and the instances
then restart the settled way (deploy/restarts.py); in a Sentinel group the primary's
host goes last, after a handover (deploy/handover.py), and a cluster's nodes restart
replicas first, then each primary after a failover (deploy/cluster_upgrade.py).
Refusals come before any change: a series the OS cannot run, a downgrade, a version
change on replication without Sentinel, and a Sentinel group or a cluster whose hosts
plan different versions.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files

from valkey_plans.deploy.operations import checked_file, unsupported_os
from valkey_plans.plan import Plan, topology
from valkey_plans.plan.render import MANAGED_HEADER
from valkey_plans.plan.versions import Source, VersionError, os_of, resolve, series_of

VALKEY_PACKAGES = ["valkey-server", "valkey-tools"]
PIN_FILE = "/etc/apt/preferences.d/valkey-plans-valkey.pref"


class HeldPackages(FactBase[list[str]]):
    """Packages apt keeps at their version (`apt-mark showhold`)."""

    default = list

    def command(self) -> str:
        return "apt-mark showhold"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


def installed_version(package: str = "valkey-server") -> str | None:
    """The installed version of `package` (None: not installed)."""
    versions = host.get_fact(DebPackages).get(package) or []
    return sorted(versions)[-1] if versions else None


def planned_source(plan: Plan, distro: dict) -> Source | None:
    """The series this host runs after the deploy; VersionError before any change when it
    cannot (see plan/versions.py). None: an OS whose own Valkey is all it gets."""
    name, major = os_of(distro)
    return resolve(plan.version, name, major, installed_version())


def version_refusal(plans: list[Plan], plan: Plan, distro: dict) -> str | None:
    """Why this host's Valkey must not be touched, checked before the first operation."""
    try:
        series = upgrade_pending(plan, distro)
    except VersionError as error:
        return f"host {plan.host}: {error}"
    if series is None:
        return None
    installed = series_of(installed_version() or "")
    change = f"valkey_version {plan.version!r} would upgrade Valkey {installed} to {series}"
    change += f" on host {plan.host}"
    peers = {p.host: p.version for p in _cluster_hosts(plans, plan) if p.version != plan.version}
    if peers:
        return (
            f"{change}, but the other hosts of its Valkey Cluster plan other versions"
            f" ({peers}): one valkey_version for every host of a cluster, so that every"
            " primary hands its slots to a replica of the new series. Nothing was changed"
        )
    replicating = _replicating(plans, plan)
    in_group = plan.sentinel is not None and replicating <= topology.sentinel_watched(plans)
    if (plan.sentinel is not None or replicating) and not in_group:
        return (
            f"{change}, whose instances replicate without a Sentinel of their group on this"
            " host; allowed here: the series it runs, or a Sentinel group with a sentinel on"
            " every host (it hands the primary role over before the old primary is"
            " upgraded). Nothing was changed"
        )
    group = [p for p in _group(plans, plan) if p.host != plan.host]
    others = {p.host: p.version for p in group if p.version != plan.version}
    if others:
        return (
            f"{change}, but its Sentinel group plans other versions ({others}): one"
            " valkey_version for every host of the group, so that no replica is left behind"
            " a primary it cannot follow. Nothing was changed"
        )
    return None


def _replicating(plans: list[Plan], plan: Plan) -> set[str]:
    """This host's instances that replicate or are replicated ("HOST/INSTANCE")."""
    followed = {i.replicaof for p in plans for i in p.instances if i.role == "replica"}
    watched = topology.sentinel_watched(plans)
    refs = {f"{plan.host}/{i.name}": i for i in plan.instances}
    return {
        ref for ref, i in refs.items() if i.role == "replica" or ref in followed or ref in watched
    }


def _cluster_hosts(plans: list[Plan], plan: Plan) -> list[Plan]:
    """The plans of the hosts with a node of a cluster one of this host's nodes is in."""
    clusters = {i.cluster for i in plan.instances if i.cluster}
    hosts = {node.host for name in clusters for node in topology.cluster_nodes(plans, name)}
    return [p for p in plans if p.host in hosts]


def _group(plans: list[Plan], plan: Plan) -> list[Plan]:
    """The plans of the hosts in this host's Sentinel group (its sentinels' and instances')."""
    if plan.sentinel is None:
        return []
    primary = plan.sentinel.primary
    members = {primary}
    members |= {f"{p.host}/{i.name}" for p in plans for i in p.instances if i.replicaof == primary}
    hosts = {ref.split("/", 1)[0] for ref in members}
    hosts |= {p.host for p in plans if p.sentinel and p.sentinel.primary == primary}
    return [p for p in plans if p.host in hosts]


def upgrade_pending(plan: Plan, distro: dict) -> str | None:
    """The series this host's Valkey moves to in this run (None: it stays); VersionError
    when the plan asks for one this host cannot run or move to."""
    source = planned_source(plan, distro)
    installed = installed_version()
    if source is None or installed is None or series_of(installed) == source.series:
        return None
    return source.series


def _pin(suite: str) -> str:
    """apt preferences: Valkey's packages from `suite`, nothing else from it."""
    return (
        f"# {MANAGED_HEADER}\n"
        f"Package: *\nPin: release n={suite}\nPin-Priority: 1\n\n"
        f"Package: valkey-server valkey-tools valkey-sentinel\n"
        f"Pin: release n={suite}\nPin-Priority: 990\n"
    )


def install_valkey(
    plan: Plan, distro: dict, extra: Sequence[str], defer: bool = False
) -> OperationMeta | None:
    """Valkey's packages (and `extra` ones) at the plan's series; the returned operation
    changed the host when Valkey was installed or upgraded (its instances restart).

    `defer`: only the sources now; Valkey itself later, by `valkey_packages` (the host
    of a Sentinel group's primary, upgraded after its handover)."""
    source = planned_source(plan, distro)
    name, major = os_of(distro)
    if source is None and not (name == "Ubuntu" and major >= 24):
        raise unsupported_os(f"{name} {major}")
    added = _sources(plan, source) if source is not None and source.suite else []
    apt.update(
        name="Refresh package lists for the new source",
        _if=lambda: any(op.did_change() for op in added),
    )
    apt.update(name="Package lists fresh", cache_time=plan.apt_cache_time)
    target = source.suite if source and source.suite and not source.pinned else None
    tmpfiles_kept()
    valkey = None if defer else valkey_packages(plan, source)
    if extra:
        apt.packages(
            name=f"Install {', '.join(extra)}",
            packages=list(extra),
            extra_install_args=f"-t {target}" if target else None,
        )
    return valkey


#: Valkey 9.1's packages ship tmpfiles.d rules with `Z /etc/valkey 2770 valkey valkey`:
#: at every boot and every package configure, every file there becomes 2770, the ACL and
#: login files the deploy made 0600 group-writable and readable, and the next deploy
#: would restart every instance to put the modes back. Same-named files in /etc/tmpfiles.d
#: replace the package's: they keep its directory rule and drop the recursive one.
TMPFILES_REPLACED = ("valkey-server.conf", "valkey-sentinel.conf")
TMPFILES_RULE = "d /etc/valkey 2770 valkey valkey\n"


def tmpfiles_kept() -> None:
    """The package's recursive chmod of /etc/valkey replaced (see TMPFILES_REPLACED),
    before any install or upgrade runs the package's own systemd-tmpfiles."""
    files.directory(
        name="systemd-tmpfiles configuration directory",
        path="/etc/tmpfiles.d",
        user="root",
        group="root",
        mode="755",
    )
    for name in TMPFILES_REPLACED:
        checked_file(
            name=f"/etc/tmpfiles.d/{name}: the package's recursive chmod of /etc/valkey off",
            content=f"# {MANAGED_HEADER}\n{TMPFILES_RULE}",
            dest=f"/etc/tmpfiles.d/{name}",
            user="root",
            group="root",
            mode="644",
        )


def valkey_packages(plan: Plan, source: Source | None) -> OperationMeta:
    """Valkey's own packages at `source`'s series, then held; the returned operation
    changed the host when Valkey was installed or upgraded."""
    packages = VALKEY_PACKAGES + (["valkey-sentinel"] if plan.sentinel else [])
    series = source.series if source else None
    target = source.suite if source and source.suite and not source.pinned else None
    valkey = valkey_at_series(
        name=f"Valkey {series or '(the OS own)'}: {', '.join(packages)} installed",
        packages=packages,
        series=series,
        target=target,
    )
    packages_held(name=f"{', '.join(packages)} held (apt-mark hold)", packages=packages)
    return valkey


def _sources(plan: Plan, source: Source) -> list[OperationMeta]:
    """The apt source of `source` (and its pin when only Valkey may come from it)."""
    suite = source.suite or ""
    added = [
        apt.repo(
            name=f"Add {suite} (Valkey {source.series} lives there)",
            src=f"deb {plan.debian_mirror} {suite} main",
            filename=suite,
        )
    ]
    if source.pinned:
        added.append(
            checked_file(
                name=f"Only Valkey's packages come from {suite} (apt pin)",
                content=_pin(suite),
                dest=PIN_FILE,
                user="root",
                group="root",
                mode="644",
            )
        )
    return added


#: apt-get install without questions, keeping config files the host has.
APT_INSTALL = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-change-held-packages"
    " -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
)


@operation()
def valkey_at_series(
    packages: list[str], series: str | None, target: str | None = None
) -> Generator[StringCommand, None, None]:
    """
    Install `packages` at `series`, upgrading them when they are at another (held ones
    too); nothing when they are installed at that series.

    + packages: Valkey's packages
    + series: e.g. "9.1" (None: whatever the OS's sources give, installed once)
    + target: apt's target release for the install (`-t`, e.g. bookworm-backports)
    """
    installed = host.get_fact(DebPackages)
    missing = [
        p
        for p in packages
        if not any(series is None or series_of(v) == series for v in installed.get(p) or [])
    ]
    if missing:
        where = ["-t", QuoteString(target)] if target else []
        yield StringCommand(APT_INSTALL, *where, *(QuoteString(p) for p in packages))
        if series:
            for package in packages:
                yield _at_series(package, series)
    else:
        host.noop(f"{', '.join(packages)} at {series or 'the OS own'}")


@operation()
def packages_held(packages: list[str]) -> Generator[StringCommand, None, None]:
    """
    Hold `packages` (`apt-mark hold`): unattended upgrades and `apt upgrade` leave them.

    + packages: installed packages to hold
    """
    held = set(host.get_fact(HeldPackages))
    if held.issuperset(packages):
        host.noop(f"{', '.join(packages)} held")
        return
    yield StringCommand("apt-mark hold", *(QuoteString(p) for p in packages))


def _at_series(package: str, series: str) -> StringCommand:
    """Fail unless `package` is now installed at `series` (a source or pin gone wrong)."""
    return StringCommand(
        "v=$(dpkg-query -W -f='${Version}'",
        QuoteString(package),
        '); case "${v#*:}" in',
        StringCommand(QuoteString(f"{series}."), "*)", _separator=""),
        ";; *) echo",
        QuoteString(f"{package} is at"),
        '"$v",',
        QuoteString(f"not Valkey {series}"),
        "; exit 1;; esac",
    )
