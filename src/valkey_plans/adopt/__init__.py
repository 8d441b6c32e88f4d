"""Adopt a running Redis into a planned Valkey instance, nothing lost (README "Coming from Redis").

From Redis 7.x (and older) Valkey replicates from Redis, is promoted during a short
write pause and takes over Redis's port (`replicate`); Valkey cannot read Redis 8's RDB
or DUMP payloads, so from Redis 8 every key is copied by its type's own commands, the
keys changed meanwhile again, the last ones during the pause (`logical`). `switch`
runs either from start to switch.

Standard library only, and relative imports only: the deploy copies this package to the
adopted host and runs it there (`python3 -m vp_adopt SPEC`), beside Redis and Valkey.
"""

from .core import AdoptError, Adoption, Endpoint, Report
from .switch import adopt

__all__ = ["Adoption", "AdoptError", "Endpoint", "Report", "adopt"]
