"""Settings: the env names the deploy renders parse back, and bad values are named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from valkey_plans.client.clients import workload_options
from valkey_plans.client.settings import (
    CacheTierSettings,
    SettingsError,
    TierSettings,
    load_settings,
    read_env_file,
)
from valkey_plans.plan import Plan
from valkey_plans.plan.app_settings import app_environment


def test_defaults_without_any_variable():
    settings = load_settings({})
    assert settings.hosted == TierSettings()
    hosted = settings.hosted
    assert (hosted.host, hosted.port, hosted.db) == ("127.0.0.1", 6379, 0)
    assert settings.hosted.mode == "standalone"
    assert settings.cache is None
    assert settings.hosted.credentials("api").user is None


def test_hosted_and_cache_tiers_read_the_same_names_under_two_prefixes():
    settings = load_settings(
        {
            "VALKEY_APP": "shop",
            "VALKEY_HOST": "db.example.net",
            "VALKEY_PORT": "6390",
            "VALKEY_TLS": "1",
            "VALKEY_API_USER": "shop-api",
            "VALKEY_API_PASSWORD": "s3cret-api",
            "VALKEY_BLOCKING_USER": "shop-blocking",
            "VALKEY_CACHE_HOST": "127.0.0.1",
            "VALKEY_CACHE_PORT": "6380",
            "VALKEY_CACHE_API_USER": "cache-api",
            "VALKEY_CACHE_DB_USER_INDEX": "4",
            "VALKEY_CACHE_DB_USER_CACHE": "5",
            "VALKEY_CACHE_DB_SESSION_CACHE": "6",
            "VALKEY_CACHE_DB_MESSAGE_QUEUE": "7",
            "VALKEY_CACHE_USER_CAP": "250",
            "VALKEY_CACHE_MESSAGE_CAP": "50",
            "VALKEY_CACHE_USER_TTL": "60",
            "VALKEY_CACHE_MESSAGE_TTL": "70",
            "VALKEY_CACHE_SESSION_TTL": "80",
            "VALKEY_CACHE_SESSION_SLIDING": "1",
        }
    )
    hosted, cache = settings.hosted, settings.cache
    assert (hosted.app, hosted.host) == ("shop", "db.example.net")
    assert (hosted.port, hosted.tls) == (6390, True)
    api = hosted.credentials("api")
    assert api.user == "shop-api" and api.password.get_secret_value() == "s3cret-api"
    assert hosted.credentials("blocking").user == "shop-blocking"
    assert hosted.credentials("subscriber").user is None
    assert isinstance(cache, CacheTierSettings)
    assert (cache.app, cache.port, cache.tls) == ("shop", 6380, False)  # app is inherited
    assert cache.credentials("api").user == "cache-api"
    assert cache.dbs.model_dump() == {
        "user_index": 4,
        "user_cache": 5,
        "session_cache": 6,
        "message_queue": 7,
    }
    assert (cache.user_cap, cache.message_cap) == (250, 50)
    assert (cache.user_ttl, cache.message_ttl, cache.session_ttl) == (60, 70, 80)
    assert cache.session_sliding is True


def test_cache_tier_defaults_are_the_plans():
    """A cache tier variable left unset means what the default plan renders for it."""
    rendered = load_settings(app_environment(Plan.from_host_data("h", {}))).cache
    defaults = CacheTierSettings()
    for field in CacheTierSettings.model_fields:
        if field.startswith(("db_", "user_", "message_", "session_")) and "password" not in field:
            assert getattr(defaults, field) == getattr(rendered, field), field
    assert (defaults.session_ttl, defaults.session_sliding) == (86400, True)


def test_empty_values_count_as_unset():
    settings = load_settings({"VALKEY_PORT": "", "VALKEY_API_USER": "", "VALKEY_CACHE_PORT": ""})
    assert settings.hosted.port == 6379
    assert settings.hosted.api_user is None
    assert settings.cache is None


def test_passwords_never_appear_in_repr_str_or_errors():
    env = {
        "VALKEY_API_USER": "u",
        "VALKEY_API_PASSWORD": "hunter2-topsecret",
        "VALKEY_CACHE_BACKGROUND_PASSWORD": "other-topsecret",
    }
    settings = load_settings(env)
    for text in (repr(settings), str(settings), repr(settings.hosted.credentials("api"))):
        assert "topsecret" not in text
    with pytest.raises(SettingsError) as err:
        load_settings({**env, "VALKEY_PORT": "x"})
    assert "topsecret" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("VALKEY_PORT", "abc", "Input should be a valid integer"),
        ("VALKEY_PORT", "70000", "Input should be less than or equal to 65535"),
        ("VALKEY_TLS", "yes", "must be 0 or 1"),
        ("VALKEY_MODE", "replica", "Input should be 'standalone', 'cluster' or 'sentinel'"),
        ("VALKEY_DB", "16", "Input should be less than or equal to 15"),
        ("VALKEY_APP", "my app", "String should match pattern"),
        ("VALKEY_TLS_CA_FILE", "/nonexistent/ca.pem", "no such file"),
        ("VALKEY_CACHE_USER_CAP", "0", "Input should be greater than or equal to 1"),
        ("VALKEY_CACHE_TLS", "2", "must be 0 or 1"),
        ("VALKEY_CACHE_SESSION_TTL", "soon", "Input should be a valid integer"),
        ("VALKEY_CLUSTER_NODES", "10.0.0.1:7000;10.0.0.2", "String should match pattern"),
    ],
)
def test_bad_values_name_variable_value_and_what_is_allowed(variable, value, expected):
    with pytest.raises(SettingsError) as err:
        load_settings({variable: value})
    assert f"{variable}={value!r}: {expected}" in str(err.value)


def test_cluster_nodes_are_read_as_host_port_pairs():
    env = {"VALKEY_MODE": "cluster", "VALKEY_CLUSTER_NODES": "10.0.0.1:7000,db-2:7001"}
    assert load_settings(env).hosted.cluster_addresses == [("10.0.0.1", 7000), ("db-2", 7001)]
    assert load_settings({}).hosted.cluster_addresses == []


def test_every_bad_variable_is_reported_at_once():
    with pytest.raises(SettingsError) as err:
        load_settings({"VALKEY_PORT": "0", "VALKEY_DB": "-1"})
    assert "VALKEY_PORT='0'" in str(err.value) and "VALKEY_DB='-1'" in str(err.value)


def test_cross_field_rules():
    with pytest.raises(SettingsError, match="VALKEY_MODE=cluster has only db 0, but VALKEY_DB=2"):
        load_settings({"VALKEY_MODE": "cluster", "VALKEY_DB": "2"})
    with pytest.raises(SettingsError, match="four different numbers.*VALKEY_CACHE_DB_USER_CACHE=0"):
        load_settings({"VALKEY_CACHE_DB_USER_CACHE": "0"})


def test_env_file_syntax(tmp_path: Path):
    env_file = tmp_path / "app.env"
    env_file.write_text(
        "# managed by valkey-plans\n"
        "\n"
        "VALKEY_APP=shop\n"
        "export VALKEY_PORT=6390\n"
        'VALKEY_API_PASSWORD="pa ss#word"\n'
        "VALKEY_API_USER='shop-api'\n"
        "VALKEY_HOST=db.local   # the hosted tier\n"
        "VALKEY_BLOCKING_PASSWORD=a#b\n"
    )
    assert read_env_file(env_file) == {
        "VALKEY_APP": "shop",
        "VALKEY_PORT": "6390",
        "VALKEY_API_PASSWORD": "pa ss#word",
        "VALKEY_API_USER": "shop-api",
        "VALKEY_HOST": "db.local",
        "VALKEY_BLOCKING_PASSWORD": "a#b",
    }


def test_env_file_errors_name_file_and_line_but_not_the_content(tmp_path: Path):
    env_file = tmp_path / "app.env"
    env_file.write_text("VALKEY_APP=shop\nVALKEY_API_PASSWORD='topsecret\n")
    with pytest.raises(SettingsError) as err:
        read_env_file(env_file)
    assert f"{env_file}:2: VALKEY_API_PASSWORD has an unterminated ' quote" in str(err.value)
    assert "topsecret" not in str(err.value)
    env_file.write_text("just-a-topsecret-word\n")
    with pytest.raises(SettingsError, match=r"app.env:1: expected KEY=value") as err:
        read_env_file(env_file)
    assert "topsecret" not in str(err.value)
    with pytest.raises(SettingsError, match="cannot read env file .*missing.env"):
        load_settings({}, env_file=tmp_path / "missing.env")


def test_env_file_is_found_through_valkey_env_file_and_the_environment_wins(tmp_path: Path):
    env_file = tmp_path / "app.env"
    env_file.write_text("VALKEY_HOST=from-file\nVALKEY_PORT=7000\nVALKEY_CACHE_PORT=7001\n")
    settings = load_settings({"VALKEY_ENV_FILE": str(env_file), "VALKEY_PORT": "7100"})
    assert settings.hosted.host == "from-file"
    assert settings.hosted.port == 7100
    assert settings.cache is not None and settings.cache.port == 7001
    assert load_settings({"VALKEY_HOST": "env"}, env_file=env_file).hosted.host == "env"


def test_workload_options_carry_login_name_and_timeouts(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed here")
    tier = load_settings(
        {
            "VALKEY_APP": "shop",
            "VALKEY_TLS": "1",
            "VALKEY_TLS_CA_FILE": str(ca),
            "VALKEY_BLOCKING_USER": "b",
            "VALKEY_BLOCKING_PASSWORD": "pw",
        }
    ).hosted
    blocking = workload_options(tier, "blocking", max_block=12)
    assert blocking["client_name"] == "shop:blocking"
    assert (blocking["username"], blocking["password"]) == ("b", "pw")
    assert blocking["socket_timeout"] > 12
    assert blocking["ssl_ca_certs"] == str(ca) and blocking["ssl_cert_reqs"] == "required"
    assert workload_options(tier, "subscriber", 12)["socket_timeout"] is None
    api = workload_options(tier, "api", 12)
    assert api["username"] is None and api["password"] is None
    assert api["socket_timeout"] < blocking["socket_timeout"]
    with pytest.raises(ValueError, match="unknown workload 'web'; allowed: api, blocking"):
        tier.credentials("web")
