"""Pure parts of the lab: release assignment, the rootfs cache key, the lab dir override."""

from __future__ import annotations

import pytest

from valkey_plans.lab import config, inventory, lifecycle, rootfs, ssh
from valkey_plans.lab.state import Host, LabState


def test_releases_are_assigned_round_robin_over_bookworm_and_trixie_by_default():
    assert lifecycle.assign(3, ["bookworm", "trixie"]) == ["bookworm", "trixie", "bookworm"]
    assert lifecycle.assign(3, []) == ["bookworm", "trixie", "bookworm"], "forky only if asked"
    assert lifecycle.assign(2, ["trixie"]) == ["trixie", "trixie"]
    assert lifecycle.assign(2, ["forky", "trixie"]) == ["forky", "trixie"]
    with pytest.raises(ValueError, match="sid"):
        lifecycle.assign(1, ["sid"])
    with pytest.raises(ValueError, match="at least one"):
        lifecycle.assign(0, [])


def test_rootfs_cache_key_changes_with_release_and_package_list(monkeypatch):
    bookworm = rootfs.cache_key("bookworm")
    assert bookworm != rootfs.cache_key("trixie")
    monkeypatch.setattr(config, "INCLUDE", (*config.INCLUDE, "curl"))
    assert rootfs.cache_key("bookworm") != bookworm


def test_lab_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(config.LAB_DIR_ENV, str(tmp_path))
    assert config.lab_dir() == tmp_path
    assert config.state_file() == tmp_path / "state.json"
    monkeypatch.delenv(config.LAB_DIR_ENV)
    assert config.lab_dir() == config.DEFAULT_LAB_DIR


def _host(name: str, release: str, address: str = "10.0.0.1") -> Host:
    return Host(
        name=name,
        release=release,
        address=address,
        netns="n",
        veth="v",
        lower="l",
        upper="u",
        work="w",
        root="r",
    )


def test_testinfra_hosts_name_every_host_with_the_lab_ssh_config(tmp_path):
    hosts = [_host(f"vplab{i}", "bookworm", f"10.149.73.{10 + i}") for i in (1, 2)]
    state = LabState(
        lab_dir=str(tmp_path),
        ssh_key="k",
        known_hosts="kh",
        ssh_config="/lab/ssh/config",
        hosts=hosts,
    )
    assert ssh.testinfra_hosts(state) == (
        "ssh://root@10.149.73.11?ssh_config=/lab/ssh/config,"
        "ssh://root@10.149.73.12?ssh_config=/lab/ssh/config"
    )


def test_a_lane_takes_one_valkey_major(monkeypatch):
    """Scale-out inventories take the lane's hosts: bookworm and trixie (Valkey 8) unless
    VALKEY_PLANS_LAB_RELEASE names a release, never a mix of 8 and 9."""
    releases = ["bookworm", "trixie", "forky", "bookworm", "forky", "trixie"]
    hosts = [_host(f"vplab{i}", release) for i, release in enumerate(releases)]
    state = LabState(lab_dir="/x", ssh_key="k", known_hosts="kh", ssh_config="c", hosts=hosts)
    monkeypatch.delenv(inventory.RELEASE_ENV, raising=False)
    picked = inventory.first_hosts(state, 4, "inventories/cluster.py")
    assert [h.name for h in picked] == ["vplab0", "vplab1", "vplab3", "vplab5"]
    monkeypatch.setenv(inventory.RELEASE_ENV, "forky")
    assert [h.name for h in inventory.first_hosts(state, 2, "x")] == ["vplab2", "vplab4"]
    with pytest.raises(RuntimeError, match="needs 3 lab hosts of forky, the lab has 2"):
        inventory.first_hosts(state, 3, "x")
