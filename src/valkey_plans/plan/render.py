"""Template rendering: one jinja2 environment for the deploy, the tests and the checks.

StrictUndefined turns a misspelt variable into an error at render time, before
anything is uploaded, instead of an empty value in a live config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from pydantic import SecretStr

from valkey_plans.plan.acl import acl_lines
from valkey_plans.plan.app_settings import app_environment
from valkey_plans.plan.layout import (
    DEBIAN,
    EXPORTER_PROGRAM,
    Layout,
    exporter_paths,
    sentinel_paths,
)

TEMPLATE_DIR = Path(__file__).parent / "templates"

MANAGED_HEADER = "Managed by valkey-plans (pyinfra): do not edit, change the plan."

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


def render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(managed_header=MANAGED_HEADER, **context)


def acl_file(plan: Any, instance: Any, passwords: dict[str, SecretStr]) -> str:
    """The aclfile of one instance: hashes only, never a plaintext password.

    Valkey refuses comment lines in an aclfile, so it carries no managed header;
    the instance config that names it does.
    """
    return "\n".join(acl_lines(plan, instance, passwords)) + "\n"


def instance_config(
    plan: Any, instance: Any, layout: Layout = DEBIAN, replicaof: str | None = None
) -> str:
    """The valkey-NAME.conf of one planned instance, with the host's file layout.

    `replicaof` ("ADDRESS PORT" of the primary, from valkey_plans.plan.topology) is
    required for a replica: only the whole inventory knows where its primary is.
    """
    if instance.role == "replica" and not replicaof:
        raise ValueError(f"{instance.name} is a replica: its primary's address is needed")
    paths = layout.paths(instance.name)
    return render(
        "valkey-instance.conf.j2", plan=plan, instance=instance, paths=paths, replicaof=replicaof
    )


def sentinel_config(
    plan: Any, primary: str, password: SecretStr | None, layout: Layout = DEBIAN
) -> str:
    """sentinel-NAME.conf: `primary` is "ADDRESS PORT" of the watched primary."""
    return render(
        "sentinel.conf.j2",
        plan=plan,
        sentinel=plan.sentinel,
        paths=sentinel_paths(layout, plan.sentinel.name),
        primary=primary,
        password=password.get_secret_value() if password else None,
    )


def replication_auth(password: SecretStr) -> str:
    """The 0600 file a replica logs in to its primary with (included by the config)."""
    return f"masteruser replica\nmasterauth {password.get_secret_value()}\n"


def app_files(plan: Any, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The application's env file and JSON twin, keyed by file name.

    `settings` are `app_environment`'s for this host (the deploy passes them with the
    passwords); by default the plan's own, without any password.
    """
    settings = app_environment(plan) if settings is None else settings
    return {
        f"{plan.app.name}.env": render("app.env.j2", plan=plan, settings=settings),
        f"{plan.app.name}.json": render("app.json.j2", plan=plan, settings=settings),
    }


def exporter_environment(plan: Any, instance: Any, password: SecretStr | None) -> dict[str, str]:
    """The exporter's settings as the environment variables it reads (1.45 and later).

    Everything goes through the root-only env file, nothing through arguments, so no
    password or setting is ever on a command line. The config scrape is off: the
    exporter would run `CONFIG GET *`, which returns masterauth in plaintext. A cluster
    node's exporter scrapes its own node only (no REDIS_EXPORTER_IS_CLUSTER: key checks
    SCAN that node's keys).
    """
    env = {
        "REDIS_ADDR": f"redis://{_url_host(instance.client_address)}:{instance.port}",
        "REDIS_EXPORTER_WEB_LISTEN_ADDRESS": f"{_url_host(plan.exporter.listen)}:"
        f"{instance.port + plan.exporter.port_offset}",
        "REDIS_EXPORTER_CONFIG_COMMAND": "-",
    }
    if password is not None:
        env["REDIS_USER"] = "exporter"
        env["REDIS_PASSWORD"] = password.get_secret_value()
    patterns = plan.exporter.patterns_for(instance)
    if patterns:
        env["REDIS_EXPORTER_CHECK_KEYS"] = ",".join(patterns)
    return env


def _url_host(address: str) -> str:
    """An IP address as a URL's host part: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def exporter_env(plan: Any, instance: Any, password: SecretStr | None) -> str:
    """The exporter's env file: `KEY='value'` lines, which systemd's EnvironmentFile= and
    a POSIX shell's `.` both read the same way (no value holds a quote: secrets.PASSWORD)."""
    return render(
        "exporter.env.j2",
        plan=plan,
        instance=instance,
        settings=exporter_environment(plan, instance, password),
    )


def exporter_unit(layout: Layout = DEBIAN) -> str:
    """The template unit `valkey-plans-exporter@.service`, hardened like Debian's units."""
    env_dir = exporter_paths(layout, "%i").env_file.rsplit("/", 1)[0]
    return render("valkey-plans-exporter@.service.j2", env_dir=env_dir, program=EXPORTER_PROGRAM)
