"""Read-through to the hosted tier, with the local cache in front and invalidation behind.

The hosted tier (a `primary`, db 0 only) is the source of truth. Reads try the local
cache, then hosted, then fill the cache. Writes go to hosted first, in one MULTI
with the PUBLISH of their invalidation (so no committed write can lose its
invalidation), then update the local copy. Every node runs a subscriber that drops
its local copies when another node writes; after any (re)subscription it drops the
whole user and session dbs, because invalidations published while it was away are
gone. On a cluster it subscribes on every node (client/invalidation.py).

A user fill never outlives a newer write: before it reads hosted, the reader takes a
lease on the key in the local cache (a random token in the LRU's lease hash); every local put
(this node's own writes) and every invalidation drops the lease, and the library
stores the fill only while the lease still holds the reader's token, atomically with
the check. So a value read before a write that this node has already applied (its own,
or another node's invalidation) is served once and not cached; one applied later
deletes the fill. Session fills take a lease the same way; a revocation drops its
session's lease, a revocation of all of an owner's sessions every session lease.

On a cluster hosted tier a MULTI cannot span slots, so a write that touches a record
and an index goes one slot at a time, in an order after which a crash leaves only
what the store ignores and repairs: an email entry whose record is gone or carries
another email (ignored, and cleaned by the next lookup), a session-index member
whose session is gone (inert; the set expires). Each record write stays one MULTI
with its invalidation, on the record's node.

Hosted unreachable: whatever the local cache holds keeps being served; a miss or a
write raises `HostedUnavailable`, so nothing is silently dropped.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import valkey
from valkey.exceptions import ValkeyClusterException, ValkeyError

from valkey_plans.client.cache import (
    MAX_MS,
    CacheError,
    LocalCache,
    Record,
    Session,
    encode,
    loads,
    normalise_email,
    owner_key,
    record_key,
    sessions_of,
)
from valkey_plans.client.invalidation import Seen, Subscriptions
from valkey_plans.client.schema import SESSIONS_OF_PREFIX, Structural
from valkey_plans.keys import new_key

log = logging.getLogger(__name__)
T = TypeVar("T")

USERS_CHANNEL = "vp:inval:users"
SESSIONS_CHANNEL = "vp:inval:sessions"
#: Hosted db 0: normalised email -> `usr:` key (structural, so the `vp:` prefix).
EMAIL_PREFIX = "vp:email:"
#: The structural keys this store keeps on the hosted tier (db 0), for the keyspace audit.
HOSTED_STRUCTURAL = (
    Structural(EMAIL_PREFIX, "string", prefix=True),
    Structural(SESSIONS_OF_PREFIX, "set", prefix=True),
)
RESUBSCRIBE_PAUSE = 0.5


class HostedUnavailable(ConnectionError):
    """The hosted tier did not answer: the named operation was not done."""


def email_key(email: str) -> str:
    return f"{EMAIL_PREFIX}{normalise_email(email)}"


def _stored_email(email: Any) -> str | None:
    """The index form of an email read back from hosted, or None when it has none.

    A record written before the current normalisation may hold an address it now
    refuses (a zero-width character, say); saving or deleting that user must still work.
    """
    if email is None:
        return None
    try:
        return normalise_email(email)
    except CacheError as exc:
        log.warning("stored email left unindexed: %s", exc)
        return None


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def _where(client: valkey.Valkey | valkey.ValkeyCluster) -> str:
    if isinstance(client, valkey.ValkeyCluster):
        return ",".join(node.name for node in client.get_primaries()) or "cluster"
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


#: Tries of a one-slot transaction whose slot moved (MOVED/ASK) before the map refreshed.
SLOT_TRIES = 3


class Store:
    """Users and sessions for one node: local cache first, hosted as the truth.

    + hosted: a client on the hosted tier's db 0 (the api workload)
    + local: this node's `LocalCache`
    + subscriber: a client on the hosted tier for pub/sub (the subscriber workload)
    + node: names this node in invalidations so it skips its own (default host:cache port)
    """

    def __init__(
        self,
        hosted: valkey.Valkey,
        local: LocalCache,
        subscriber: valkey.Valkey | None = None,
        node: str | None = None,
    ) -> None:
        self.hosted = hosted
        self.local = local
        self.subscriber = subscriber
        cache_port = local.users.client.connection_pool.connection_kwargs.get("port")
        self.node = node or f"{socket.gethostname()}:{cache_port}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = Seen()
        self.subscribed = threading.Event()

    # --- hosted access --------------------------------------------------------------

    def _hosted(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except (valkey.ConnectionError, valkey.TimeoutError) as exc:
            raise HostedUnavailable(
                f"hosted tier {_where(self.hosted)} unreachable, {what} not done: {exc}"
            ) from None

    @property
    def clustered(self) -> bool:
        """A cluster hosted tier: no MULTI across slots, so writes go one slot at a time."""
        return isinstance(self.hosted, valkey.ValkeyCluster)

    def _commit(
        self,
        what: str,
        build: Callable[[Any], None],
        watch: str | None = None,
        before: Callable[[Any], None] | None = None,
        slot_of: str | None = None,
    ) -> None:
        """One MULTI on hosted; `before` reads under WATCH when the write depends on it.

        On a cluster the MULTI runs on the node that owns `watch` (or `slot_of`): every
        key `build` writes must be in that key's slot.
        """

        def transaction(pipe: Any) -> None:
            if before is not None:
                before(pipe)
            pipe.multi()
            build(pipe)

        watched = [watch] if watch else []
        if not self.clustered:
            self._hosted(what, lambda: self.hosted.transaction(transaction, *watched))
            return
        self._hosted(what, lambda: self._on_slot(watch or slot_of or "", transaction, watched))

    def _on_slot(self, key: str, transaction: Callable[[Any], None], watched: list[str]) -> None:
        """`transaction` on the node that owns `key`'s slot, following a moved slot."""
        cluster: Any = self.hosted
        for attempt in range(SLOT_TRIES):
            node = cluster.get_valkey_connection(cluster.get_node_from_key(key))
            try:
                node.transaction(transaction, *watched)
                return
            except valkey.ResponseError as exc:
                moved = str(exc).startswith(("MOVED", "ASK"))
                if not moved or attempt == SLOT_TRIES - 1:
                    raise
                cluster.nodes_manager.initialize()

    def _message(self, **fields: Any) -> str:
        """An invalidation: this node's name (to skip its own) and an id (to apply a
        message heard from several cluster nodes once)."""
        return json.dumps({"node": self.node, "id": secrets.token_hex(8), **fields})

    # --- users ----------------------------------------------------------------------

    def get_user(self, key: str) -> Record | None:
        cached = self.local.users.get(key)
        if cached is not None:
            return cached
        token = self.local.users.take_lease(key)
        raw = self._hosted(f"reading {key}", lambda: self.hosted.get(key))
        if raw is None:
            return None
        record: Record = loads(raw)
        try:
            if not self.local.users.fill(key, record, token):
                log.debug("%s changed while it was read from hosted: served uncached", key)
        except CacheError as exc:  # written by another client, beyond what we cache
            log.warning("hosted %s served uncached: %s", key, exc)
        return record

    def find_user(self, email: str) -> str | None:
        """The user key of an email: local index, else hosted, then remembered locally."""
        local = self.local.index.lookup(email)
        if local is not None:
            return local
        raw = self._hosted(f"looking up {email!r}", lambda: self.hosted.get(email_key(email)))
        if raw is None:
            return None
        key = raw.decode() if isinstance(raw, bytes) else raw
        if self.clustered and not self._index_holds(normalise_email(email), key):
            return None
        self.local.index.link(email, key)
        return key

    def _index_holds(self, index: str, key: str) -> bool:
        """On a cluster, an index entry stands only while its record carries its email.

        Writes there go one slot at a time, so a crash can leave an entry whose record is
        gone or has moved to another email: that entry is ignored and cleaned (WATCHed:
        a save re-linking it meanwhile wins, see `_save_clustered`).
        """
        raw = self._hosted(f"reading {key}", lambda: self.hosted.get(key))
        if raw is not None and _stored_email(loads(raw).get("email")) == index:
            return True
        self._unlink_email(index, key, unless_record_holds=True)
        return False

    def _unlink_email(self, index: str, key: str, unless_record_holds: bool = False) -> None:
        """Delete the hosted index entry `index` if it still names `key` (one slot)."""
        ekey = f"{EMAIL_PREFIX}{index}"
        doomed = {"yes": False}

        def read(pipe: Any) -> None:
            doomed["yes"] = _text(pipe.get(ekey)) == key
            if doomed["yes"] and unless_record_holds:
                raw = self.hosted.get(key)  # another slot: the cluster client reads it
                doomed["yes"] = raw is None or _stored_email(loads(raw).get("email")) != index

        def write(pipe: Any) -> None:
            if doomed["yes"]:
                pipe.delete(ekey)

        self._commit(f"unlinking {ekey}", write, watch=ekey, before=read)

    def save_user(self, record: Mapping[str, Any], key: str | None = None) -> str:
        """Write a user to hosted (its `email`, if any, indexed), then here; others drop theirs.

        The key, the record (strict JSON) and the email are checked before the first write.
        """
        key = record_key(key, "usr", "user") if key else new_key("usr")
        payload = encode(record)
        email = record.get("email")
        new_email = normalise_email(email) if email is not None else None
        old: dict[str, Any] = {"email": None, "index": None}

        def read_old(pipe: Any) -> None:
            raw = pipe.get(key)
            old["email"] = loads(raw).get("email") if raw else None
            old["index"] = _stored_email(old["email"])

        def write(pipe: Any) -> None:
            stale = old["email"]
            if not self.clustered and old["index"] not in (None, new_email):
                pipe.delete(f"{EMAIL_PREFIX}{old['index']}")
            if not self.clustered and new_email is not None:
                pipe.set(email_key(new_email), key)
            pipe.set(key, payload)
            pipe.publish(USERS_CHANNEL, self._message(key=key, emails=[stale] if stale else []))

        if self.clustered:
            self._save_clustered(key, new_email, lambda: old["index"], write, read_old)
        else:
            self._commit(f"saving {key}", write, watch=key, before=read_old)
        if old["index"] not in (None, new_email):
            self.local.index.unlink(old["index"])
        if new_email is not None:
            self.local.index.link(new_email, key)
        self.local.users.put(key, record)
        return key

    def delete_user(self, key: str) -> None:
        record_key(key, "usr", "user")
        emails: list[str] = []

        def read_old(pipe: Any) -> None:
            raw = pipe.get(key)
            email = loads(raw).get("email") if raw else None
            emails.extend([email] if email else [])

        def write(pipe: Any) -> None:
            if not self.clustered:
                for email in emails:
                    if (index := _stored_email(email)) is not None:
                        pipe.delete(f"{EMAIL_PREFIX}{index}")
            pipe.delete(key)
            pipe.publish(USERS_CHANNEL, self._message(key=key, emails=emails))

        self._commit(f"deleting {key}", write, watch=key, before=read_old)
        if self.clustered:  # the record first: an entry left by a crash here is ignored
            for index in filter(None, map(_stored_email, emails)):
                self._unlink_email(index, key)
        self._drop_user(key, emails)

    def _save_clustered(
        self,
        key: str,
        new_email: str | None,
        old_index: Callable[[], str | None],
        write: Callable[[Any], None],
        read_old: Callable[[Any], None],
    ) -> None:
        """A user save on a cluster: index, record + invalidation, index again, old index.

        Each step is one slot. A crash after the first leaves an entry whose record does
        not carry its email yet (ignored, cleaned); after the second, the old email's
        entry (ignored, cleaned). The second link undoes a cleanup that raced the save.
        """
        link = (lambda: self.hosted.set(email_key(new_email), key)) if new_email else None
        if link:
            self._hosted(f"linking {new_email!r}", link)
        self._commit(f"saving {key}", write, watch=key, before=read_old)
        if link:
            self._hosted(f"linking {new_email!r}", link)
        if (index := old_index()) not in (None, new_email):
            self._unlink_email(index, key)

    def _drop_user(self, key: str, emails: list[str]) -> None:
        self.local.users.delete(key)
        for email in emails:
            if (index := _stored_email(email)) is not None:
                self.local.index.unlink(index)

    # --- sessions -------------------------------------------------------------------

    def create_session(
        self, owner: str, data: Mapping[str, Any], ttl: float | None = None
    ) -> Session:
        """A session on hosted (with its TTL) and here; owner, data and ttl are checked
        (the local call is built) before the first write, so hosted never holds one alone."""
        key = new_key("ses")
        calls = self.local.sessions.calls
        ttl_ms = calls.expiry_ms(ttl)
        local_create = calls.create(owner, data, key, ttl_ms / 1000)
        payload = f'{{"owner":{json.dumps(owner)},"data":{encode(data, "session.data")}}}'
        index = sessions_of(owner)

        def link(pipe: Any) -> None:
            pipe.sadd(index, key)
            pipe.pexpire(index, ttl_ms, gt=True)
            pipe.pexpire(index, ttl_ms, nx=True)

        def write(pipe: Any) -> None:
            pipe.set(key, payload, px=ttl_ms)
            if not self.clustered:
                link(pipe)

        if self.clustered:  # the owner's index first: a member without its session is inert
            self._commit(f"indexing a session of {owner}", link, slot_of=index)
        self._commit(f"creating a session of {owner}", write, slot_of=key)
        return self.local.sessions.run(local_create)

    def get_session(self, key: str) -> Session | None:
        """The local copy, else hosted's, cached under a lease so a revocation applied
        while it was read (here or by invalidation) keeps it out of the cache."""
        cached = self.local.sessions.get(key)
        if cached is not None:
            return cached
        token = self.local.sessions.take_lease(key)

        def read() -> list[Any]:
            pipe = self.hosted.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            return pipe.execute()

        raw, pttl = self._hosted(f"reading {key}", read)
        if raw is None or pttl <= 0:
            return None
        stored = loads(raw)
        ttl = min(pttl, MAX_MS) / 1000  # longer than the client allows: refreshed sooner
        self.local.sessions.fill(stored["owner"], stored["data"], key, ttl, token)
        return Session(key=key, owner=stored["owner"], data=stored["data"])

    def revoke_session(self, key: str) -> None:
        record_key(key, "ses", "session")

        def write(pipe: Any) -> None:
            pipe.delete(key)
            pipe.publish(SESSIONS_CHANNEL, self._message(key=key))

        self._commit(f"revoking {key}", write, slot_of=key)
        self.local.sessions.revoke(key)

    def revoke_sessions(self, owner: str) -> None:
        """Revoke every session of `owner` on hosted and, through invalidation, on all nodes."""
        index = sessions_of(owner_key(owner))
        members: list[bytes] = []

        def read_members(pipe: Any) -> None:
            members[:] = pipe.smembers(index)
            if self.clustered and members:  # other slots: deleted before the index goes
                self.hosted.delete(*members)

        def write(pipe: Any) -> None:
            if members and not self.clustered:
                pipe.delete(*members)
            pipe.delete(index)
            pipe.publish(SESSIONS_CHANNEL, self._message(owner=owner))

        self._commit(f"revoking the sessions of {owner}", write, watch=index, before=read_members)
        self.local.sessions.revoke_all(owner)

    # --- invalidation ---------------------------------------------------------------

    def apply(self, channel: str, raw: bytes | str) -> None:
        """Drop the local copies an invalidation names (unless this node sent it)."""
        message = loads(raw)
        if message.get("node") == self.node or not self._seen.first(message.get("id")):
            return
        if channel == USERS_CHANNEL:
            self._drop_user(message["key"], message.get("emails", []))
        elif channel == SESSIONS_CHANNEL and "owner" in message:
            self.local.sessions.revoke_all(message["owner"])
        elif channel == SESSIONS_CHANNEL:
            self.local.sessions.revoke(message["key"])

    def drop_all(self) -> None:
        """Forget every local user and session: after missed invalidations, refill from hosted.

        The email index stays: an email's user key only changes through this store.
        SCAN + UNLINK rather than FLUSHDB, which the workload ACL users may not run.
        """
        for client in (self.local.users.client, self.local.sessions.client):
            batch: list[bytes] = []
            for key in client.scan_iter(count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)

    def start(self) -> Store:
        """Run the invalidation subscriber in a daemon thread (needs `subscriber`)."""
        if self.subscriber is None:
            raise ValueError("Store.start needs a subscriber client on the hosted tier")
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, name="vp-invalidation", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _listen(self) -> None:
        assert self.subscriber is not None
        subscriptions = Subscriptions(self.subscriber, (USERS_CHANNEL, SESSIONS_CHANNEL))
        while not self._stop.is_set():
            try:
                subscriptions.open(self._stop)
                # subscribed: from here no invalidation is missed, so forget what may be stale
                self.drop_all()
                self.subscribed.set()
                while not self._stop.is_set() and not subscriptions.moved():
                    for channel, data in subscriptions.poll():
                        self.apply(channel, data)
                    if subscriptions.reconnected():
                        self.drop_all()  # valkey-py reconnected and resubscribed: same gap
                subscriptions.close()
            except (ValkeyError, ValkeyClusterException) as exc:
                # Any error of the client (a lost connection, a cluster in change): a
                # subscriber thread that died would leave this node serving stale copies.
                self.subscribed.clear()
                subscriptions.close()
                log.warning(
                    "invalidation subscriber lost hosted %s: %s; retrying",
                    _where(self.subscriber),
                    exc,
                )
                self._stop.wait(RESUBSCRIBE_PAUSE)

    @contextmanager
    def running(self) -> Iterator[Store]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
