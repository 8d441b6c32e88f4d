"""After a rollout: the host runs Valkey exactly as its plan says."""

from __future__ import annotations

from valkey_plans.deploy.valkey_cli import cli_format
from valkey_plans.plan.versions import meets, series_of
from valkey_plans.verify.report import not_applicable

PACKAGE = "valkey-server"


def test_valkey_package_installed(host, plan):
    package = host.package(PACKAGE)
    assert package.is_installed, f"{PACKAGE} is not installed: run the deploy"
    series = series_of(package.version)
    if plan.version:  # "9.1", or a major: its newest series on the host's OS
        wanted = plan.version
        assert meets(series, wanted), (
            f"{PACKAGE} {package.version} is Valkey {series}; the plan's valkey_version is"
            f" {wanted!r}: run the deploy"
        )
    else:
        assert series.split(".")[0] in ("8", "9"), f"{PACKAGE} {package.version}, want 8.x or 9.x"


def test_instances_run_as_valkey(host, plan):
    for inst in plan.instances:
        # cat exits 1 when the pidfile is missing: the assertion below says what that means
        pid = host.run_expect([0, 1], "cat %s", inst.paths.pidfile).stdout.strip()
        assert pid.isdigit(), f"{inst.name}: no pidfile {inst.paths.pidfile}: instance not running"
        user = host.run_expect([0], "ps -o user= -p %s", pid).stdout.strip()
        assert user == "valkey", f"{inst.name}: valkey-server runs as {user!r}, want valkey"


def test_systemd_units_enabled_and_default_unit_off(host, plan):
    if not host.file("/run/systemd/system").is_directory:
        # Without systemd as PID 1 the deploy uses start-stop-daemon; nothing to enable.
        # ls exits 2 when the glob matches nothing: no start link, as it should be
        links = host.run_expect([0, 2], "ls /etc/rc?.d/S*valkey-server 2>/dev/null").stdout.split()
        assert not links, f"the package's default init script is enabled: {links}"
        return
    for inst in plan.instances:
        service = host.service(inst.unit)
        assert service.is_running, f"{inst.unit} is not running"
        assert service.is_enabled, f"{inst.unit} is not enabled at boot"
    assert not host.service("valkey-server").is_enabled, "valkey-server.service is enabled"
    assert not host.service("valkey-server").is_running, "valkey-server.service is running"


def test_listening_only_where_planned(host, plan):
    listening = {str(s) for s in host.socket.get_listening_sockets()}
    for inst in plan.instances:
        for port in inst.ports:
            planned = {f"tcp://{a.removeprefix('-')}:{port}" for a in inst.bind}
            for address in planned:
                assert address in listening, f"{inst.name}: not listening on {address}"
            actual = {s for s in listening if s.startswith("tcp") and s.endswith(f":{port}")}
            stray = actual - planned
            assert not stray, (
                f"{inst.name}: listening on {sorted(stray)}, plan says {sorted(planned)}"
            )
        if inst.tls and inst.tls.only:
            plain = {s for s in listening if s.startswith("tcp") and s.endswith(f":{inst.port}")}
            assert not plain, f"{inst.name}: TLS only, yet the plain port listens: {sorted(plain)}"


def test_live_config_matches_plan(plan, valkey):
    for inst in plan.instances:
        live = valkey(inst)
        want = {
            "databases": str(inst.databases),
            "maxmemory": str(inst.maxmemory_bytes),
            "maxmemory-policy": inst.maxmemory_policy,
            "maxmemory-samples": str(inst.maxmemory_samples),
            "appendonly": "yes" if inst.appendonly else "no",
            "port": "0" if inst.tls and inst.tls.only else str(inst.port),
        }
        got = {name: live.config(name) for name in want}
        assert got == want, f"{inst.name}: live CONFIG differs from the plan: {got} != {want}"


def test_config_files_owned_by_valkey_and_not_world_readable(host, plan):
    for inst in plan.instances:
        conf = host.file(inst.paths.config)
        assert conf.exists, f"{inst.paths.config} is missing"
        assert (conf.user, conf.group) == ("valkey", "valkey"), f"{inst.paths.config} owner"
        assert conf.mode == 0o640, f"{inst.paths.config} mode {oct(conf.mode)}, want 0o640"


def test_config_files_are_the_deployed_ones(host, plan, rendered):
    for inst in plan.instances:
        path, text = rendered(inst)
        content = host.file(path).content_string
        assert content == text, (
            f"{path} differs from what the plan renders: edited behind the deploy's"
            " back? Re-run the deploy."
        )


def test_acl_users_on_and_default_user_off(host, plan, valkey):
    if not plan.acl:
        not_applicable("the plan has no ACL users (valkey_acl: false)")
    for inst in plan.instances:
        acl = host.file(inst.paths.aclfile)
        assert acl.exists, f"{inst.paths.aclfile} is missing"
        assert (acl.user, acl.mode) == ("valkey", 0o600), f"{inst.paths.aclfile} owner/mode"
        assert ">" not in acl.content_string, f"{inst.paths.aclfile} holds a plaintext password"
        # valkey-cli exits 0 on an error reply (NOAUTH) too
        ping = cli_format(None, "PING", socket=inst.paths.unixsocket)
        anonymous = host.run_expect([0], *ping).stdout
        assert "NOAUTH" in anonymous, f"{inst.name}: the default user can connect: {anonymous!r}"
        assert valkey(inst).cli("ACL", "WHOAMI").strip() == "checks"
