"""Read-through to the hosted tier, with the local cache in front and invalidation behind.

The hosted tier (a `primary`, db 0 only) is the source of truth. Reads try the local
cache, then hosted, then fill the cache. Writes go to hosted first, in one MULTI
with the PUBLISH of their invalidation (so no committed write can lose its
invalidation), then update the local copy. Every node runs a subscriber that drops
its local copies when another node writes; after any (re)subscription it drops the
whole user and session dbs, because invalidations published while it was away are
gone.

A user fill never outlives a newer write: before it reads hosted, the reader takes a
lease on the key in the local cache (a random token in the LRU's lease hash); every local put
(this node's own writes) and every invalidation drops the lease, and the library
stores the fill only while the lease still holds the reader's token, atomically with
the check. So a value read before a write that this node has already applied (its own,
or another node's invalidation) is served once and not cached; one applied later
deletes the fill. (Sessions are still filled without a lease: a revocation racing a
session fill can leave the old session cached until its TTL.)

Hosted unreachable: whatever the local cache holds keeps being served; a miss or a
write raises `HostedUnavailable`, so nothing is silently dropped.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import valkey

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


def _where(client: valkey.Valkey) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


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
        self._pubsub: Any = None
        self.subscribed = threading.Event()

    # --- hosted access --------------------------------------------------------------

    def _hosted(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except (valkey.ConnectionError, valkey.TimeoutError) as exc:
            raise HostedUnavailable(
                f"hosted tier {_where(self.hosted)} unreachable, {what} not done: {exc}"
            ) from None

    def _commit(
        self,
        what: str,
        build: Callable[[Any], None],
        watch: str | None = None,
        before: Callable[[Any], None] | None = None,
    ) -> None:
        """One MULTI on hosted; `before` reads under WATCH when the write depends on it."""

        def transaction(pipe: Any) -> None:
            if before is not None:
                before(pipe)
            pipe.multi()
            build(pipe)

        self._hosted(
            what, lambda: self.hosted.transaction(transaction, *([watch] if watch else []))
        )

    def _message(self, **fields: Any) -> str:
        return json.dumps({"node": self.node, **fields})

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
        self.local.index.link(email, key)
        return key

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
            if old["index"] not in (None, new_email):
                pipe.delete(f"{EMAIL_PREFIX}{old['index']}")
            if new_email is not None:
                pipe.set(email_key(new_email), key)
            pipe.set(key, payload)
            pipe.publish(USERS_CHANNEL, self._message(key=key, emails=[stale] if stale else []))

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
            for email in emails:
                if (index := _stored_email(email)) is not None:
                    pipe.delete(f"{EMAIL_PREFIX}{index}")
            pipe.delete(key)
            pipe.publish(USERS_CHANNEL, self._message(key=key, emails=emails))

        self._commit(f"deleting {key}", write, watch=key, before=read_old)
        self._drop_user(key, emails)

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

        def write(pipe: Any) -> None:
            pipe.set(key, payload, px=ttl_ms)
            pipe.sadd(index, key)
            pipe.pexpire(index, ttl_ms, gt=True)
            pipe.pexpire(index, ttl_ms, nx=True)

        self._commit(f"creating a session of {owner}", write)
        return self.local.sessions.run(local_create)

    def get_session(self, key: str) -> Session | None:
        cached = self.local.sessions.get(key)
        if cached is not None:
            return cached

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
        return self.local.sessions.create(stored["owner"], stored["data"], ttl=ttl, key=key)

    def revoke_session(self, key: str) -> None:
        record_key(key, "ses", "session")

        def write(pipe: Any) -> None:
            pipe.delete(key)
            pipe.publish(SESSIONS_CHANNEL, self._message(key=key))

        self._commit(f"revoking {key}", write)
        self.local.sessions.revoke(key)

    def revoke_sessions(self, owner: str) -> None:
        """Revoke every session of `owner` on hosted and, through invalidation, on all nodes."""
        index = sessions_of(owner_key(owner))
        members: list[bytes] = []

        def read_members(pipe: Any) -> None:
            members.extend(pipe.smembers(index))

        def write(pipe: Any) -> None:
            if members:
                pipe.delete(*members)
            pipe.delete(index)
            pipe.publish(SESSIONS_CHANNEL, self._message(owner=owner))

        self._commit(f"revoking the sessions of {owner}", write, watch=index, before=read_members)
        self.local.sessions.revoke_all(owner)

    # --- invalidation ---------------------------------------------------------------

    def apply(self, channel: str, raw: bytes | str) -> None:
        """Drop the local copies an invalidation names (unless this node sent it)."""
        message = loads(raw)
        if message.get("node") == self.node:
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
        while not self._stop.is_set():
            try:
                pubsub = self.subscriber.pubsub()
                pubsub.subscribe(USERS_CHANNEL, SESSIONS_CHANNEL)
                confirmed = 0
                while confirmed < 2 and not self._stop.is_set():
                    reply = pubsub.get_message(timeout=1.0)
                    confirmed += bool(reply and reply["type"] == "subscribe")
                # subscribed: from here no invalidation is missed, so forget what may be stale
                self.drop_all()
                self.subscribed.set()
                socket_in_use = pubsub.connection._sock
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if pubsub.connection is not None and pubsub.connection._sock is not (
                        socket_in_use
                    ):
                        # valkey-py reconnected and resubscribed on its own: same gap
                        self.drop_all()
                        socket_in_use = pubsub.connection._sock
                    if message and message["type"] == "message":
                        channel = message["channel"]
                        self.apply(
                            channel.decode() if isinstance(channel, bytes) else channel,
                            message["data"],
                        )
                pubsub.close()
            except (valkey.ConnectionError, valkey.TimeoutError) as exc:
                self.subscribed.clear()
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
