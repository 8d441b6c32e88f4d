"""valkey_version (plan/versions.py, deploy/packages.py): per-OS series, refusals first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.pyinfra_commands import linux_facts, planned_commands
from valkey_plans.deploy import valkey_plan
from valkey_plans.deploy.packages import (
    TMPFILES_RULE,
    install_valkey,
    packages_held,
    valkey_at_series,
    version_refusal,
)
from valkey_plans.plan import Plan
from valkey_plans.plan.versions import VersionError, check_version, os_of, resolve, series_of

TRIXIE_81 = "8.1.1+dfsg1-3+deb13u3"
FORKY_91 = "9.1.2-1"


def test_each_os_runs_its_own_series_unless_the_plan_says_another():
    assert resolve(None, "Debian", 12, None).suite == "bookworm-backports"
    assert resolve(None, "Debian", 13, None).series == "8.1"
    assert resolve(None, "Debian", 14, None).series == "9.1"
    nine = resolve("9", "Debian", 13, TRIXIE_81)
    assert (nine.series, nine.suite, nine.pinned) == ("9.1", "forky", True)
    assert resolve("9.1", "Debian", 13, None) == nine


def test_unset_keeps_the_series_the_host_runs():
    assert resolve(None, "Debian", 13, FORKY_91).series == "9.1"
    assert resolve(None, "Debian", 13, TRIXIE_81).series == "8.1"


@pytest.mark.parametrize(
    ("wanted", "os_name", "major", "words"),
    [
        ("9", "Debian", 12, "not available on Debian 12; allowed: 8.0"),
        ("8.1", "Debian", 14, "not available on Debian 14; allowed: 9.1"),
        ("8.0", "Debian", 13, "allowed: 8.1, 9.1"),
        ("9", "Ubuntu", 24, "allowed: none: leave valkey_version unset"),
    ],
)
def test_a_series_the_os_cannot_run_is_refused_naming_what_it_can(wanted, os_name, major, words):
    with pytest.raises(VersionError, match=words):
        resolve(wanted, os_name, major, None)


def test_a_downgrade_across_rdb_80_is_refused_naming_both_series():
    with pytest.raises(VersionError) as refused:
        resolve("8.1", "Debian", 13, FORKY_91)
    text = str(refused.value)
    assert "downgrade Valkey 9.1 to 8.1" in text and "RDB format 80" in text
    assert "Nothing was changed" in text


@given(st.text(max_size=8))
def test_the_model_takes_only_a_series_or_a_major(value):
    ok = value in ("8", "9") or (
        len(value) == 3
        and value[0] in "89"
        and value[1] == "."
        and value[2].isdigit()
        and value[2].isascii()
    )
    if ok:
        assert check_version(value) == value
    else:
        with pytest.raises(ValueError, match="allowed: a Valkey series"):
            check_version(value)


def test_series_of_a_debian_version():
    assert series_of(TRIXIE_81) == "8.1"
    assert series_of("1:9.1.2-1") == "9.1"
    assert series_of("8.0.1+dfsg1-1~bpo12+1") == "8.0"


def commands(series: str | None, installed: dict, held: list[str]) -> list[str]:
    def deploy() -> None:
        both = ["valkey-server", "valkey-tools"]
        valkey_at_series(name="valkey", packages=both, series=series)
        packages_held(name="held", packages=both)

    facts = linux_facts(DebPackages=lambda: installed, HeldPackages=lambda: held)
    return [c for _, cs in planned_commands(deploy, facts, {}) for c in cs]


def test_the_packages_are_upgraded_only_when_their_series_differs_and_stay_held():
    both = ["valkey-server", "valkey-tools"]
    at_81 = {p: [TRIXIE_81] for p in both}
    assert commands("8.1", at_81, both) == []
    assert commands("8.1", at_81, []) == ["apt-mark hold valkey-server valkey-tools"]
    upgrade = commands("9.1", at_81, both)
    assert upgrade[0].endswith(
        "--allow-change-held-packages -o Dpkg::Options::=--force-confdef"
        " -o Dpkg::Options::=--force-confold valkey-server valkey-tools"
    )
    assert ["in 9.1.*) ;;" in c for c in upgrade[1:3]] == [True, True], upgrade
    assert len(upgrade) == 3, "held already: upgraded, checked, not held again"
    assert commands("9.1", at_81, [])[3] == "apt-mark hold valkey-server valkey-tools"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the group's passwords are generated (outside the checkout)."""
    return str(tmp_path_factory.mktemp("group") / "secrets.json")


def group_hosts(
    secrets: str, version: str | None = "9", other_version: str | None = "9"
) -> list[tuple]:
    """A Sentinel group: db1's primary `main`, replicas on db2 and db3, a sentinel on each."""
    hosts = []
    for n in (1, 2, 3):
        role = {"role": "primary"} if n == 1 else {"role": "replica", "replicaof": "db1/main"}
        bind = ["127.0.0.1", f"10.0.0.{n}"]
        hosts.append(
            (
                f"db{n}",
                {
                    "valkey_version": version if n == 1 else other_version,
                    "valkey_instances": [{"name": "main", "port": 6390, "bind": bind} | role],
                    "valkey_sentinel": {"primary": "db1/main", "bind": bind},
                    "valkey_app": {
                        "name": "repl",
                        "hosted_instance": "main",
                        "cache_instance": None,
                    },
                    "valkey_acl": True,
                    "valkey_secrets_file": secrets,
                    "valkey_secrets_generate": True,
                },
            )
        )
    return hosts


def refusals(hosts: list[tuple], installed: str = TRIXIE_81) -> list[str | None]:
    """version_refusal of every host of `hosts`, on trixie hosts with Valkey `installed`."""
    plans = [Plan.from_host_data(name, data) for name, data in hosts]
    trixie = {"name": "Debian", "major": 13}
    said: list[str | None] = []

    def deploy() -> None:
        said.extend(version_refusal(plans, plan, trixie) for plan in plans)

    planned_commands(deploy, linux_facts(DebPackages=lambda: {"valkey-server": [installed]}), {})
    return said


def test_a_sentinel_group_may_change_version_when_every_host_plans_the_same(secrets):
    assert refusals(group_hosts(secrets, "9", "9")) == [None, None, None]
    assert refusals(group_hosts(secrets, None, None)) == [None, None, None], "no change"
    mixed = refusals(group_hosts(secrets, "9", "8.1"))
    assert "its Sentinel group plans other versions ({'db2': '8.1', 'db3': '8.1'})" in mixed[0]
    assert mixed[1] is None, "db2 stays at its series: nothing to refuse there"


def test_a_version_change_under_replication_without_sentinel_is_refused(secrets):
    hosts = group_hosts(secrets)
    for _, data in hosts:
        del data["valkey_sentinel"]
    said = refusals(hosts)
    assert all(s and "replicate without a Sentinel of their group" in s for s in said), said


def cluster_hosts(secrets: str, versions: tuple[str | None, ...] = ("9", "9", "9")) -> list:
    """A 3-host cluster: nodes n0 (7000) and n1 (7001) on each of db1..db3."""
    return [
        (
            f"db{n}",
            {
                "valkey_acl": True,
                "valkey_secrets_file": secrets,
                "valkey_secrets_generate": True,
                "valkey_version": version,
                "valkey_app": {"hosted_instance": "n0", "cache_instance": None},
                "valkey_instances": [
                    {"name": f"n{i}", "role": "cluster-node", "port": 7000 + i, "cluster": "main"}
                    | {"bind": ["127.0.0.1", f"10.0.0.{n}"]}
                    for i in (0, 1)
                ],
            },
        )
        for n, version in zip((1, 2, 3), versions, strict=True)
    ]


def test_a_cluster_may_change_version_only_when_every_host_plans_the_same(secrets):
    assert refusals(cluster_hosts(secrets)) == [None, None, None]
    mixed = refusals(cluster_hosts(secrets, ("9", "9", None)))
    assert "the other hosts of its Valkey Cluster plan other versions ({'db3': None})" in mixed[0]
    assert all(s and "Nothing was changed" in s for s in mixed[:2]), mixed
    assert mixed[2] is None, "db3 stays at its series: nothing to refuse there"


def cluster_run(secrets: str, running: str) -> list[tuple[str, list[str]]]:
    """What the deploy runs on db2 of the cluster, at Valkey 8.1 on trixie, when the plan
    asks for 9 and its nodes report `running`."""
    hosts = cluster_hosts(secrets)
    trixie = {"name": "Debian", "major": 13, "release_meta": {"VERSION_CODENAME": "trixie"}}
    packages = ("valkey-server", "valkey-tools")
    units = {f"valkey-server@n{i}.service": True for i in (0, 1)}
    facts = linux_facts(
        LinuxDistribution=lambda: dict(trixie),
        DebPackages=lambda: {p: [TRIXIE_81] for p in packages},
        HeldPackages=lambda: list(packages),
        RunningVersion=lambda **kwargs: running,
        SystemdStatus=lambda **kwargs: dict(units),
        SystemdEnabled=lambda **kwargs: dict(units),
    )
    name, data = hosts[1]
    return planned_commands(valkey_plan, facts, data, name, [hosts[0], hosts[2]])


def test_a_cluster_host_restarts_its_replicas_then_fails_over_its_primaries(secrets):
    run = cluster_run(secrets, "8.1.1")
    names = [name for name, _ in run]
    replicas = names.index(
        "valkey-plans | Cluster replicas here restarted on Valkey 9.1 (one node at a time)"
    )
    primaries = names.index(
        "valkey-plans | Cluster primaries here failed over, then restarted on Valkey 9.1"
    )
    assert first(run, "apt-get install") < replicas < primaries, names
    assert len(run[replicas][1]) == 2 and len(run[primaries][1]) == 2, "one command per node"
    for command in run[replicas][1]:
        assert '[ "$role" = slave ]' in command and "CLUSTER FAILOVER" not in command
    for node, command in zip((7000, 7001), run[primaries][1], strict=True):
        assert "CLUSTER FAILOVER" in command and f"port {node}" in command
        failover, restart = command.index("CLUSTER FAILOVER"), command.index("systemctl restart")
        assert failover < restart, "a primary restarts only once it follows its replica"
    restarts = [n for n in names if "Restart valkey-server" in n and "for its new config" in n]
    assert not restarts, "a node the upgrade restarts is not restarted for its config first"


def test_a_cluster_at_the_series_restarts_nothing_for_the_upgrade(secrets):
    run = cluster_run(secrets, "9.1.2")
    upgrade = [cs for name, cs in run if "Cluster replicas here" in name or "failed over" in name]
    assert upgrade == [[], []], "both phases are no-ops"
    assert not [c for _, cs in run for c in cs if "CLUSTER FAILOVER" in c]


def group_run(secrets: str, index: int, role: str) -> list[tuple[str, list[str]]]:
    """What the deploy runs on host `index` of the group, at Valkey 8.1 on trixie, when
    the plan asks for 9 and its instance reports `role`."""
    hosts = group_hosts(secrets)
    trixie = {"name": "Debian", "major": 13, "release_meta": {"VERSION_CODENAME": "trixie"}}
    packages = ("valkey-server", "valkey-tools", "valkey-sentinel")
    facts = linux_facts(
        LinuxDistribution=lambda: dict(trixie),
        DebPackages=lambda: {p: [TRIXIE_81] for p in packages},
        HeldPackages=lambda: list(packages),
        ReplicationRole=lambda **kwargs: role,
        SystemdStatus=lambda **kwargs: {f"{u}@main.service": True for u in packages[::2]},
        SystemdEnabled=lambda **kwargs: {f"{u}@main.service": True for u in packages[::2]},
    )
    name, data = hosts[index]
    others = [h for i, h in enumerate(hosts) if i != index]
    return planned_commands(valkey_plan, facts, data, name, others)


def first(run: list[tuple[str, list[str]]], text: str) -> int:
    return next(i for i, (_, commands) in enumerate(run) if any(text in c for c in commands))


def last(run: list[tuple[str, list[str]]], text: str) -> int:
    return len(run) - 1 - first(run[::-1], text)


def test_the_primary_s_host_upgrades_after_its_handover_and_the_replicas_before_theirs(secrets):
    primary = group_run(secrets, 0, "master")
    handover = first(primary, "SENTINEL FAILOVER")
    install = first(primary, "apt-get install")
    restart = last(primary, "systemctl restart valkey-server@main.service")
    assert handover < install < restart, [name for name, _ in primary]
    names = [name for name, _ in primary]
    sentinel = names.index(
        "valkey-plans | Sentinel main restarted on its upgraded Valkey (one host at a time)"
    )
    assert sentinel > restart and primary[sentinel][1], "the sentinel restarts on 9.1 too"

    replica = group_run(secrets, 1, "slave")
    assert not [c for _, cs in replica for c in cs if "SENTINEL FAILOVER" in c]
    install = first(replica, "apt-get install")
    assert install < first(replica, "systemctl restart valkey-server@main.service")


def watched_change(installed: str, version: str | None) -> tuple[bool, list[str]]:
    """On a trixie host with Valkey at `installed`, not held: whether the operation the
    instances' restarts watch (install_valkey's) changes the host, and what runs."""
    trixie = {"name": "Debian", "major": 13, "release_meta": {"VERSION_CODENAME": "trixie"}}
    plan = Plan.from_host_data("db1", {"valkey_version": version})
    watched: list = []

    def deploy() -> None:
        watched.append(install_valkey(plan, trixie, []))

    facts = linux_facts(
        LinuxDistribution=lambda: trixie,
        DebPackages=lambda: {p: [installed] for p in ("valkey-server", "valkey-tools")},
        HeldPackages=lambda: [],
    )
    ran = [c for _, cs in planned_commands(deploy, facts, {}) for c in cs]
    return watched[0].did_change(), ran


def test_holding_the_packages_is_no_change_the_instances_restart_for():
    for version in (None, "8.1"):
        changed, ran = watched_change(TRIXIE_81, version)
        assert not changed and "apt-mark hold valkey-server valkey-tools" in ran, ran
        assert not [c for c in ran if "apt-get install" in c], ran
    changed, ran = watched_change(TRIXIE_81, "9")
    assert changed and any("apt-get install" in c for c in ran), ran


def test_a_debian_testing_host_is_known_by_its_codename():
    """forky today: its os-release has VERSION_CODENAME but no VERSION_ID (no major)."""
    testing = {"name": "Debian", "major": None, "release_meta": {"VERSION_CODENAME": "forky"}}
    assert os_of(testing) == ("Debian", 14)
    assert resolve(None, *os_of(testing), None) == resolve(None, "Debian", 14, None)
    assert os_of({"name": "Debian", "major": 13, "release_meta": {}}) == ("Debian", 13)
    assert os_of({"name": "Debian", "major": None, "release_meta": {}}) == ("Debian", 0)
    unknown = {"name": "Ubuntu", "major": None, "release_meta": {"VERSION_CODENAME": "forky"}}
    assert os_of(unknown) == ("Ubuntu", 0), "only Debian's codenames are Debian's"
    with pytest.raises(VersionError, match="not available on Debian 0; allowed: none"):
        resolve("9", *os_of({"name": "Debian", "release_meta": {}}), None)


def test_the_package_s_recursive_chmod_of_etc_valkey_is_replaced_before_any_install():
    """Valkey 9.1's tmpfiles.d rule `Z /etc/valkey 2770` would reset every file's mode at
    each boot and package configure; same-named files in /etc/tmpfiles.d replace it."""
    changed, ran = watched_change(TRIXIE_81, "9")
    install = next(i for i, c in enumerate(ran) if "apt-get install" in c)
    rules = [i for i, c in enumerate(ran) if "/etc/tmpfiles.d/valkey-server.conf" in c]
    rules += [i for i, c in enumerate(ran) if "/etc/tmpfiles.d/valkey-sentinel.conf" in c]
    assert changed and rules and max(rules) < install, ran
    assert TMPFILES_RULE == "d /etc/valkey 2770 valkey valkey\n", "the directory rule is kept"
    assert "Z " not in TMPFILES_RULE
