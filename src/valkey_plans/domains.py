"""The key-domain registry: the one place that says which `<dom>:` prefixes exist.

Plans declare a subset of these (or add their own 3-letter codes); the key codec,
the plan validation and the keyspace audit all read this table.
"""

import re

DOMAIN_PATTERN = re.compile(r"[a-z]{3}")

#: Known domains and what their records are.
DOMAINS: dict[str, str] = {
    "con": "contact",
    "usr": "user",
    "msg": "message (email, SMS, ...)",
    "ses": "session",
    "prd": "product",
    "ord": "order",
    "crt": "cart item",
    "otp": "one-time password",
}

#: Prefix of structural keys (LRU indexes, queue lists) that are not records.
STRUCTURAL_PREFIX = "vp:"
