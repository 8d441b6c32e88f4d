"""Plan values shared by every inventory; DEFAULTS in valkey_plans.plan fill the rest."""

valkey_domains = ["usr", "ses", "msg"]
