"""What the plan allows in each db: the audit's rules.

Every key of an instance must be explainable from the plan: a record of a declared
domain in the db the plan gives it, a declared structural (`vp:`) key, or (cache
user_index) a normalised email pointing at a `usr:` key. This module turns a Plan
instance into per-db rules and classifies one key against them; `audit` does the
scanning. Kept free of I/O so the rules are testable key by key. What each cache db
holds (its record domain and type, its structural keys, whether it is the index) is
declared once, by `valkey_plans.client.schema.CACHE_DB_USES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from valkey_plans.client import cache
from valkey_plans.client.schema import CACHE_DB_USES, INDEX, Structural, cache_dbs_of
from valkey_plans.client.store import HOSTED_STRUCTURAL
from valkey_plans.domains import STRUCTURAL_PREFIX
from valkey_plans.keys import TXKEY_LENGTH, KeyFormatError, Keys
from valkey_plans.plan import Instance, Plan

#: Keys the cache behaviour canary (checks/test_cache_behaviour.py) writes and removes.
CANARY_PREFIX = f"{STRUCTURAL_PREFIX}canary:"
CANARY = Structural(CANARY_PREFIX, "", prefix=True)  # any type: the canary's own keys

#: The one index db, and the domain of the record keys its entries hold (`usr:`).
(INDEX_DB,) = cache_dbs_of(INDEX)
INDEXED_DOMAIN = CACHE_DB_USES[INDEX_DB].points_at

# Violation kinds: short, stable names for counting and for machines.
MALFORMED = "malformed-name"
UNDECLARED_DOMAIN = "undeclared-domain"
WRONG_DB = "wrong-db"
MISSING_TTL = "missing-ttl"
INDEX_TTL = "index-entry-ttl"
OVER_CAP = "over-cap"
BAD_INDEX_VALUE = "bad-index-value"
OUTSIDE_DB0 = "outside-db0"
UNPLANNED_DB = "unplanned-db"
UNDECLARED_STRUCTURAL = "undeclared-structural"
WRONG_TYPE = "wrong-type"

CONFORMING = "conforming"
STRUCTURAL = "structural"
VIOLATION = "violation"

_TXKEY = f"[0-9A-Za-z]{{{TXKEY_LENGTH}}}"
_RECORD = re.compile(r"([a-z]{3}):" + _TXKEY)
_DOMAIN_SHAPE = re.compile(r"[a-z]{3}:")


@dataclass(frozen=True)
class DbRules:
    """What one db of one instance may hold, read off the plan."""

    db: int
    name: str
    #: Record domain this db holds (None: the user index, or any declared domain on a primary).
    domain: str | None
    record_type: str | None
    ttl_required: bool = False
    ttl_forbidden: bool = False
    cap: int | None = None
    is_index: bool = False
    planned: bool = True
    structural: tuple[Structural, ...] = ()
    #: Whether string values are worth fetching (MGET): they are checked (index) or small.
    strings: bool = False
    #: Domains that have a home db on this instance (a record elsewhere is in the wrong db).
    homes: dict[str, int] = field(default_factory=dict)


def instance_rules(plan: Plan, inst: Instance) -> dict[int, DbRules]:
    """The rules of every db the plan gives `inst` (dbs not listed hold nothing)."""
    if inst.role != "cache":
        return {0: DbRules(0, "db0", None, None, structural=HOSTED_STRUCTURAL)}
    homes = {use.domain: inst.db(name).db for name, use in CACHE_DB_USES.items() if use.domain}
    rules = {}
    for name, spec in inst.cache_dbs.items():
        use = CACHE_DB_USES[name]
        rules[spec.db] = DbRules(
            db=spec.db,
            name=name,
            domain=use.domain,
            record_type=use.record_type,
            ttl_required=spec.ttl is not None,
            ttl_forbidden=use.kind == INDEX,
            cap=spec.cap,
            is_index=use.kind == INDEX,
            structural=(*use.structural, CANARY),
            strings=use.record_type == "string",
            homes=homes,
        )
    return rules


def unplanned(db: int) -> DbRules:
    """Rules for a db the plan does not use: every key in it is a violation."""
    return DbRules(db, f"db{db}", None, None, planned=False)


class Classifier:
    """Classify keys of one instance; `keys` is the plan's codec (its declared domains)."""

    def __init__(self, plan: Plan, inst: Instance) -> None:
        self.keys = Keys(plan.all_domains)
        self.declared = frozenset(plan.all_domains)
        self.role = inst.role

    def name(self, rules: DbRules, key: str, type_: str, ttl_ms: int) -> tuple[str, str, str]:
        """(class, violation kind or '', reason) for one key; the value is checked apart."""
        if not rules.planned:
            if self.role != "cache":
                return (
                    VIOLATION,
                    OUTSIDE_DB0,
                    f"db {rules.db}: a {self.role} keeps keys in db 0 only",
                )
            return VIOLATION, UNPLANNED_DB, f"db {rules.db} is not in the plan's cache db map"
        if key.startswith(STRUCTURAL_PREFIX):
            for decl in rules.structural:
                if decl.matches(key):
                    if decl.type and type_ != decl.type:
                        return (
                            VIOLATION,
                            WRONG_TYPE,
                            f"structural key is a {type_}, want {decl.type}",
                        )
                    return STRUCTURAL, "", ""
            return (
                VIOLATION,
                UNDECLARED_STRUCTURAL,
                f"'{STRUCTURAL_PREFIX}' key not declared for db {rules.db} ({rules.name})",
            )
        match = _RECORD.fullmatch(key)
        if rules.is_index:
            if match or _DOMAIN_SHAPE.match(key):
                return self._misplaced(rules, key)
            if not _is_email(key):
                return VIOLATION, MALFORMED, f"{rules.name} key is not a normalised email address"
            if type_ != "string":
                return VIOLATION, WRONG_TYPE, f"index entry is a {type_}, want a string"
            if ttl_ms >= 0:
                return VIOLATION, INDEX_TTL, "index entry has a TTL: volatile-lru may evict it"
            return CONFORMING, "", ""
        if match is None:
            return self._malformed(key)
        domain = match.group(1)
        if domain not in self.declared:
            return VIOLATION, UNDECLARED_DOMAIN, f"domain {domain!r} is not declared by the plan"
        if rules.domain is not None and domain != rules.domain:
            return self._misplaced(rules, key)
        if rules.record_type and type_ != rules.record_type:
            return VIOLATION, WRONG_TYPE, f"{domain}: record is a {type_}, want {rules.record_type}"
        if rules.ttl_required and ttl_ms < 0:
            return VIOLATION, MISSING_TTL, f"no TTL, but {rules.name} requires one"
        return CONFORMING, "", ""

    def _misplaced(self, rules: DbRules, key: str) -> tuple[str, str, str]:
        domain = key[:3]
        home = rules.homes.get(domain)
        where = f"db {home}" if home is not None else "no db of a cache instance"
        return (
            VIOLATION,
            WRONG_DB,
            f"{domain}: key in db {rules.db} ({rules.name}); belongs in {where}",
        )

    def _malformed(self, key: str) -> tuple[str, str, str]:
        try:
            self.keys.parse(key)
        except KeyFormatError as exc:
            kind = UNDECLARED_DOMAIN if "unknown domain" in str(exc) else MALFORMED
            return VIOLATION, kind, str(exc)
        return VIOLATION, MALFORMED, "not a <dom>:<txkey> record key"

    def index_value(self, value: bytes | None) -> str:
        """'' when an index entry's value is a well-formed `usr:` key, else why not."""
        if value is None:
            return "index entry vanished or is not a string"
        text = value.decode("utf-8", "backslashreplace")
        want = f"{INDEXED_DOMAIN}:"
        if text.startswith(want) and _RECORD.fullmatch(text):
            return ""
        try:
            parsed = self.keys.parse(text)
        except KeyFormatError as exc:
            return f"index entry points at a malformed {want} key: {exc}"
        return f"index entry points at a {parsed.domain}: key {text!r}, want a {want} key"


def _is_email(key: str) -> bool:
    try:
        return cache.normalise_email(key) == key
    except cache.CacheError:
        return False
