"""Templates: managed header, plan values in, Valkey-valid output, strict variables."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2
import pytest

from valkey_plans.plan import Plan
from valkey_plans.plan.app_settings import app_environment
from valkey_plans.plan.layout import Layout, homebrew
from valkey_plans.plan.render import (
    MANAGED_HEADER,
    TEMPLATE_DIR,
    app_files,
    instance_config,
    render,
)

DEV = {
    "valkey_instances": [
        {"name": "cache", "role": "cache", "port": 6379, "maxmemory": "128mb"},
        {"name": "hosted", "role": "primary", "port": 6380, "save": []},
    ],
    "valkey_app": {"name": "shop", "hosted_instance": "hosted"},
}


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            found.setdefault(key, []).append(value)
    return found


def test_cache_config_carries_the_plan():
    plan = Plan.from_host_data("h", DEV)
    text = instance_config(plan, plan.instance("cache"))
    assert text.startswith(f"# {MANAGED_HEADER}")
    got = directives(text)
    assert got["port"] == ["6379"] and got["databases"] == ["4"]
    assert got["maxmemory"] == ["128mb"] and got["maxmemory-policy"] == ["volatile-lru"]
    assert got["dbfilename"] == ["dump-cache.rdb"]
    assert got["pidfile"] == ["/run/valkey-cache/valkey-server.pid"]
    assert got["appendonly"] == ["no"]


def test_primary_without_snapshots_says_so_explicitly():
    plan = Plan.from_host_data("h", DEV)
    got = directives(instance_config(plan, plan.instance("hosted")))
    assert got["save"] == ['""'] and got["appendonly"] == ["yes"] and got["databases"] == ["1"]


def test_homebrew_layout_moves_every_path():
    plan = Plan.from_host_data("h", DEV)
    text = instance_config(plan, plan.instance("cache"), homebrew("/opt/homebrew"))
    for key in ("pidfile", "unixsocket", "logfile", "dir"):
        assert directives(text)[key][0].startswith("/opt/homebrew/"), key


def test_rendered_config_is_accepted_by_a_real_valkey_server():
    plan = Plan.from_host_data("h", DEV)
    # As root the checker runs valkey-server as the valkey user, who must read the file
    # and enter the config's dirs: a scratch layout both root and a laptop user can use.
    scratch = Path(tempfile.mkdtemp(prefix="vp-render-", dir="/tmp"))
    scratch.chmod(0o777)
    layout = Layout(*(str(scratch),) * 5)
    conf = scratch / "candidate.conf"
    conf.write_text(instance_config(plan, plan.instance("cache"), layout))
    checker = TEMPLATE_DIR / "check-config.sh"
    ok = subprocess.run(["sh", str(checker), str(conf)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    conf.write_text(conf.read_text() + "maxmemory-policy lru\n")
    bad = subprocess.run(["sh", str(checker), str(conf)], capture_output=True, text=True)
    assert bad.returncode == 1 and "maxmemory-policy lru" in bad.stderr
    shutil.rmtree(scratch)


def test_undefined_template_variable_fails_at_render_time():
    with pytest.raises(jinja2.UndefinedError):
        render("valkey-instance.conf.j2", plan=None)


def test_app_settings_point_the_hosted_tier_at_db_0_and_name_the_cache_dbs():
    plan = Plan.from_host_data("h", DEV)
    env = app_environment(plan)
    assert env["VALKEY_HOST"] == "127.0.0.1" and env["VALKEY_PORT"] == "6380"
    assert env["VALKEY_DB"] == "0"
    assert env["VALKEY_CACHE_DB_SESSION_CACHE"] == "2"
    assert env["VALKEY_CACHE_USER_CAP"] == "100"
    files = app_files(plan)
    assert set(files) == {"shop.env", "shop.json"}
    assert "VALKEY_PORT=6380\n" in files["shop.env"]
    assert '"VALKEY_PORT": "6380"' in files["shop.json"]


def test_hosted_url_sets_tls_from_the_scheme():
    plan = Plan.from_host_data(
        "h", {"valkey_app": {"hosted_url": "valkeys://cache.example.net:6380"}}
    )
    env = app_environment(plan)
    assert (env["VALKEY_HOST"], env["VALKEY_PORT"], env["VALKEY_TLS"]) == (
        "cache.example.net",
        "6380",
        "1",
    )
