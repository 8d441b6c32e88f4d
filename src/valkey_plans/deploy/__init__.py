"""The packaged pyinfra deploy: install Valkey and converge every planned instance.

Use it from a deploy file (`deploy.py` at the repository root does exactly this):

    from valkey_plans.deploy import valkey_plan
    valkey_plan()
"""

from __future__ import annotations

import posixpath
from functools import partial

from pydantic import SecretStr
from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import files

from valkey_plans.deploy.adoption import ListeningPrograms, adopting, refusal
from valkey_plans.deploy.backup import converge_backups
from valkey_plans.deploy.backup_host import converge_backup_host
from valkey_plans.deploy.cluster import cluster_formed
from valkey_plans.deploy.cluster_upgrade import (
    Node,
    behind,
    cluster_primaries_handed_over,
    cluster_replicas_upgraded,
)
from valkey_plans.deploy.exporter import PACKAGE as EXPORTER_PACKAGE
from valkey_plans.deploy.exporter import converge_exporters
from valkey_plans.deploy.functions import library_loaded
from valkey_plans.deploy.handover import ReplicationRole, primary_handed_over
from valkey_plans.deploy.operations import acl_reload, checked_file
from valkey_plans.deploy.packages import (
    install_valkey,
    planned_source,
    upgrade_pending,
    valkey_packages,
    version_refusal,
)
from valkey_plans.deploy.sentinel import converge_sentinel, restarted_on_upgrade, sentinel_login
from valkey_plans.deploy.service import (
    Init,
    Service,
    changed,
    init_system,
    package_service_off,
    service_runner,
)
from valkey_plans.plan import DEFAULTS, Instance, Plan, PlanError, topology
from valkey_plans.plan.app_settings import app_environment
from valkey_plans.plan.layout import DEBIAN
from valkey_plans.plan.render import (
    TEMPLATE_DIR,
    acl_file,
    app_files,
    instance_config,
    replication_auth,
)
from valkey_plans.plan.secrets import (
    SecretsError,
    hosted_secret_names,
    load_secrets,
)
from valkey_plans.plan.secrets_needed import acl_users

Passwords = dict[str, SecretStr]

CHECKER = "/usr/local/lib/valkey-plans/check-config"


def current_plans() -> tuple[Plan, list[Plan]]:
    """The validated plan of the host being deployed, and every plan of the inventory.

    Raises before any change. The whole inventory is checked: a replica, a cluster or
    a sentinel spans hosts, and a host must not converge to a topology that cannot work.
    """
    try:
        plans = {other.name: Plan.from_host_data(other.name, other.data) for other in inventory}
        topology.validate(plans.values())
        return plans[host.name], list(plans.values())
    except PlanError as exc:
        # pyinfra prints a DeployError as one clean message, without a traceback.
        raise DeployError(str(exc)) from None


def current_passwords(plan: Plan) -> Passwords | None:
    """The ACL users' passwords, read on the machine running pyinfra; None without ACLs."""
    if not plan.acl:
        return None
    try:
        return load_secrets(plan.secrets_file, plan.secrets_generate, users=acl_users(plan))
    except SecretsError as exc:
        raise DeployError(f"host {plan.host}: {exc}") from None


def hosted_passwords(plan: Plan) -> Passwords | None:
    """The external hosted tier's logins (secrets `hosted`, `hosted_<workload>`), read on
    the machine running pyinfra; None without one. Its passwords are the service's, not
    ours: no length rule, but still one printable word each (they reach the env file)."""
    if plan.app.hosted is None:
        return None
    names = hosted_secret_names(plan.app.hosted.login)
    try:
        return load_secrets(plan.secrets_file, False, users=names, min_length=1)
    except SecretsError as exc:
        raise DeployError(f"host {plan.host}: valkey_app.hosted: {exc}") from None


def _install_checker() -> None:
    files.directory(name="valkey-plans helper directory", path="/usr/local/lib/valkey-plans")
    files.put(
        name="Config checker (throwaway valkey-server on a candidate config)",
        src=str(TEMPLATE_DIR / "check-config.sh"),
        dest=CHECKER,
        mode="755",
    )


def _converge_instance(
    plans: list[Plan],
    plan: Plan,
    inst: Instance,
    init: Init,
    passwords: Passwords | None,
    upgraded: OperationMeta | None = None,
    restarts: bool = True,
) -> None:
    """One instance's files, its service running, and its restart when a file or
    Valkey itself (`upgraded`: the package operation) changed; `restarts` False: a
    cluster node the upgrade restarts in its own order (`_cluster_upgrade`)."""
    repl = None
    if passwords and plan.replication:
        repl = checked_file(
            name=f"Replication login of {inst.name}",
            content=replication_auth(passwords["replica"]),
            dest=inst.paths.replication_auth,
            mode="600",
        )
    acl = None
    if passwords:
        acl = checked_file(
            name=f"ACL users of {inst.name} (checked by a throwaway valkey-server first)",
            content=acl_file(plan, inst, passwords),
            dest=inst.paths.aclfile,
            checker=f"{CHECKER} /dev/null --aclfile",
            mode="600",
        )
    watched = f"{plan.host}/{inst.name}" in topology.sentinel_watched(plans)
    config = checked_file(
        name=f"Config of {inst.name} (checked by a throwaway valkey-server first)",
        content=instance_config(plan, inst, replicaof=topology.replicaof(plans, inst)),
        dest=inst.paths.config,
        checker=CHECKER,
        # Sentinel rewrites a watched instance's config after a failover: that drift is
        # Sentinel's, and must not make the next deploy restart the new primary.
        record=inst.paths.config_record if watched else None,
    )
    runner = service_runner(instance_service(inst), init)
    # An instance that already has ACL users (its login file exists) takes its new ones
    # before a restart, and the login files follow: the restart's settled checks log in
    # with what the instance knows. One without them yet gets them by its restart.
    had_login = host.get_fact(File, path=inst.paths.auth_file("admin")) is not None
    started = runner.running()
    if acl is not None and passwords:
        acl_reload(
            name=f"ACL LOAD on {inst.name} (no restart)",
            socket=inst.paths.unixsocket,
            auth_file=inst.paths.auth_file("admin"),
            _if=lambda: (
                acl.did_change()
                and not started.did_change()
                and (had_login or not changed(config, repl))
            ),
        )
        _auth_files(inst, passwords)
    if restarts:
        runner.restart_if([config, repl, upgraded])


def _primary_to_hand_over(
    plans: list[Plan], plan: Plan, distro: dict, passwords: Passwords | None
) -> Instance | None:
    """The Sentinel-watched instance on this host that is its group's primary now, when
    this run upgrades Valkey here: it hands the role over before its host upgrades."""
    if plan.sentinel is None or upgrade_pending(plan, distro) is None:
        return None
    watched = topology.sentinel_watched(plans)
    for inst in plan.instances:
        if f"{plan.host}/{inst.name}" not in watched:
            continue
        auth_file = admin_auth(inst, passwords)
        role = host.get_fact(ReplicationRole, socket=inst.paths.unixsocket, auth_file=auth_file)
        if role == "master":
            return inst
    return None


def _hand_over_then_upgrade(
    plan: Plan, primary: Instance, init: Init, passwords: Passwords | None, distro: dict
) -> None:
    """After every other host of the group: hand the primary role over, then upgrade this
    host's Valkey and restart its instances and sentinel, settled, one host at a time."""
    assert plan.sentinel is not None
    source = planned_source(plan, distro)
    assert source is not None
    primary_handed_over(
        name=f"{primary.name}: primary role handed over before Valkey {source.series}",
        socket=primary.paths.unixsocket,
        auth_file=admin_auth(primary, passwords),
        address=primary.peer_address,
        port=primary.port,
        series=source.series,
        group=plan.sentinel.name,
        sentinel_address=plan.sentinel.address,
        sentinel_port=plan.sentinel.port,
        sentinel_auth_file=sentinel_login(plan, passwords),
    )
    late = valkey_packages(plan, source)
    for inst in plan.instances:
        runner = service_runner(instance_service(inst), init)
        runner.running()
        runner.restart_if([late])
    restarted_on_upgrade(plan, init, passwords, late.did_change)


def _cluster_nodes(plan: Plan, init: Init, passwords: Passwords | None) -> list[Node]:
    """This host's cluster nodes, as the cluster upgrade restarts them."""
    return [
        Node(
            label=f"cluster node {inst.name} (port {inst.port})",
            socket=inst.paths.unixsocket,
            auth_file=admin_auth(inst, passwords),
            restart=service_runner(instance_service(inst), init).restart_command(),
        )
        for inst in plan.instances
        if inst.role == "cluster-node"
    ]


def _cluster_upgrade(nodes: list[Node], series: str | None) -> None:
    """Every host's replica nodes to `series` first, then each primary after a failover
    to an upgraded replica (deploy/cluster_upgrade.py), one node at a time."""
    if not nodes or series is None:
        return
    cluster_replicas_upgraded(
        name=f"Cluster replicas here restarted on Valkey {series} (one node at a time)",
        nodes=nodes,
        series=series,
        _serial=True,
    )
    cluster_primaries_handed_over(
        name=f"Cluster primaries here failed over, then restarted on Valkey {series}",
        nodes=nodes,
        series=series,
        _serial=True,
    )


def admin_auth(inst: Instance, passwords: Passwords | None) -> str | None:
    """The admin password file valkey-cli reads on the host (None: no ACLs, no login)."""
    return inst.paths.auth_file("admin") if passwords else None


def instance_service(inst: Instance) -> Service:
    """What the service runner needs of an instance on a Debian-family host."""
    paths = inst.paths
    return Service(
        label=f"valkey-server {inst.name}",
        config=paths.config,
        pidfile=paths.pidfile,
        unit=inst.unit,
        run_dir=paths.run_dir,
        socket=paths.unixsocket,
        logfile=paths.logfile,
        cluster_node=inst.role == "cluster-node",
        # whether or not this plan has ACLs: a restart's settled checks log in with it
        # when it exists and the running instance takes it (deploy/restarts.py)
        auth_file=inst.paths.auth_file("admin"),
    )


def _clusters(plans: list[Plan], plan: Plan, passwords: Passwords | None) -> None:
    """Form each cluster this host's instances belong to, from the cluster's first host."""
    for name in sorted({i.cluster for i in plan.instances if i.cluster}):
        members = topology.cluster_nodes(plans, name)
        first = members[0]
        if first.host != plan.host:
            continue
        cluster_formed(
            name=f"Valkey Cluster {name} formed ({len(members)} nodes)",
            addresses=[n.address for n in members],
            hosts=[n.host for n in members],
            replicas=plan.cluster_replicas,
            socket=first.instance.paths.unixsocket,
            auth_file=admin_auth(first.instance, passwords),
        )


def _auth_dirs(plan: Plan) -> None:
    """The root-only directories of the login files valkey-cli reads on the host."""
    shared = [DEBIAN.state, posixpath.dirname(DEBIAN.paths("any").auth_dir)]
    for path in shared + [inst.paths.auth_dir for inst in plan.instances]:
        files.directory(
            name=f"Root-only directory {path}", path=path, user="root", group="root", mode="700"
        )


def _auth_files(inst: Instance, passwords: Passwords) -> None:
    """admin and checks passwords for valkey-cli on the host: root only, one set per instance.

    Per instance, because two plans on one host may give their instances different
    passwords. Written after the instance's ACL LOAD, so that when the admin password is
    rotated, ACL LOAD still authenticates with the one the running instance knows.
    """
    for user in ("admin", "checks"):
        checked_file(
            name=f"Password of ACL user {user} for valkey-cli on {inst.name}",
            content=passwords[user].get_secret_value(),
            dest=inst.paths.auth_file(user),
            user="root",
            group="root",
            mode="600",
        )


def app_settings(
    plan: Plan,
    passwords: Passwords | None,
    env_dir: str,
    owner: str,
    group: str | None,
    plans: list[Plan] | None = None,
) -> None:
    """The env file and JSON that applications read; 0640, readable by the app's group.

    An external hosted tier's CA file is installed beside them (public, but in the
    settings' own directory, so the path in VALKEY_TLS_CA_FILE is the deploy's).
    """
    files.directory(
        name="Application settings directory", path=env_dir, user=owner, group=group, mode="750"
    )
    ca_path = plan.app.hosted_ca_path(env_dir)
    if ca_path and plan.app.hosted:
        with open(plan.app.hosted.tls_ca_file, encoding="ascii") as pem:
            ca = pem.read()
        checked_file(
            name="Hosted tier CA file",
            content=ca,
            dest=ca_path,
            user=owner,
            group=group,
            mode="644",
        )
    hosted = hosted_passwords(plan)
    settings = app_environment(plan, passwords, plans, hosted, env_dir)
    for filename, content in app_files(plan, settings).items():
        checked_file(
            name=f"Application settings {filename}",
            content=content,
            dest=f"{env_dir}/{filename}",
            user=owner,
            group=group,
            mode="640",
        )


@deploy("valkey-plans", data_defaults=DEFAULTS)
def valkey_plan() -> None:
    """Install Valkey and converge this host to its plan (see README, 'Plan settings')."""
    plan, plans = current_plans()
    passwords = current_passwords(plan)
    hosted_passwords(plan)  # a missing hosted secret stops the run before its first operation
    init = init_system()
    if init is Init.BREW:
        from valkey_plans.deploy.macos import converge_macos

        converge_macos(plan, passwords)
        return
    refused = refusal(plan, host.get_fact(ListeningPrograms))
    if refused:
        raise DeployError(refused)
    distro = host.get_fact(LinuxDistribution)
    refused = version_refusal(plans, plan, distro)
    if refused:
        raise DeployError(refused)
    handover = _primary_to_hand_over(plans, plan, distro, passwords)
    extra = [EXPORTER_PACKAGE] if plan.exported else []
    valkey = install_valkey(plan, distro, extra, defer=handover is not None)
    package_service_off("valkey-server", init, " (it would hold 6379)")
    _install_checker()
    if passwords:
        _auth_dirs(plan)
    nodes = _cluster_nodes(plan, init, passwords)
    series = source.series if (source := planned_source(plan, distro)) else None
    stale = {node.socket for node in behind(nodes, series)} if series else set()
    for inst in plan.instances:
        converge = partial(_converge_instance, plans, plan, init=init, passwords=passwords)
        if not adopting(plan, plans, inst, converge, passwords):
            node = inst.role == "cluster-node"
            restarts = inst.paths.unixsocket not in stale
            _converge_instance(
                plans, plan, inst, init, passwords, None if node else valkey, restarts
            )
    _clusters(plans, plan, passwords)
    _cluster_upgrade(nodes, series)
    if plan.sentinel:
        converge_sentinel(plans, plan, init, passwords, valkey)
    if handover is not None:
        _hand_over_then_upgrade(plan, handover, init, passwords, distro)
    for inst in plan.instances:
        if inst.role == "cache":
            library_loaded(
                name=f"valkey_plans Functions library on {inst.name}",
                port=inst.port,
                socket=inst.paths.unixsocket,
                auth_file=admin_auth(inst, passwords),
            )
    converge_exporters(plan, init, passwords, plans)
    # Before any host's backups: their repositories on a backup host are initialised
    # through its rest-server, which must be running by then.
    converge_backup_host(plans, plan, init, distro)
    converge_backups(plans, plan, init)
    app_settings(plan, passwords, plan.app.env_dir, "root", plan.app.group, plans)
