"""The exporter on paper: its settings, ACL rules, env file, unit and the deploy's commands.

The password may live in one place only, the root-only env file: never in the unit,
never in a command line pyinfra would run (systemd or start-stop-daemon).
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.unit.pyinfra_commands import linux_facts, planned_commands, planned_operations, uploaded
from valkey_plans.deploy import valkey_plan
from valkey_plans.plan import Plan
from valkey_plans.plan.acl import acl_lines
from valkey_plans.plan.alerts import alert_rules
from valkey_plans.plan.render import exporter_env, exporter_environment, exporter_unit
from valkey_plans.plan.secrets import ALL_USERS, ENV_PREFIX

HOST = "web-1"
PASSWORD = "exporter-password-0123456789"
ENV_FILE = "/var/lib/valkey-plans/exporter/cache.env"


def plan_of(**data) -> Plan:
    return Plan.from_host_data(HOST, data)


def passwords() -> dict[str, SecretStr]:
    return {user: SecretStr(f"{user}-password-0123456789") for user in ALL_USERS}


def exporter_line(plan: Plan) -> str:
    (line,) = [x for x in acl_lines(plan, plan.instances[0], passwords()) if " exporter " in x]
    return line


def test_defaults_give_every_instance_a_loopback_exporter_at_port_plus_3000():
    plan = plan_of(
        valkey_instances=[
            {"name": "cache", "role": "cache", "port": 6379},
            {"name": "hosted", "role": "primary", "port": 6380},
        ]
    )
    assert plan.exporter_ports == {"cache": 9379, "hosted": 9380}
    assert plan.exporter.url(plan.instances[0]) == "http://127.0.0.1:9379/metrics"
    assert plan_of(valkey_exporter={"enabled": False}).exported == []


def test_tls_only_instances_get_no_exporter():
    tls = {"port": 6390, "cert_file": "/a.crt", "key_file": "/a.key", "ca_cert_file": "/ca.crt"}
    plan = plan_of(valkey_instances=[{"name": "cache", "role": "cache", "port": 6379, "tls": tls}])
    assert [i.name for i in plan.exported] == ["cache"]
    tls["only"] = True
    plan = plan_of(valkey_instances=[{"name": "cache", "role": "cache", "port": 6379, "tls": tls}])
    assert plan.exported == []


def test_exporter_acl_reads_introspection_only():
    line = " ".join(exporter_line(plan_of(valkey_acl=True)).split())
    assert line.startswith("user exporter on #") and "resetkeys resetchannels -@all" in line
    for allowed in ("+info", "+slowlog|get", "+slowlog|len", "+latency|latest", "+cluster|info"):
        assert f" {allowed}" in line
    for denied in ("+config", "+select", "+scan", "+get", "~", "&", "+@"):
        assert f" {denied}" not in line.replace("resetkeys resetchannels", ""), denied


def test_key_patterns_add_read_only_key_rules_and_the_size_commands():
    line = exporter_line(plan_of(valkey_acl=True, valkey_exporter={"key_patterns": ["db1=usr:*"]}))
    assert " %R~usr:* " in line and " ~" not in line
    for needed in ("+select", "+scan", "+type", "+strlen", "+llen", "+hlen", "+zcard"):
        assert f" {needed}" in line
    assert " +set" not in line and " +del" not in line and " +config" not in line


def test_env_file_holds_login_listen_address_and_turns_config_scrape_off():
    plan = plan_of(valkey_acl=True, valkey_exporter={"listen": "::1", "key_patterns": ["vp:*"]})
    env = exporter_environment(plan, plan.instances[0], SecretStr(PASSWORD))
    assert env == {
        "REDIS_ADDR": "redis://127.0.0.1:6379",
        "REDIS_EXPORTER_WEB_LISTEN_ADDRESS": "[::1]:9379",
        "REDIS_EXPORTER_CONFIG_COMMAND": "-",
        "REDIS_USER": "exporter",
        "REDIS_PASSWORD": PASSWORD,
        "REDIS_EXPORTER_CHECK_KEYS": "vp:*",
    }
    text = exporter_env(plan, plan.instances[0], SecretStr(PASSWORD))
    assert f"REDIS_PASSWORD='{PASSWORD}'" in text.splitlines()


def test_without_acls_the_exporter_logs_in_as_nobody():
    plan = plan_of()
    env = exporter_environment(plan, plan.instances[0], None)
    assert "REDIS_USER" not in env and "REDIS_PASSWORD" not in env


def test_unit_runs_as_prometheus_from_the_env_file_hardened():
    unit = exporter_unit()
    assert "User=prometheus" in unit and "ExecStart=/usr/bin/prometheus-redis-exporter\n" in unit
    assert "EnvironmentFile=/var/lib/valkey-plans/exporter/%i.env" in unit
    for hardening in ("NoNewPrivileges=true", "ProtectSystem=strict", "CapabilityBoundingSet="):
        assert hardening in unit


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ACL user's password from VALKEY_PLANS_SECRET_<USER>, as on an operator's box."""
    for user in ALL_USERS:
        monkeypatch.setenv(f"{ENV_PREFIX}{user.upper()}", f"{user}-password-0123456789")


def _deploy(facts, **data):
    return planned_operations(valkey_plan, facts, {"valkey_acl": True, **data}, HOST)


def _commands(planned) -> list[str]:
    return [
        c.get_raw_value()
        for _, commands in planned
        for c in commands
        if hasattr(c, "get_raw_value")
    ]


def test_systemd_deploy_password_only_in_the_0600_env_file(secrets_env):
    planned = _deploy(linux_facts())
    names = [name for name, _ in planned]
    uploads = uploaded(planned)
    (env_dest,) = [d for d in uploads if d.endswith("/.cache.env.candidate")]
    assert "exporter-password-0123456789" in uploads[env_dest]
    holders = [d for d, text in uploads.items() if "exporter-password-0123456789" in text]
    assert holders == [env_dest]
    commands = _commands(planned)
    assert not [c for c in commands if "exporter-password" in c]
    chmod = [c for c in commands if "chmod 600" in c and ".cache.env.candidate" in c]
    assert chmod, "the env file is not made 0600"
    assert any("prometheus-redis-exporter" in c and "apt-get" in c for c in commands)
    assert any(
        n.endswith(
            "default prometheus-redis-exporter.service is off (it would scrape 6379"
            " with no password)"
        )
        for n in names
    )
    assert any("systemctl start valkey-plans-exporter@cache.service" in c for c in commands)
    assert "valkey-plans | Exporter template unit valkey-plans-exporter@.service" in names


def test_without_systemd_the_exporter_starts_from_a_root_shell_reading_the_env_file(
    secrets_env,
):
    planned = _deploy(linux_facts(HasSystemd=False))
    commands = _commands(planned)
    assert not [c for c in commands if "exporter-password" in c]
    (start,) = [c for c in commands if "sh -c" in c and "prometheus-redis-exporter" in c]
    assert start.endswith(
        f"sh {ENV_FILE} /run/valkey-plans-exporter/cache.pid prometheus"
        " /usr/bin/prometheus-redis-exporter"
    )
    assert "--chuid" in start and '. "$1"' in start


def test_exporter_off_stops_and_disables_it_and_removes_its_env_file():
    unit = {"valkey-plans-exporter@cache.service": True}
    facts = linux_facts(
        SystemdStatus=lambda **kw: dict(unit),
        SystemdEnabled=lambda **kw: dict(unit),
        File=lambda path: {"mode": 600} if path == ENV_FILE else None,
    )
    planned = planned_commands(valkey_plan, facts, {"valkey_exporter": {"enabled": False}}, HOST)
    commands = [c for _, cs in planned for c in cs]
    assert "systemctl stop valkey-plans-exporter@cache.service" in commands
    assert "systemctl disable valkey-plans-exporter@cache.service" in commands
    assert f"rm -f {ENV_FILE}" in commands
    assert not [c for c in commands if "apt-get" in c and "prometheus-redis-exporter" in c]


def test_key_patterns_of_dbs_an_instance_lacks_are_left_out_for_it():
    plan = plan_of(
        valkey_acl=True,
        valkey_instances=[
            {"name": "cache", "role": "cache", "port": 6379},
            {"name": "hosted", "role": "primary", "port": 6380},
        ],
        valkey_exporter={"key_patterns": ["db1=usr:*", "vp:*"]},
    )
    cache, hosted = plan.instances
    assert plan.exporter.patterns_for(cache) == ["db1=usr:*", "vp:*"]
    assert plan.exporter.patterns_for(hosted) == ["vp:*"]
    env = exporter_environment(plan, hosted, None)
    assert env["REDIS_EXPORTER_CHECK_KEYS"] == "vp:*"
    (line,) = [x for x in acl_lines(plan, hosted, passwords()) if " exporter " in x]
    assert " %R~vp:* " in line and "usr:" not in line


def test_the_hosts_alert_rules_go_beside_the_exporters_readable_by_its_prometheus(secrets_env):
    planned = _deploy(linux_facts())
    uploads = uploaded(planned)
    (dest,) = [d for d in uploads if d.endswith("/.valkey-alerts.rules.yml.candidate")]
    assert dest.startswith("/etc/valkey-plans-exporter/")
    plan = Plan.from_host_data(HOST, {"valkey_acl": True})
    assert uploads[dest] == alert_rules(plan)
    commands = _commands(planned)
    assert [c for c in commands if "chmod 644" in c and ".valkey-alerts.rules.yml" in c]
    assert "exporter-password" not in uploads[dest]
