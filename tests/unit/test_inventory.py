"""Inventories load as pyinfra loads them, and map to testinfra hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from valkey_plans.plan import PlanError
from valkey_plans.plan.inventory import hostspec, load_targets


def test_dev_inventory_has_local_cache_and_hosted_stand_in():
    (target,) = load_targets("inventories/dev.py")
    assert target.name == "@local" and target.testinfra_url == "local://"
    assert [(i.name, i.role, i.port) for i in target.plan.instances] == [
        ("cache", "cache", 6379),
        ("hosted", "primary", 6380),
    ]


def test_ssh_host_url_carries_user_port_and_key():
    url = hostspec(
        "db-1",
        {"ssh_user": "root", "ssh_hostname": "10.0.0.5", "ssh_port": 2222, "ssh_key": "/k/id"},
    )
    assert url == "ssh://root@10.0.0.5:2222?ssh_identity_file=%2Fk%2Fid"


def test_bad_plan_in_an_inventory_is_reported_before_anything_runs(tmp_path: Path):
    inventory = tmp_path / "site.py"
    inventory.write_text(
        "site = [('db-1', {'valkey_instances': [{'name': 'cache', 'role': 'cache', 'port': 0}]})]\n"
    )
    with pytest.raises(PlanError, match=r"host db-1: valkey_instances\[cache\].port = 0"):
        load_targets(inventory)


def test_a_non_root_login_verifies_through_sudo():
    """The checks read root-only files: a login like `deploy` must run them with sudo."""
    url = hostspec("db-1", {"ssh_user": "deploy", "ssh_hostname": "10.0.0.5"})
    assert url == "ssh://deploy@10.0.0.5?sudo=true"
    import testinfra

    assert testinfra.get_host(url).backend.sudo is True
