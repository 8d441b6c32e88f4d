"""What a crash between the store's writes left to repair on the hosted tier, read-only.

On a cluster the store writes a user's record and its email entry one slot at a time
(client/store.py, `_save_clustered`), so a process killed between the steps leaves one
of three states, each tolerated by the store and repaired later:

- an entry whose record is gone (ignored by lookups, deleted by the next one);
- an entry naming a record that carries another email (the same);
- a record whose email has no entry, or an entry naming another record (found by no
  lookup until the user is saved again, which re-links it).

The per-node keyspace audit cannot see these: an entry and its record usually live on
different nodes. This walks every entry and every user record through one client that
sees the whole keyspace (the cluster client, or the primary's), with SCAN and
pipelined GETs only, which the read-only `checks` user may run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import valkey

from valkey_plans.client.cache import CacheError, normalise_email
from valkey_plans.client.store import EMAIL_PREFIX

#: The domain of the records the store indexes by email.
USERS = "usr"
#: Names per pipelined batch of GETs.
BATCH = 1000
#: Keys kept per kind of finding; the rest are only counted.
SAMPLE = 10

ORPHAN = "entry without its record"
STRAY = "entry naming a record of another email"
UNLINKED = "record without its entry"
REPAIRED_BY = {
    ORPHAN: "the next lookup of the email deletes it",
    STRAY: "the next lookup of the email deletes it",
    UNLINKED: "the next save of the user re-links it",
}


@dataclass
class StoreLinks:
    """Counts of the entries and records walked, and of each finding, with samples."""

    entries: int = 0
    records: int = 0
    found: dict[str, int] = field(default_factory=dict)
    sample: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, key: str) -> None:
        self.found[kind] = self.found.get(kind, 0) + 1
        kept = self.sample.setdefault(kind, [])
        if len(kept) < SAMPLE:
            kept.append(key)

    @property
    def to_repair(self) -> int:
        return sum(self.found.values())

    def lines(self) -> list[str]:
        """The report: one line of totals, one per finding with its repair and a sample."""
        head = f"store links: {self.entries} email entries, {self.records} user records"
        out = [head + (", nothing to repair" if not self.to_repair else "")]
        for kind, count in sorted(self.found.items()):
            shown = ", ".join(self.sample[kind])
            out.append(f"  ~ {count} {kind} ({REPAIRED_BY[kind]}): {shown}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "records": self.records,
            "to_repair": self.to_repair,
            "found": dict(self.found),
            "sample": {k: list(v) for k, v in self.sample.items()},
        }


def _batches(client: valkey.Valkey, pattern: str) -> Iterator[list[str]]:
    batch: list[str] = []
    for raw in client.scan_iter(match=pattern, count=BATCH):
        batch.append(raw.decode() if isinstance(raw, bytes) else raw)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _get_all(client: valkey.Valkey, keys: list[str]) -> list[Any]:
    """GET of each key, pipelined; a key of another type reads as None (not the store's)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    replies = pipe.execute(raise_on_error=False)
    return [None if isinstance(r, valkey.ResponseError) else r for r in replies]


def _email_of(raw: bytes | str | None) -> str | None:
    """The index form of a stored record's email; None without one (or unreadable)."""
    if raw is None:
        return None
    try:
        email = json.loads(raw).get("email")
        return normalise_email(email) if isinstance(email, str) else None
    except (ValueError, AttributeError, CacheError):
        return None


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass
class LinkWalk:
    """The entries and records of one store, gathered node by node, then joined.

    Each node is read on its own connection (a cluster node's SCAN lists the keys it
    owns, and their GETs stay on it), so the audit's per-node clients serve here too.
    """

    #: normalised email -> the record key its entry names
    entries: dict[str, str] = field(default_factory=dict)
    #: user record key -> the normalised email it carries (None: none)
    emails: dict[str, str | None] = field(default_factory=dict)

    def walk(self, client: valkey.Valkey) -> None:
        """Read one primary's entries and user records (db 0, where the store writes)."""
        for entries in _batches(client, f"{EMAIL_PREFIX}*"):
            for entry, named in zip(entries, _get_all(client, entries), strict=True):
                if (key := _text(named)) is not None:
                    self.entries[entry.removeprefix(EMAIL_PREFIX)] = key
        for keys in _batches(client, f"{USERS}:*"):
            for key, raw in zip(keys, _get_all(client, keys), strict=True):
                self.emails[key] = _email_of(raw)

    def report(self) -> StoreLinks:
        links = StoreLinks(entries=len(self.entries), records=len(self.emails))
        for email, key in sorted(self.entries.items()):
            if key not in self.emails:
                links.add(ORPHAN, f"{EMAIL_PREFIX}{email}")
            elif self.emails[key] != email:
                links.add(STRAY, f"{EMAIL_PREFIX}{email}")
        for key, email in sorted(self.emails.items()):
            if email is not None and self.entries.get(email) != key:
                links.add(UNLINKED, key)
        return links


def store_links(*primaries: valkey.Valkey) -> StoreLinks:
    """The findings over every primary of one store (one, or each of a cluster's)."""
    walk = LinkWalk()
    for client in primaries:
        walk.walk(client)
    return walk.report()
