"""After a rollout: every instance's Prometheus exporter is up and serves that instance.

The page is read on the host itself with the python3 that every supported host has
(Debian minbase lacks curl), so the check needs no route to the metrics address.
"""

from __future__ import annotations

import re

from valkey_plans.verify.report import not_applicable

#: Print a URL's body; exit 1 with the reason on stderr when it cannot be fetched.
FETCH = (
    "import sys, urllib.request\n"
    "try:\n"
    "    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
    "except Exception as exc:\n"
    "    sys.exit(f'{sys.argv[1]}: {exc}')\n"
)
#: Metrics' sample lines: name, optional labels, value.
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.MULTILINE)


def samples(text: str) -> dict[str, str]:
    """`name{labels}` -> value of every sample line of a metrics page."""
    return {f"{name}{labels}": value for name, labels, value in SAMPLE.findall(text)}


def metrics_url(plan, inst) -> str:
    """Where verify reads the exporter of `inst` on its own host: the planned address,
    or loopback when it listens on every address."""
    url = plan.exporter.url(inst)
    return re.sub(r"//(0\.0\.0\.0|\[::\]):", "//127.0.0.1:", url)


def test_exporters_up_and_serving_their_instance(host, plan, valkey):
    if not plan.exporter.enabled:
        not_applicable("valkey_exporter.enabled is false")
    if not plan.exported:
        not_applicable("no instance with an exporter (TLS-only instances get none)")
    for inst in plan.exported:
        url = metrics_url(plan, inst)
        page = host.run_expect([0, 1], "python3 -c %s %s", FETCH, url)
        assert page.rc == 0, f"{inst.name}: exporter at {url} does not answer: {page.stderr}"
        found = samples(page.stdout)
        assert found.get("redis_up") == "1", (
            f"{inst.name}: exporter at {url} says redis_up {found.get('redis_up')}: it cannot"
            f" log in to {inst.name} (the exporter ACL user's password, its env file)"
        )
        info = [k for k in found if k.startswith("redis_instance_info{")]
        assert any(f'tcp_port="{inst.port}"' in k for k in info), (
            f"{inst.name}: exporter at {url} serves another instance: {info}"
        )
        keyspace = valkey(inst).cli("INFO", "keyspace")
        dbs = ["db0", *re.findall(r"^(db\d+):", keyspace, re.MULTILINE)]
        missing = [db for db in dbs if f'redis_db_keys{{db="{db}"}}' not in found]
        assert not missing, f"{inst.name}: exporter at {url} has no redis_db_keys for {missing}"
