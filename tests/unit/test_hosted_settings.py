"""An external hosted tier's settings: the same variable names for every kind of login."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from valkey_plans.client.settings import SettingsError, load_settings
from valkey_plans.plan import Plan
from valkey_plans.plan.app_settings import app_environment
from valkey_plans.plan.secrets import SecretsError, hosted_secret_names, load_secrets

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def plan(**hosted) -> Plan:
    data = {"url": "valkeys://db.example.com:6380", **hosted}
    return Plan.from_host_data("web-1", {"valkey_app": {"name": "shop", "hosted": data}})


def secrets(*names: str) -> dict[str, SecretStr]:
    return {name: SecretStr(f"{name}-pw") for name in names}


def test_one_user_is_every_workloads_login():
    env = app_environment(plan(user="shop"), hosted_passwords=secrets("hosted"))
    for workload in ("API", "BLOCKING", "SUBSCRIBER", "BACKGROUND"):
        assert env[f"VALKEY_{workload}_USER"] == "shop"
        assert env[f"VALKEY_{workload}_PASSWORD"] == "hosted-pw"
    assert env["VALKEY_HOST"] == "db.example.com" and env["VALKEY_PORT"] == "6380"
    assert env["VALKEY_TLS"] == "1" and env["VALKEY_MODE"] == "standalone"
    assert "VALKEY_TLS_CA_FILE" not in env  # the system CAs


def test_a_token_login_has_passwords_and_no_users():
    env = app_environment(plan(login="token"), hosted_passwords=secrets("hosted"))
    assert env["VALKEY_SUBSCRIBER_PASSWORD"] == "hosted-pw"
    assert not [key for key in env if key.endswith("_USER")]
    tier = load_settings(env=env).hosted
    assert tier.credentials("api").user is None
    assert tier.credentials("api").password.get_secret_value() == "hosted-pw"


def test_per_workload_logins_read_their_own_secrets():
    names = hosted_secret_names("per-workload")
    assert names == ("hosted_api", "hosted_blocking", "hosted_subscriber", "hosted_background")
    env = app_environment(plan(login="per-workload"), hosted_passwords=secrets(*names))
    assert env["VALKEY_BLOCKING_USER"] == "queue"
    assert env["VALKEY_BLOCKING_PASSWORD"] == "hosted_blocking-pw"


def test_cluster_mode_names_the_url_node_and_the_seeds():
    hosted = plan(user="u", mode="cluster", seeds=["10.0.0.2:6380", "db-3.example.com:6380"])
    env = app_environment(hosted, hosted_passwords=secrets("hosted"))
    assert env["VALKEY_MODE"] == "cluster"
    assert env["VALKEY_CLUSTER_NODES"] == (
        "db.example.com:6380,10.0.0.2:6380,db-3.example.com:6380"
    )
    tier = load_settings(env=env).hosted
    assert tier.cluster_addresses[1] == ("10.0.0.2", 6380)


def test_a_ca_file_is_installed_beside_the_settings_and_named(tmp_path: Path):
    ca = tmp_path / "provider-ca.pem"
    ca.write_text(CA)
    hosted = plan(user="u", tls_ca_file=str(ca), tls_server_name="valkey.internal")
    env = app_environment(hosted, hosted_passwords=secrets("hosted"))
    assert env["VALKEY_TLS_CA_FILE"] == "/etc/valkey-plans/shop-hosted-ca.pem"
    assert env["VALKEY_TLS_SERVERNAME"] == "valkey.internal"
    assert hosted.app.hosted_ca_path("/opt/homebrew/etc/valkey-plans") == (
        "/opt/homebrew/etc/valkey-plans/shop-hosted-ca.pem"
    )


def test_the_client_refuses_a_server_name_without_tls():
    env = {"VALKEY_HOST": "db", "VALKEY_TLS": "0", "VALKEY_TLS_SERVERNAME": "db.example.com"}
    with pytest.raises(SettingsError, match="need VALKEY_TLS=1"):
        load_settings(env=env)


def test_hosted_secrets_come_from_the_environment_with_no_length_rule():
    found = load_secrets(None, users=("hosted",), env={"VALKEY_PLANS_SECRET_HOSTED": "tok"},
                         min_length=1)  # fmt: skip
    assert found["hosted"].get_secret_value() == "tok"
    with pytest.raises(SecretsError, match="no password for hosted; set VALKEY_PLANS_SECRET_"):
        load_secrets(None, users=("hosted",), env={}, min_length=1)


def test_the_deploy_installs_the_ca_and_the_settings_and_shows_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from io import StringIO

    from pyinfra.api import FileUploadCommand

    from tests.unit.pyinfra_commands import linux_facts, planned_operations, shell_text
    from valkey_plans.deploy import valkey_plan

    ca = tmp_path / "provider-ca.pem"
    ca.write_text(CA)
    monkeypatch.setenv("VALKEY_PLANS_SECRET_HOSTED", "token-seen-nowhere")
    hosted = {"url": "valkeys://db.example.com:6380", "login": "token", "tls_ca_file": str(ca)}
    data = {"valkey_app": {"name": "shop", "hosted": hosted}}
    planned = planned_operations(valkey_plan, linux_facts(), data, "web-1")
    uploads = {
        c.dest: c.src.getvalue()
        for _, commands in planned
        for c in commands
        if isinstance(c, FileUploadCommand) and isinstance(c.src, StringIO)
    }
    assert uploads["/etc/valkey-plans/.shop-hosted-ca.pem.candidate"] == CA
    env = uploads["/etc/valkey-plans/.shop.env.candidate"]
    assert "VALKEY_API_PASSWORD=token-seen-nowhere\n" in env
    assert "VALKEY_TLS_CA_FILE=/etc/valkey-plans/shop-hosted-ca.pem\n" in env
    shell = [shell_text(c) for _, commands in planned for c in commands]
    assert not [line for line in shell if "token-seen-nowhere" in line]


def test_the_deploy_stops_before_any_change_without_the_hosted_secret(
    monkeypatch: pytest.MonkeyPatch,
):
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.deploy import add_deploy
    from pyinfra.api.exceptions import DeployError
    from pyinfra.context import ctx_inventory

    from valkey_plans.deploy import valkey_plan

    monkeypatch.delenv("VALKEY_PLANS_SECRET_HOSTED", raising=False)
    data = {"valkey_app": {"hosted": {"url": "valkey://10.0.0.9:6379", "login": "token"}}}
    inventory = Inventory((["web-1"], data))
    state = State(inventory=inventory, config=Config())
    with ctx_inventory.use(inventory), pytest.raises(DeployError) as info:
        add_deploy(state, valkey_plan, host=inventory.get_host("web-1"))
    assert state.get_op_order() == [], "an operation was added before the refusal"
    assert "valkey_app.hosted: no password for hosted; set VALKEY_PLANS_SECRET_" in str(info.value)
