"""Every default is written once, in valkey_plans.plan.defaults, and README says the same.

The model's fields read the defaults surface instead of restating a value, so a field
with a default of its own (other than None, "not set") is a second place to keep in step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic_core import PydanticUndefined

from valkey_plans.plan import (
    DEFAULTS,
    INSTANCE_DEFAULTS,
    ROLE_DEFAULTS,
    SENTINEL_DEFAULTS,
    TLS_DEFAULTS,
    App,
    Exporter,
    Instance,
    Plan,
    Sentinel,
    Tls,
)

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
TLS = {"port": 6390, "cert_file": "/c.pem", "key_file": "/k.pem", "ca_cert_file": "/ca.pem"}


def _own_defaults(model: type) -> dict[str, object]:
    """The fields of `model` that carry a default value (None means "not set")."""
    return {
        name: field.default
        for name, field in model.model_fields.items()
        if field.default is not PydanticUndefined and field.default is not None
    }


def test_model_defaults_are_the_surfaces():
    assert _own_defaults(App) == {k: v for k, v in DEFAULTS["valkey_app"].items() if v is not None}
    assert App().model_dump() == DEFAULTS["valkey_app"]
    assert Exporter().model_dump() == DEFAULTS["valkey_exporter"]
    assert _own_defaults(Sentinel) == SENTINEL_DEFAULTS
    assert _own_defaults(Tls) == TLS_DEFAULTS
    # An instance's defaults are merged in whole (INSTANCE_DEFAULTS under the role's); its
    # cache db map comes from the client's schema (tests/unit/test_schema.py).
    assert _own_defaults(Instance) == {}
    for role, defaults in ROLE_DEFAULTS.items():
        extra = {"replicaof": "h/p", "bind": ["10.0.0.1"]} if role == "replica" else {}
        extra |= {"cluster": "c", "bind": ["10.0.0.1"]} if role == "cluster-node" else {}
        inst = Instance.model_validate({"name": "i", "role": role, "port": 7000, **extra})
        dumped = inst.model_dump(by_alias=True)
        assert {k: dumped[k] for k in defaults} == defaults, role
        assert {k: dumped[k] for k in INSTANCE_DEFAULTS if k not in extra} == {
            k: v for k, v in INSTANCE_DEFAULTS.items() if k not in extra
        }, role


def test_a_plan_without_data_is_the_defaults():
    plan = Plan.from_host_data("h", {})
    assert plan.model_dump(by_alias=True)["valkey_app"] == DEFAULTS["valkey_app"]
    sentinel = Plan.from_host_data(
        "h", {"valkey_sentinel": {"primary": "h/cache", "bind": ["127.0.0.1"]}}
    ).sentinel
    assert sentinel is not None
    assert {k: getattr(sentinel, k) for k in SENTINEL_DEFAULTS} == SENTINEL_DEFAULTS
    tls = Tls.model_validate(TLS)
    assert {k: getattr(tls, k) for k in TLS_DEFAULTS} == TLS_DEFAULTS


def _readme_default(key: str) -> str:
    """The default column of README's "Plan settings" row for `key`."""
    row = re.search(rf"^\| `{re.escape(key)}` \| ([^|]+) \|", README, re.MULTILINE)
    assert row, f"README 'Plan settings' has no row for {key}"
    return row.group(1).strip()


def _shown(value: object) -> str:
    return "`None`" if value is None else f"`{json.dumps(value)}`"


def test_readme_says_the_same_defaults():
    simple = ["valkey_instances", "valkey_domains", "valkey_custom_domains", "valkey_sentinel"]
    simple += ["valkey_cluster_replicas", "valkey_debian_mirror", "valkey_apt_cache_time"]
    for key in simple:
        assert _readme_default(key) == _shown(DEFAULTS[key]), key
    for section in ("valkey_app", "valkey_exporter"):
        for key, value in DEFAULTS[section].items():
            assert _readme_default(f"{section}.{key}") == _shown(value), key
    for key, value in INSTANCE_DEFAULTS.items():
        assert _readme_default(key) == _shown(value), key
    row = re.search(r"^\| `valkey_sentinel` \|.*$", README, re.MULTILINE)
    assert row
    for key, value in SENTINEL_DEFAULTS.items():
        said = rf"`{key}`[^`|]*\(default `?{re.escape(json.dumps(value))}`?[;,)]"
        assert re.search(said, row.group(0)), f"README: valkey_sentinel.{key} default {value}"
