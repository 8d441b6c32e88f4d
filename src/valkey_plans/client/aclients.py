"""The asyncio workload clients, for FastAPI-style applications: `AsyncClients`.

They are `valkey_plans.client.clients`' one implementation on valkey.asyncio's classes
(same settings, names, options, timeouts and guards); this module keeps the name
importable where applications import it. `await clients.aclose()` on shutdown.
"""

from __future__ import annotations

from valkey_plans.client.clients import ASYNC, AsyncClients

__all__ = ["ASYNC", "AsyncClients"]
