"""Key names `<dom>:<txkey>`: one codec so every application names records the same way.

A txkey is 12 characters over `0-9A-Za-z` (digit values 0..61 in that order): the
first 9 are microseconds since the Unix epoch in base 62, most significant first,
the last 3 are random. Because the alphabet is in ASCII order and the time part is
fixed-width, plain string order is creation order, and a key tells when it was made
without a lookup. The domain registry itself lives in `valkey_plans.domains`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from valkey_plans.domains import DOMAIN_PATTERN, DOMAINS, STRUCTURAL_PREFIX

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BASE = len(ALPHABET)
TIME_DIGITS = 9
RANDOM_DIGITS = 3
TXKEY_LENGTH = TIME_DIGITS + RANDOM_DIGITS
SEPARATOR = ":"
KEY_LENGTH = 3 + len(SEPARATOR) + TXKEY_LENGTH
#: One past the largest microsecond count that fits in 9 base-62 digits (year 2398).
TIME_LIMIT_US = BASE**TIME_DIGITS

_VALUE = {char: value for value, char in enumerate(ALPHABET)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class KeyFormatError(ValueError):
    """A key, txkey or domain that does not follow the `<dom>:<txkey>` convention."""


class ParsedKey(NamedTuple):
    """What a record key says about itself."""

    domain: str
    txkey: str
    created: datetime


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, BASE)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * BASE + _VALUE[char]
    return value


def _time_range() -> str:
    last = _EPOCH + timedelta(microseconds=TIME_LIMIT_US - 1)
    return f"1970-01-01T00:00:00Z .. {last.isoformat().replace('+00:00', 'Z')}"


def to_microseconds(when: datetime) -> int:
    """Microseconds since the epoch; naive datetimes are refused because they hide the zone."""
    if when.tzinfo is None:
        raise KeyFormatError(
            f"time {when.isoformat()} has no time zone; pass an aware datetime (UTC)"
        )
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_time(when: datetime | int) -> str:
    """The 9-character time part for an instant (datetime or epoch microseconds).

    Also the lower bound of all txkeys made at that instant, which is what a
    time-range scan over sorted keys needs.
    """
    micros = to_microseconds(when) if isinstance(when, datetime) else when
    if not 0 <= micros < TIME_LIMIT_US:
        shown = when.isoformat() if isinstance(when, datetime) else f"{micros} us"
        raise KeyFormatError(
            f"time {shown} is beyond the {TIME_DIGITS}-digit base-{BASE} range ({_time_range()})"
        )
    return _encode(micros, TIME_DIGITS)


def check_txkey(txkey: str) -> str:
    """Return `txkey` unchanged or raise `KeyFormatError` saying what is wrong with it."""
    if not isinstance(txkey, str):
        raise KeyFormatError(f"txkey must be a str, got {type(txkey).__name__}")
    if len(txkey) != TXKEY_LENGTH:
        raise KeyFormatError(
            f"txkey {txkey!r} has {len(txkey)} characters; it must have exactly "
            f"{TXKEY_LENGTH} ({TIME_DIGITS} time + {RANDOM_DIGITS} random)"
        )
    for position, char in enumerate(txkey):
        if char not in _VALUE:
            raise KeyFormatError(
                f"txkey {txkey!r} has {char!r} at position {position}; "
                "allowed characters are 0-9A-Za-z"
            )
    return txkey


def txkey_time(txkey: str) -> datetime:
    """The UTC instant (to the microsecond) at which `txkey` was made."""
    micros = _decode(check_txkey(txkey)[:TIME_DIGITS])
    return _EPOCH + timedelta(microseconds=micros)


class _Clock:
    """Hands out strictly increasing microsecond stamps, also across threads.

    When the wall clock has not advanced (or stepped back) since the last stamp,
    the stamp is bumped by one microsecond instead: keys stay unique and ordered,
    and their decoded time is at most a few microseconds ahead of the real one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -1

    def next(self) -> int:
        with self._lock:
            now = time.time_ns() // 1000
            self._last = now if now > self._last else self._last + 1
            return self._last


_CLOCK = _Clock()


def new_txkey() -> str:
    """A fresh txkey, greater than every txkey this process issued before."""
    stamp = encode_time(_CLOCK.next())
    return stamp + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_DIGITS))


def _check_domain_code(code: str) -> str:
    if not isinstance(code, str) or not DOMAIN_PATTERN.fullmatch(code):
        raise KeyFormatError(f"domain {code!r} must be exactly 3 lowercase letters a-z")
    return code


class Keys:
    """The key codec for one set of domains (a plan's declared subset, or its own additions).

    `Keys()` knows every domain in `valkey_plans.domains.DOMAINS`;
    `Keys(domains={"usr": "user", "abc": "my thing"})` knows exactly those.
    """

    def __init__(self, domains: Mapping[str, str] | None = None) -> None:
        chosen = DOMAINS if domains is None else domains
        self.domains: Mapping[str, str] = {
            _check_domain_code(code): meaning for code, meaning in chosen.items()
        }
        if not self.domains:
            raise KeyFormatError("a key codec needs at least one domain")

    def __repr__(self) -> str:
        return f"Keys(domains={sorted(self.domains)})"

    def narrow(self, codes: Iterable[str]) -> Keys:
        """A codec for a subset of these domains, e.g. the ones a plan declares."""
        wanted = list(codes)
        for code in wanted:
            self.check_domain(code)
        return Keys({code: self.domains[code] for code in wanted})

    def extend(self, extra: Mapping[str, str]) -> Keys:
        """A codec with these domains plus `extra` (an application's own 3-letter codes)."""
        return Keys({**self.domains, **extra})

    def check_domain(self, domain: str) -> str:
        """Return `domain` or raise `KeyFormatError` naming the allowed ones."""
        _check_domain_code(domain)
        if domain not in self.domains:
            raise KeyFormatError(
                f"unknown domain {domain!r}; allowed: {', '.join(sorted(self.domains))}"
            )
        return domain

    def new(self, domain: str) -> str:
        """A fresh record key in `domain`, e.g. `usr:0kVq3Xb1d7Fz`."""
        return f"{self.check_domain(domain)}{SEPARATOR}{new_txkey()}"

    def parse(self, key: str | bytes) -> ParsedKey:
        """Split and validate a record key; the error says exactly what is wrong."""
        if isinstance(key, bytes):
            try:
                key = key.decode("ascii")
            except UnicodeDecodeError as exc:
                raise KeyFormatError(f"key {key!r} is not ASCII") from exc
        if not isinstance(key, str):
            raise KeyFormatError(f"key must be str or bytes, got {type(key).__name__}")
        if key.startswith(STRUCTURAL_PREFIX):
            raise KeyFormatError(
                f"key {key!r} is a structural key ({STRUCTURAL_PREFIX!r} prefix), not a record key"
            )
        if len(key) < 4 or key[3] != SEPARATOR:
            raise KeyFormatError(
                f"key {key!r} lacks the {SEPARATOR!r} separator at position 3; "
                f"expected <dom>{SEPARATOR}<txkey> like 'usr{SEPARATOR}0kVq3Xb1d7Fz'"
            )
        domain, txkey = key[:3], key[4:]
        self.check_domain(domain)
        return ParsedKey(domain, txkey, txkey_time(txkey))

    def is_valid(self, key: str | bytes) -> bool:
        """True when `parse` would accept `key` (for audits that count, not raise)."""
        try:
            self.parse(key)
        except KeyFormatError:
            return False
        return True


#: The codec over every known domain; plans narrow or extend it.
DEFAULT_KEYS = Keys()


def new_key(domain: str) -> str:
    """A fresh record key in one of the known domains."""
    return DEFAULT_KEYS.new(domain)


def parse(key: str | bytes) -> ParsedKey:
    """Parse a record key in one of the known domains."""
    return DEFAULT_KEYS.parse(key)
