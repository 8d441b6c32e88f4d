"""The local cache: user index, exact-LRU user cache, sessions and messages in transit.

Every bounded operation is one FCALL into the `valkey_plans` Functions library
(`lua/cache.lua`), so the cap holds atomically however many processes share the
instance. This module is also the one key/encoding layer: each operation is built
once, without I/O, as a `Call` (the command to send and how to read its reply), and
one set of classes sends them through the runner of their client's flavour
(`valkey_plans.client.commands`): on a sync client a method returns the result, on a
valkey.asyncio client an awaitable of it, as valkey-py's own commands do.

Each class takes the plain valkey-py client of its own db (dependency injection);
`LocalCache.from_settings` (sync) and `AsyncLocalCache.from_settings` (asyncio) build
them from the cache tier's settings.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self, TypeVar

import orjson

from valkey_plans.client.clients import AsyncClients, Clients, WorkloadClients
from valkey_plans.client.commands import (
    SKIP_REPLY,
    Call,
    Client,
    Reply,
    bulk,
    fcall,
    runner,
)
from valkey_plans.client.commands import run as run  # re-exported: canary, tests, store
from valkey_plans.client.commands import run_many as run_many  # re-exported: bench
from valkey_plans.client.functions import version_check
from valkey_plans.client.schema import (
    LEASES_SUFFIX,
    MESSAGE_CLOCK,
    MESSAGE_LRU,
    QUEUE_PENDING,
    QUEUE_PROCESSING,
    QUEUE_TAKEN,
    SESSION_LEASES,
    SESSIONS_OF_PREFIX,
    TOUCHES_SUFFIX,
    USER_CLOCK,
    USER_LRU,
)
from valkey_plans.client.settings import CacheDbs, CacheTierSettings
from valkey_plans.keys import KeyFormatError, new_key, parse

T = TypeVar("T")
Record = dict[str, Any]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
MAX_EMAIL_LENGTH = 254

#: The longest TTL, timeout or idle time the client sends: 10 years of 365 days, in
#: seconds. Valkey's own limit is that now_ms + ttl fits a signed 64-bit integer, and
#: it finds out inside PEXPIRE, after a function's earlier writes (1e16 s used to leave
#: a session without TTL). 10 years stays far inside that and inside 2**53 ms, so the
#: Lua library reads every value as an exact integer; it refuses the same range (MAX_MS).
MAX_SECONDS = 10 * 365 * 24 * 3600
MAX_MS = MAX_SECONDS * 1000
#: A sorted set holds at most 2**32 - 1 members: a larger LRU cap could never bind.
MAX_CAP = 2**32 - 1
#: JavaScript's Number.MAX_SAFE_INTEGER: Node.js reads a larger integer as another number.
MAX_SAFE_INTEGER = 2**53 - 1
#: Deepest nesting of a record (Node.js and most readers have a stack limit; a cycle hits it).
MAX_DEPTH = 100

TTL_ALLOWED = f"a finite number of seconds from 0.001 to {MAX_SECONDS} (10 years)"
WAIT_ALLOWED = f"a finite number of seconds from 0 to {MAX_SECONDS} (10 years)"
CAP_ALLOWED = f"an integer from 1 to {MAX_CAP}"
EMAIL_ALLOWED = (
    f"local@domain.tld, at most {MAX_EMAIL_LENGTH} characters, without whitespace, "
    "control or format characters (NUL, zero-width, BOM, bidi marks) inside"
)


class CacheError(ValueError):
    """Bad input to the cache: the message names the value's role and what is allowed."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _refused(role: str, value: Any, allowed: str) -> CacheError:
    return CacheError(f"{role} = {_shown(value)}: allowed: {allowed}")


# --- the encoding layer: strict JSON, once --------------------------------------------
# Strict because Node.js (JSON.parse) shares these records: it rejects NaN and
# Infinity, reads integers beyond 2**53 as other numbers, and cannot tell {1: "a"}
# (stored as {"1": "a"}) from {"1": "a"}, so a record that could be read differently
# is refused, with the path of the offending field, before anything is sent.

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
VALUES_ALLOWED = "JSON values: str, bool, None, finite float, int, list, dict with str keys"


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _check_text(text: str, path: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise _refused(path, text, "text that encodes as UTF-8 (no lone surrogates)")


def _check_key(key: Any, mapping: Mapping[Any, Any], path: str) -> str:
    if isinstance(key, str):
        _check_text(key, f"{path} key")
        return key
    coerced = json.dumps(key) if key is None or isinstance(key, int | float) else None
    clash = (
        f"; JSON would store it as {json.dumps(coerced)}, the same as the key {coerced!r}"
        if coerced in mapping
        else (f"; JSON would store it as the string {json.dumps(coerced)}" if coerced else "")
    )
    raise CacheError(
        f"{path} key {_shown(key)} ({type(key).__name__}): allowed: str keys only{clash}"
    )


def _check_scalar(value: Any, path: str) -> bool:
    """True when `value` is a JSON scalar that reads back unchanged; raises when it is a
    number or text that would not; False when it is no scalar at all."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            allowed = f"integers within +-{MAX_SAFE_INTEGER} (2**53 - 1; use a str for more)"
            raise _refused(path, value, allowed)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _refused(path, value, "finite numbers")
    else:
        return False
    return True


def _check_json(value: Any, path: str, depth: int = 1) -> None:
    """Refuse what strict JSON cannot carry unchanged, naming the first bad field."""
    if _check_scalar(value, path):
        return
    if depth > MAX_DEPTH and isinstance(value, dict | list):
        where = path if len(path) <= 80 else f"{path[:77]}..."
        raise _refused(where, "...", f"at most {MAX_DEPTH} levels of nesting (no cycles)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, _field(path, _check_key(key, value, path)), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
    else:
        kind = type(value).__name__
        raise CacheError(f"{path} = {_shown(value)} ({kind}): allowed: {VALUES_ALLOWED}")


def encode(record: Mapping[str, Any], role: str = "record") -> str:
    """Records are strict JSON objects; compact separators keep cached values small."""
    if not isinstance(record, Mapping):
        raise CacheError(f"{role} must be a mapping (JSON object), got {type(record).__name__}")
    record = record if isinstance(record, dict) else dict(record)
    _check_json(record, role)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _constant(name: str) -> float:
    raise CacheError(f"stored JSON holds {name}: allowed: finite numbers (strict JSON)")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise CacheError(f"stored JSON holds {text}, beyond a double: allowed: finite numbers")
    return number


#: Built once: json.loads with any option builds a new decoder per call (the hot path).
_STRICT = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def loads(raw: bytes | str) -> Any:
    """Strict JSON in: NaN, Infinity and numbers beyond a double are refused, as in Node.js.

    orjson reads what a hit returns (it refuses NaN, Infinity and overflowing numbers
    itself); whatever it refuses is read again by the standard decoder, so a value it
    cannot take (a lone surrogate escape) reads as before and errors keep their words.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return _STRICT.decode(raw.decode() if isinstance(raw, bytes) else raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheError(f"stored value is not JSON ({exc}): allowed: strict JSON") from None


def decode(raw: bytes | str | None) -> Record | None:
    """The inverse of `encode`; None (a miss) stays None."""
    return None if raw is None else loads(raw)


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


# --- emails -----------------------------------------------------------------------------

#: Unicode categories refused in an address: control, format (zero-width, BOM, bidi
#: marks), surrogates, and the space separators.
_REFUSED_CATEGORIES = {
    "Cc": "control",
    "Cf": "format",
    "Cs": "surrogate",
    "Zs": "space",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}
_ASCII_REFUSED = re.compile(r"[\x00-\x20\x7f]")


def _refused_char(text: str) -> str | None:
    """The first character an address may not hold, described, or None."""
    for char in text:
        kind = _REFUSED_CATEGORIES.get(unicodedata.category(char))
        if kind is None and char.isspace():
            kind = "whitespace"
        if kind is not None:
            name = unicodedata.name(char, "")
            return f"U+{ord(char):04X} ({f'{name}, ' if name else ''}a {kind} character)"
    return None


def _fold(text: str) -> str:
    """NFKC, casefold, NFKC again: casefold can leave decomposed text (j + caron), which
    the second NFKC composes, so the key is NFKC text and the fold is idempotent."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def normalise_email(email: str) -> str:
    """The user index's key: one key per address however it is typed.

    Trimmed, then NFKC-normalised and casefolded (fullwidth 'ａ' is 'a', 'ß' is 'ss',
    'ADA' is 'ada'); characters that do not show (NUL, zero-width space, BOM, bidi
    marks) or whitespace inside are refused, so two keys never look alike. ASCII, the
    common case, takes a shortcut with the same result (NFKC is a no-op on it, casefold
    is lower).
    """
    if not isinstance(email, str):
        raise CacheError(
            f"email must be a str, got {type(email).__name__}: allowed: {EMAIL_ALLOWED}"
        )
    text = email.strip()
    if text.isascii():
        bad = _ASCII_REFUSED.search(text)
        refused = _refused_char(bad.group()) if bad else None
        normal = text.lower()
    else:
        normal = _fold(text)
        refused = _refused_char(text) or _refused_char(normal)
    if refused is not None:
        raise CacheError(f"email {email!r} contains {refused}: allowed: {EMAIL_ALLOWED}")
    if len(normal) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(normal):
        raise CacheError(f"email {email!r} is not an address: allowed: {EMAIL_ALLOWED}")
    return normal


_RECORD_KEY = re.compile(r"[a-z]{3}:[0-9A-Za-z]{12}")


def record_key(key: str, domain: str, role: str) -> str:
    """Check that `key` is a `<domain>:<txkey>` record key before it reaches the server.

    The regex is the hot path (every cache call); `keys.parse` explains a failure.
    """
    if isinstance(key, str) and key[:3] == domain and _RECORD_KEY.fullmatch(key):
        return key
    try:
        parsed = parse(key)
    except KeyFormatError as exc:
        raise CacheError(f"{role} {exc}") from None
    if parsed.domain != domain:
        raise CacheError(f"{role} key {key!r} is in domain {parsed.domain!r}; allowed: {domain!r}")
    return key


def owner_key(owner: str) -> str:
    """A session's owner is a record key of any known domain (usually `usr:`)."""
    try:
        parse(owner)
    except KeyFormatError as exc:
        raise CacheError(f"session owner {exc}") from None
    return owner


def sessions_of(owner: str) -> str:
    """The structural set listing one owner's session keys."""
    return f"{SESSIONS_OF_PREFIX}{owner}"


def _seconds(value: float, role: str, allowed: str) -> float:
    """A real number of seconds, as a float: not a bool or str, not NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CacheError(f"{role} = {_shown(value)} ({type(value).__name__}): allowed: {allowed}")
    try:
        seconds = float(value)
    except OverflowError:
        raise _refused(role, value, allowed) from None
    if not math.isfinite(seconds):
        raise _refused(role, value, allowed)
    return seconds


def _ms(seconds: float, role: str) -> int:
    """A TTL in whole ms for PX/PEXPIRE: 1 ms to MAX_MS (rounded, so 0.29 s is 290 ms)."""
    ms = round(_seconds(seconds, role, TTL_ALLOWED) * 1000)
    if not 1 <= ms <= MAX_MS:
        raise _refused(role, seconds, TTL_ALLOWED)
    return ms


def _wait(seconds: float, role: str) -> float:
    """A timeout or idle time in seconds: 0 to MAX_SECONDS."""
    wait = _seconds(seconds, role, WAIT_ALLOWED)
    if not 0 <= wait <= MAX_SECONDS:
        raise _refused(role, seconds, WAIT_ALLOWED)
    return wait


def _cap(cap: int, role: str) -> int:
    """An exact LRU bound: an integer (not a bool, not 100.0) from 1 to MAX_CAP."""
    if isinstance(cap, bool) or not isinstance(cap, numbers.Integral):
        raise CacheError(f"{role} = {_shown(cap)} ({type(cap).__name__}): allowed: {CAP_ALLOWED}")
    if not 1 <= cap <= MAX_CAP:
        raise _refused(role, cap, CAP_ALLOWED)
    return int(cap)


def _flag(value: bool, role: str) -> bool:
    if not isinstance(value, bool):
        raise CacheError(
            f"{role} = {_shown(value)} ({type(value).__name__}): allowed: True or False"
        )
    return value


# --- calls: the command and how to read its reply (see `commands`) ------------------


def _int(reply: Any) -> int:
    return int(reply)


def _bool(reply: Any) -> bool:
    return bool(int(reply))


def _ok(reply: Any) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: its key, the record key of its owner, and its data."""

    key: str
    owner: str
    data: Record


@dataclass(frozen=True, slots=True)
class QueueItem:
    """A message a worker took: `envelope` is the exact queue entry, needed to ack it;
    `retry` counts how often recovery put this message back (0 on its first delivery)."""

    key: str
    body: Record
    envelope: str
    retry: int = 0


def _envelope(key: str, body_json: str) -> str:
    return f'{{"key":{json.dumps(key)},"body":{body_json}}}'


def _queue_item(raw: bytes | str | None) -> QueueItem | None:
    if raw is None:
        return None
    envelope = raw.decode() if isinstance(raw, bytes) else raw
    parsed = loads(envelope)
    retry = parsed.get("retry", 0)
    return QueueItem(key=parsed["key"], body=parsed["body"], envelope=envelope, retry=retry)


class UserIndexCalls:
    """db user_index: normalised email -> `usr:` key, plain strings without TTL.

    No TTL is the point: under `volatile-lru` memory pressure can never evict them.
    """

    @staticmethod
    def lookup(email: str) -> Call[str | None]:
        key = normalise_email(email)
        return Call(("GET", key), _text, wire=b"*2\r\n$3\r\nGET\r\n%b" % bulk(key))

    @staticmethod
    def link(email: str, user_key: str) -> Call[None]:
        return Call(("SET", normalise_email(email), record_key(user_key, "usr", "user")), _ok)

    @staticmethod
    def unlink(email: str) -> Call[bool]:
        return Call(("DEL", normalise_email(email)), _bool)


#: Every this many reads, a client's read also applies the touch log (vp_lru_drain),
#: so the log stays short however rarely anyone writes.
DRAIN_EVERY = 256


def _found(keys: Sequence[str]) -> Callable[[list[Any]], dict[str, Record]]:
    def found(replies: list[Any]) -> dict[str, Record]:
        return {k: decode(v) for k, v in zip(keys, replies, strict=True) if v is not None}

    return found


class LruCalls:
    """An exact LRU of JSON records in one db, bounded at `cap`, each with a TTL.

    Reads are native: RPUSH of the keys onto the touch log, then GET (MGET), in one
    round trip; the library applies the log, in the server's order, before any put or
    trim (and every DRAIN_EVERY reads of this client), so eviction follows the exact
    order in which the server ran the reads and writes of all clients.
    """

    def __init__(self, domain: str, lru: str, clock: str, cap: int, ttl: float) -> None:
        self.domain = domain
        self.lru = lru
        self.clock = clock
        self.touches = f"{lru}{TOUCHES_SUFFIX}"
        self.leases = f"{lru}{LEASES_SUFFIX}"
        # a hit's wire: CLIENT REPLY SKIP, RPUSH <touches> <key>, GET <key>, with the
        # constant parts packed once
        self._touch_head = SKIP_REPLY + b"*3\r\n$5\r\nRPUSH\r\n" + bulk(self.touches)
        self.cap = _cap(cap, f"{domain} cache cap")
        self.ttl_ms = _ms(ttl, f"{domain} cache ttl")
        self._reads = 0

    @classmethod
    def users(cls, cap: int, ttl: float) -> LruCalls:
        """The user_cache db's LRU of `usr:` records."""
        return cls("usr", USER_LRU, USER_CLOCK, cap, ttl)

    def key(self, key: str) -> str:
        return record_key(key, self.domain, self.domain)

    def _touch(self, keys: Sequence[str]) -> tuple[tuple[str | int, ...], ...]:
        """The commands sent ahead of a read: its touch, and now and then a drain."""
        self._reads += 1
        touch = ("RPUSH", self.touches, *keys)
        if self._reads % DRAIN_EVERY:
            return (touch,)
        return (self.drain().command, touch)

    def get(self, key: str) -> Call[Record | None]:
        key = self.key(key)
        before = self._touch((key,))
        wire = b""
        if len(before) == 1:  # the common case: packed here, without a loop
            arg = bulk(key)
            wire = b"%b%b*2\r\n$3\r\nGET\r\n%b" % (self._touch_head, arg, arg)
        return Call(("GET", key), decode, before=before, wire=wire)

    def get_many(self, keys: Sequence[str]) -> Call[dict[str, Record]]:
        checked = [self.key(k) for k in keys]
        if not checked:
            return Call(("PING",), lambda _: {})
        return Call(("MGET", *checked), _found(checked), before=self._touch(checked))

    def drain(self) -> Call[int]:
        """Apply the touch log now; replies the number of records in the LRU set."""
        return fcall("vp_lru_drain", (self.lru, self.clock), (), _int)

    def put(self, key: str, record: Mapping[str, Any]) -> Call[None]:
        keys = (self.lru, self.clock, self.key(key))
        return fcall("vp_lru_put", keys, (encode(record), self.ttl_ms, self.cap), _ok)

    def take_lease(self, key: str) -> Call[str]:
        """Before reading the source of a fill: a fresh token under the key's lease."""
        token = secrets.token_hex(8)
        return Call(("HSET", self.leases, self.key(key), token), lambda _: token)

    def fill(self, key: str, record: Mapping[str, Any], token: str) -> Call[bool]:
        """Store a value read from the source only if no put or del of the key came
        after `take_lease` (the library checks the lease and stores atomically)."""
        keys = (self.lru, self.clock, self.key(key))
        args = (encode(record), self.ttl_ms, self.cap, token)
        return fcall("vp_lru_fill", keys, args, _bool)

    def delete(self, key: str) -> Call[bool]:
        return fcall("vp_lru_del", (self.lru, self.key(key)), (), _bool)


#: The fields of a session hash the library writes (all three: it made the hash).
_SESSION_FIELDS = ("owner", "data", "index")


class SessionCalls:
    """db session_cache: `ses:` hashes whose TTL is the session's expiry."""

    def __init__(self, ttl: float, sliding: bool = False) -> None:
        self.ttl_ms = _ms(ttl, "session ttl")
        self.sliding = _flag(sliding, "session sliding")
        # a sliding get's wire, PEXPIRE <key> <ttl> XX + HMGET <key> <fields>, packed once
        self._slide_tail = bulk(str(self.ttl_ms)) + bulk("XX")
        self._fields = b"".join(bulk(field) for field in _SESSION_FIELDS)

    def expiry_ms(self, ttl: float | None) -> int:
        """A session's TTL in ms: `ttl` seconds if given (checked), else the configured one."""
        return self.ttl_ms if ttl is None else _ms(ttl, "session ttl")

    def create(
        self, owner: str, data: Mapping[str, Any], key: str, ttl: float | None = None
    ) -> Call[Session]:
        ttl_ms = self.expiry_ms(ttl)
        record_key(key, "ses", "session")
        owner_key(owner)
        payload = encode(data, "session.data")
        session = Session(key=key, owner=owner, data=dict(data))
        keys = (key, sessions_of(owner))
        return fcall("vp_session_create", keys, (owner, payload, ttl_ms), lambda _: session)

    def _read(self, key: str, slide: bool | None, parse: Callable[[Any], T]) -> Call[T]:
        """HMGET of the session's fields, after a PEXPIRE ... XX that slides its expiry
        (only a key that has one) when configured, unless `slide` says otherwise: one
        round trip of native commands. The hash existing is the whole check: the owner
        sets are never evicted, so revoke_all deletes every live session."""
        slides = self.sliding if slide is None else _flag(slide, "session get slide")
        key = record_key(key, "ses", "session")
        command = ("HMGET", key, *_SESSION_FIELDS)
        if not slides:
            return Call(command, parse)
        arg = bulk(key)
        wire = b"%b*4\r\n$7\r\nPEXPIRE\r\n%b%b*5\r\n$5\r\nHMGET\r\n%b%b" % (
            SKIP_REPLY,
            arg,
            self._slide_tail,
            arg,
            self._fields,
        )
        before = (("PEXPIRE", key, self.ttl_ms, "XX"),)
        return Call(command, parse, before=before, wire=wire)

    def get(self, key: str, slide: bool | None = None) -> Call[Session | None]:
        def session(reply: list[Any]) -> Session | None:
            owner, data, index = reply
            if owner is None or data is None or index is None:
                return None  # no session (or a hash this library did not make)
            return Session(key=key, owner=_text(owner) or "", data=loads(data))

        return self._read(key, slide, session)

    def touch(self, key: str) -> Call[bool]:
        """Whether the session is alive, sliding as `get`."""
        return self._read(key, None, lambda reply: None not in reply)

    def take_lease(self, key: str) -> Call[str]:
        """Before reading hosted for a fill: a fresh token under the session's lease."""
        token = secrets.token_hex(8)
        keys = (SESSION_LEASES, record_key(key, "ses", "session"))
        return fcall("vp_session_lease", keys, (token,), lambda _: token)

    def fill(
        self, owner: str, data: Mapping[str, Any], key: str, ttl: float, token: str
    ) -> Call[bool]:
        """Cache a session read from hosted only if no revocation of it (or of all
        sessions, here) came after `take_lease`; the library checks and stores atomically."""
        ttl_ms = self.expiry_ms(ttl)
        record_key(key, "ses", "session")
        payload = encode(data, "session.data")
        keys = (key, sessions_of(owner_key(owner)), SESSION_LEASES)
        return fcall("vp_session_fill", keys, (owner, payload, ttl_ms, token), _bool)

    def revoke(self, key: str) -> Call[bool]:
        keys = (record_key(key, "ses", "session"), SESSION_LEASES)
        return fcall("vp_session_revoke", keys, (), _bool)

    def revoke_all(self, owner: str) -> Call[int]:
        keys = (sessions_of(owner_key(owner)), SESSION_LEASES)
        return fcall("vp_session_revoke_all", keys, (), _int)


class QueueCalls:
    """db message_queue: the `msg:` LRU plus the reliable pending/processing lists."""

    def __init__(self, cap: int, ttl: float) -> None:
        self.lru = LruCalls("msg", MESSAGE_LRU, MESSAGE_CLOCK, cap, ttl)

    def enqueue(self, key: str, body: Mapping[str, Any]) -> Call[str]:
        keys = (self.lru.lru, self.lru.clock, self.lru.key(key), QUEUE_PENDING)
        payload = encode(body, "message.body")
        args = (_envelope(key, payload), payload, self.lru.ttl_ms, self.lru.cap)
        return fcall("vp_queue_enqueue", keys, args, lambda _: key)

    @staticmethod
    def take(timeout: float) -> Call[QueueItem | None]:
        """BLMOVE with `timeout` seconds (0 waits forever)."""
        wait = _wait(timeout, "take timeout")
        command = ("BLMOVE", QUEUE_PENDING, QUEUE_PROCESSING, "RIGHT", "LEFT", wait)
        return Call(command, _queue_item)

    def ack(self, item: QueueItem) -> Call[bool]:
        keys = (QUEUE_PROCESSING, QUEUE_TAKEN, self.lru.lru, self.lru.key(item.key))
        return fcall("vp_queue_ack", keys, (item.envelope,), _bool)

    @staticmethod
    def recover(min_idle: float) -> Call[int]:
        idle_ms = round(_wait(min_idle, "recover min_idle") * 1000)
        keys = (QUEUE_PROCESSING, QUEUE_TAKEN, QUEUE_PENDING)
        return fcall("vp_queue_recover", keys, (idle_ms,), _int)

    @staticmethod
    def pending() -> Call[int]:
        return Call(("LLEN", QUEUE_PENDING), _int)

    @staticmethod
    def processing() -> Call[int]:
        return Call(("LLEN", QUEUE_PROCESSING), _int)


# --- bounds and wiring, shared by both flavours ---------------------------------------

_DEFAULT_TIER = CacheTierSettings()


@dataclass(frozen=True)
class Bounds:
    """The caps and TTLs (seconds) of the cache dbs, named as in `CacheTierSettings`;
    the defaults are its defaults, which are the plan's."""

    user_cap: int = _DEFAULT_TIER.user_cap
    user_ttl: float = _DEFAULT_TIER.user_ttl
    session_ttl: float = _DEFAULT_TIER.session_ttl
    session_sliding: bool = _DEFAULT_TIER.session_sliding
    message_cap: int = _DEFAULT_TIER.message_cap
    message_ttl: float = _DEFAULT_TIER.message_ttl

    def __post_init__(self) -> None:
        """Bad bounds fail where they are made, naming the field, not at the first call."""
        for name in ("user_cap", "message_cap"):
            _cap(getattr(self, name), f"bounds.{name}")
        for name in ("user_ttl", "session_ttl", "message_ttl"):
            _ms(getattr(self, name), f"bounds.{name}")
        _flag(self.session_sliding, "bounds.session_sliding")

    @classmethod
    def from_settings(cls, settings: CacheTierSettings) -> Bounds:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


DEFAULT_BOUNDS = Bounds()

C = TypeVar("C")


def db_clients(clients: WorkloadClients[C], dbs: CacheDbs) -> dict[str, C]:
    """The `from_clients` arguments of either flavour: each cache db's api client, and
    the message_queue db's blocking client for `take`."""
    return {
        "index": clients.for_db(dbs.user_index).api,
        "users": clients.for_db(dbs.user_cache).api,
        "sessions": clients.for_db(dbs.session_cache).api,
        "messages": clients.for_db(dbs.message_queue).api,
        "blocking": clients.for_db(dbs.message_queue).blocking,
    }


# --- the cache: one set of classes for sync and asyncio clients -----------------------


class OnClient:
    """One db's client, sync or asyncio, and the runner of its flavour (see `commands`).

    Every method of the classes below builds its `Call`, which checks the input (so a
    refusal is raised by the call itself, before any await and before anything is sent),
    and returns `self.run(call)`: the result on a sync client, an awaitable of it on an
    asyncio one.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.runner = runner(client)
        self.run = self.runner.run


class UserIndex(OnClient):
    """Email -> user key on the user_index db; entries never expire."""

    def lookup(self, email: str) -> Reply[str | None]:
        return self.run(UserIndexCalls.lookup(email))

    def link(self, email: str, user_key: str) -> Reply[None]:
        return self.run(UserIndexCalls.link(email, user_key))

    def unlink(self, email: str) -> Reply[bool]:
        return self.run(UserIndexCalls.unlink(email))


class LruCache(OnClient):
    """An exact LRU on one db: after any sequence of calls it holds exactly the `cap`
    most recently used records (fewer once TTLs or memory pressure drop some), in the
    order the server ran the reads (their touches) and writes."""

    def __init__(self, client: Client, calls: LruCalls) -> None:
        super().__init__(client)
        self.calls = calls

    def get(self, key: str) -> Reply[Record | None]:
        return self.run(self.calls.get(key))

    def get_many(self, keys: Sequence[str]) -> Reply[dict[str, Record]]:
        """One round trip for all keys (RPUSH to the touch log, MGET), touched in the
        order given; misses are left out."""
        return self.run(self.calls.get_many(keys))

    def put(self, key: str, record: Mapping[str, Any]) -> Reply[None]:
        return self.run(self.calls.put(key, record))

    def take_lease(self, key: str) -> Reply[str]:
        """Start a read-through fill of `key`: its token for `fill`."""
        return self.run(self.calls.take_lease(key))

    def fill(self, key: str, record: Mapping[str, Any], token: str) -> Reply[bool]:
        """Cache a value read from the source under the lease `token`; False when a
        write or an invalidation of the key came since (nothing is stored)."""
        return self.run(self.calls.fill(key, record, token))

    def drain(self) -> Reply[int]:
        """Apply the touch log of reads not yet applied to the LRU order."""
        return self.run(self.calls.drain())

    def delete(self, key: str) -> Reply[bool]:
        return self.run(self.calls.delete(key))


#: The plan's defaults, for the constructors below (a short name keeps their signatures short).
_BOUND = DEFAULT_BOUNDS


class UserCache(LruCache):
    """`usr:` records on the user_cache db, bounded at the plan's cap."""

    def __init__(
        self, client: Client, cap: int = _BOUND.user_cap, ttl: float = _BOUND.user_ttl
    ) -> None:
        super().__init__(client, LruCalls.users(cap, ttl))


class SessionCache(OnClient):
    """`ses:` sessions; TTL = expiry, optionally sliding on each get/touch."""

    def __init__(
        self,
        client: Client,
        ttl: float = _BOUND.session_ttl,
        sliding: bool = _BOUND.session_sliding,
    ) -> None:
        self.calls = SessionCalls(ttl, sliding)
        super().__init__(client)

    def create(
        self, owner: str, data: Mapping[str, Any], ttl: float | None = None, key: str | None = None
    ) -> Reply[Session]:
        return self.run(self.calls.create(owner, data, key or new_key("ses"), ttl))

    def get(self, key: str) -> Reply[Session | None]:
        return self.run(self.calls.get(key))

    def touch(self, key: str) -> Reply[bool]:
        """Whether the session is alive; slides its expiry when the plan says sliding."""
        return self.run(self.calls.touch(key))

    def take_lease(self, key: str) -> Reply[str]:
        """Before a fill reads hosted (`Store.get_session`): the lease `fill` checks."""
        return self.run(self.calls.take_lease(key))

    def fill(
        self, owner: str, data: Mapping[str, Any], key: str, ttl: float, token: str
    ) -> Reply[bool]:
        """Cache a session read from hosted under the lease `token`; False when a
        revocation came in between (the value is then not cached)."""
        return self.run(self.calls.fill(owner, data, key, ttl, token))

    def revoke(self, key: str) -> Reply[bool]:
        return self.run(self.calls.revoke(key))

    def revoke_all(self, owner: str) -> Reply[int]:
        return self.run(self.calls.revoke_all(owner))


class MessageQueue(OnClient):
    """Messages in transit: bounded `msg:` LRU plus an at-least-once work queue.

    `take` blocks, so it runs on the blocking workload's client; everything else on api.
    """

    def __init__(
        self,
        client: Client,
        blocking: Client | None = None,
        cap: int = _BOUND.message_cap,
        ttl: float = _BOUND.message_ttl,
    ) -> None:
        self.calls = QueueCalls(cap, ttl)
        super().__init__(client)
        self.blocking = blocking or client
        self.run_blocking = runner(self.blocking).run
        self.messages = LruCache(client, self.calls.lru)

    def enqueue(self, body: Mapping[str, Any], key: str | None = None) -> Reply[str]:
        return self.run(self.calls.enqueue(key or new_key("msg"), body))

    def get(self, key: str) -> Reply[Record | None]:
        return self.messages.get(key)

    def take(self, timeout: float = 1.0) -> Reply[QueueItem | None]:
        """The oldest pending message, moved to processing; None after `timeout` seconds."""
        return self.run_blocking(self.calls.take(timeout))

    def ack(self, item: QueueItem) -> Reply[bool]:
        return self.run(self.calls.ack(item))

    def recover(self, min_idle: float = 60.0) -> Reply[int]:
        """Requeue jobs left in processing (by dead workers); returns how many moved."""
        return self.run(self.calls.recover(min_idle))

    def pending(self) -> Reply[int]:
        return self.run(self.calls.pending())

    def processing(self) -> Reply[int]:
        return self.run(self.calls.processing())


@dataclass
class LocalCache:
    """The four dbs of one cache instance, each on its own client.

    On asyncio clients the same object is the asyncio cache: every method, like
    `require_library` and `from_clients`, then returns an awaitable.
    """

    index: UserIndex
    users: UserCache
    sessions: SessionCache
    messages: MessageQueue

    #: The workload clients `from_settings` makes: sync here, asyncio in `AsyncLocalCache`.
    workload_clients: ClassVar[type[WorkloadClients[Any]]] = Clients

    def require_library(self) -> Reply[str]:
        """Fail at start when the instance was not deployed with this package's library."""
        return self.users.run(version_check(self.users.client))

    @classmethod
    def from_clients(
        cls,
        index: Client,
        users: Client,
        sessions: Client,
        messages: Client,
        blocking: Client | None = None,
        bounds: Bounds | None = None,
    ) -> Reply[Self]:
        """One client per db (and the blocking one for `take`); checks the library once,
        in the round trip that hands the cache over (so asyncio awaits one thing)."""
        b = bounds or DEFAULT_BOUNDS
        cache = cls(
            index=UserIndex(index),
            users=UserCache(users, b.user_cap, b.user_ttl),
            sessions=SessionCache(sessions, b.session_ttl, b.session_sliding),
            messages=MessageQueue(messages, blocking, b.message_cap, b.message_ttl),
        )
        return cache.users.run(version_check(users).then(lambda _: cache))

    @classmethod
    def from_workload_clients(
        cls, clients: WorkloadClients[Any], settings: CacheTierSettings
    ) -> Reply[Self]:
        """Each db's api client from the cache tier's clients; `take` on the blocking one."""
        return cls.from_clients(
            **db_clients(clients, settings.dbs), bounds=Bounds.from_settings(settings)
        )

    @classmethod
    def from_settings(cls, settings: CacheTierSettings) -> Reply[Self]:
        """The local cache of `load_settings().cache`, on its own workload clients."""
        return cls.from_workload_clients(cls.workload_clients(settings), settings)


class AsyncLocalCache(LocalCache):
    """`LocalCache` made on asyncio workload clients: `await AsyncLocalCache.from_settings(s)`.

    The same classes, not a second implementation; only `from_settings` differs, by
    the clients it makes (any `from_clients` call follows the clients it is given).
    """

    workload_clients = AsyncClients
