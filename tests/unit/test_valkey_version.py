"""valkey_version (plan/versions.py, deploy/packages.py): per-OS series, refusals first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.pyinfra_commands import linux_facts, planned_commands
from valkey_plans.deploy.packages import (
    install_valkey,
    packages_held,
    valkey_at_series,
    version_refusal,
)
from valkey_plans.plan import Plan
from valkey_plans.plan.versions import VersionError, check_version, resolve, series_of

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


def replicated_plans() -> list[Plan]:
    data = {
        "valkey_instances": [{"name": "main", "role": "primary", "port": 6390}],
        "valkey_sentinel": {"primary": "db1/main", "bind": ["127.0.0.1"]},
        "valkey_app": {"name": "repl", "hosted_instance": "main", "cache_instance": None},
    }
    return [Plan.from_host_data("db1", data)]


def test_a_version_change_on_a_replicated_host_is_refused_before_any_change():
    plans = replicated_plans()
    trixie = {"name": "Debian", "major": 13}
    installed = {"valkey-server": [TRIXIE_81]}

    refusal: list[str | None] = []

    def deploy() -> None:
        refusal.append(version_refusal(plans, plans[0].model_copy(update={"version": "9"}), trixie))
        refusal.append(version_refusal(plans, plans[0], trixie))

    planned_commands(deploy, linux_facts(DebPackages=lambda: installed), {})
    assert "would upgrade Valkey 8.1 to 9.1 on a host whose instances replicate" in refusal[0]
    assert refusal[1] is None


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
