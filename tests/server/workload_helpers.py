"""Helpers shared by the sync and asyncio workload-client tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.valkey_server import ValkeyProcess
from valkey_plans.client.settings import TierSettings, load_settings


def tier_for(server: ValkeyProcess, **env: str) -> TierSettings:
    return load_settings(
        {
            "VALKEY_APP": "shop",
            "VALKEY_PORT": str(server.port),
            **{f"VALKEY_{k.upper()}": v for k, v in env.items()},
        }
    ).hosted


def by_name(server: ValkeyProcess) -> dict[str, list[dict[str, str]]]:
    names: dict[str, list[dict[str, str]]] = {}
    for entry in server.client().client_list():
        names.setdefault(entry["name"], []).append(entry)
    return names


def wait_until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll for a server-side state; the limit only bounds a hang, it is not a speed check."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw: {what}")
        time.sleep(0.01)
