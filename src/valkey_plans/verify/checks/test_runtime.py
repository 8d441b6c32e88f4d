"""After a rollout: the running instances carry what the rendered config says, and
their logs and kernel give Valkey nothing to warn about that the plan could fix.
"""

from __future__ import annotations

import re

from valkey_plans.client.functions import LIBRARY_NAME, library_version
from valkey_plans.verify.report import advise, not_applicable
from valkey_plans.verify.server_log import startup_warnings

#: Directives compared between the rendered config and the live CONFIG GET. Read off
#: the rendered file, so they follow the template (ACL, TLS) as it grows.
WATCHED = re.compile(r"^(save|aclfile|tls-[a-z-]+)$")
#: Live value when the rendered config leaves a watched directive out.
ABSENT = {"aclfile": "", "tls-port": "0"}

_VERSION = re.compile(r"local VERSION = '([^']+)'")


def rendered_directives(text: str) -> dict[str, str]:
    """Watched directives of a rendered config, as CONFIG GET shows them (save rules joined)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#") and WATCHED.match(parts[0]):
            found.setdefault(parts[0], []).append(parts[1].strip().strip('"'))
    return {name: " ".join(v for v in values if v) for name, values in found.items()}


def test_live_persistence_acl_and_tls_match_rendered_config(plan, valkey, rendered):
    for inst in plan.instances:
        want = {**ABSENT, **rendered_directives(rendered(inst)[1])}
        live = valkey(inst)
        got = {name: live.config(name) for name in want}
        assert got == want, (
            f"{inst.name}: live CONFIG differs from the rendered config: {got} != {want}"
        )


def test_functions_library_loaded_on_cache_instances(plan, valkey):
    caches = [inst for inst in plan.instances if inst.role == "cache"]
    if not caches:
        not_applicable("no cache instance on this host")
    for inst in caches:
        listing = valkey(inst).cli("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME, "WITHCODE")
        assert LIBRARY_NAME in listing.split(), (
            f"{inst.name}: no Functions library {LIBRARY_NAME}: the cache bounds are not"
            " enforced; re-run the deploy"
        )
        match = _VERSION.search(listing)
        loaded = match.group(1) if match else None
        assert loaded == library_version(), (
            f"{inst.name}: library {LIBRARY_NAME} version {loaded}, this package ships"
            f" {library_version()}; re-run the deploy"
        )


def test_kernel_settings_valkey_warns_about(host):
    """Advisory: the plan does not manage kernel settings, so these never fail verify."""
    overcommit = host.file("/proc/sys/vm/overcommit_memory").content_string.strip()
    if overcommit != "1":
        advise(f"vm.overcommit_memory = {overcommit}, Valkey wants 1 (background saves may fail)")
    thp = host.file("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists and "[always]" in thp.content_string:
        advise("transparent hugepages = always, Valkey wants madvise or never (latency, memory)")
    backlog = host.file("/proc/sys/net/core/somaxconn")
    if backlog.exists and int(backlog.content_string.strip() or 0) < 511:
        advise(f"net.core.somaxconn = {backlog.content_string.strip()} < tcp-backlog 511")


def test_logs_free_of_startup_warnings_the_plan_can_fix(host, plan):
    for inst in plan.instances:
        log = host.file(inst.paths.logfile)
        assert log.exists, f"{inst.name}: no log file {inst.paths.logfile}"
        found = startup_warnings(log.content_string)
        assert not found, f"{inst.name}: {len(found)} warnings in {inst.paths.logfile}: {found[0]}"
