"""The client refuses input that breaks its promises, before any call is built or sent.

Every case builds a call with the I/O-free builders of `valkey_plans.client.cache` (the sync
classes and the asyncio twin both send exactly these), so no server is needed: a
refused builder means nothing was sent. tests/server/test_client_inputs.py proves the
same on a real server, and that the Functions library refuses bad FCALLs by itself.
"""

from __future__ import annotations

import json
import math
import re
import types
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from valkey_plans.client import cache, functions
from valkey_plans.client.cache import (
    MAX_CAP,
    MAX_DEPTH,
    MAX_MS,
    MAX_SAFE_INTEGER,
    MAX_SECONDS,
    Bounds,
    CacheError,
    LruCalls,
    QueueCalls,
    QueueItem,
    SessionCalls,
    UserIndexCalls,
    decode,
    encode,
    normalise_email,
)
from valkey_plans.verify import audit_rules

USER = "usr:8E1fUCTwWHKC"
SESSION = "ses:8E1fUCTwWHKD"
MESSAGE = "msg:8E1fUCTwWHKE"
NAN, INF = float("nan"), float("inf")
TTL = "allowed: a finite number of seconds from 0.001 to 315360000 (10 years)"
WAIT = "allowed: a finite number of seconds from 0 to 315360000 (10 years)"
CAP = f"allowed: an integer from 1 to {MAX_CAP}"
VALUES = "allowed: JSON values: str, bool, None, finite float, int, list, dict with str keys"
EMAIL = "allowed: local@domain.tld, at most 254 characters, without whitespace, control"


def nested(levels: int) -> dict[str, Any]:
    """`levels` objects, each inside the one before."""
    record: dict[str, Any] = {}
    for _ in range(levels - 1):
        record = {"a": record}
    return record


def cyclic() -> dict[str, Any]:
    record: dict[str, Any] = {}
    record["self"] = record
    return record


def put(record: Any) -> Callable[[], object]:
    return lambda: LruCalls.users(100, 60).put(USER, record)


def lru(cap: Any = 100, ttl: Any = 60) -> Callable[[], object]:
    return lambda: LruCalls.users(cap, ttl)


def session_ttl(ttl: Any) -> Callable[[], object]:
    return lambda: SessionCalls(60).create(USER, {}, SESSION, ttl=ttl)


def email(address: Any) -> Callable[[], object]:
    return lambda: UserIndexCalls.link(address, USER)


# (what to call, fragments its message must hold: the field or value, and what is allowed)
BAD: list[Any] = [
    # records: strict JSON, str keys, the field path named
    pytest.param(
        put({"profile": {"score": NAN}}),
        ["record.profile.score = nan: allowed: finite numbers"],
        id="nan-nested",
    ),
    pytest.param(put({"a": INF}), ["record.a = inf: allowed: finite numbers"], id="inf"),
    pytest.param(
        put({"a": [1, {"b": -INF}]}),
        ["record.a[1].b = -inf: allowed: finite numbers"],
        id="-inf-in-list",
    ),
    pytest.param(
        put({1: "a", "1": "b"}),
        ["record key 1 (int): allowed: str keys only", "the same as the key '1'"],
        id="int-key-collides",
    ),
    pytest.param(
        put({"p": {True: 1, "true": 2}}),
        ["record.p key True (bool): allowed: str keys only", "the same as the key 'true'"],
        id="bool-key-collides",
    ),
    pytest.param(
        put({1: "a"}),
        ["record key 1 (int): allowed: str keys only", 'as the string "1"'],
        id="int-key",
    ),
    pytest.param(
        put({None: 1}), ["record key None (NoneType): allowed: str keys only"], id="none-key"
    ),
    pytest.param(
        put({"n": {2.5: "x"}}), ["record.n key 2.5 (float): allowed: str keys only"], id="float-key"
    ),
    pytest.param(
        put({("a",): 1}), ["record key ('a',) (tuple): allowed: str keys only"], id="tuple-key"
    ),
    pytest.param(put({"b": b"x"}), ["record.b = b'x' (bytes): " + VALUES], id="bytes"),
    pytest.param(put({"s": {1, 2}}), ["record.s = {1, 2} (set): " + VALUES], id="set"),
    pytest.param(
        put({"t": (1, 2)}), ["record.t = (1, 2) (tuple): " + VALUES], id="tuple-reads-back-as-list"
    ),
    pytest.param(
        put({"o": object()}), ["record.o = <object object", "(object): " + VALUES], id="object"
    ),
    pytest.param(
        put({"we ird": NAN}),
        ['record["we ird"] = nan: allowed: finite numbers'],
        id="odd-field-name",
    ),
    pytest.param(
        put({"id": 2**53}),
        [f"record.id = {2**53}: allowed: integers within +-{MAX_SAFE_INTEGER}"],
        id="int-beyond-js",
    ),
    pytest.param(
        put({"id": -(2**63)}),
        [f"record.id = {-(2**63)}: allowed: integers within"],
        id="negative-int-beyond-js",
    ),
    pytest.param(
        put({"s": "a\ud800"}),
        ["record.s = 'a\\ud800': allowed: text that encodes as UTF-8"],
        id="lone-surrogate",
    ),
    pytest.param(
        put({"\udfff": 1}),
        ["record key = '\\udfff': allowed: text that encodes as UTF-8"],
        id="surrogate-key",
    ),
    pytest.param(
        put(nested(MAX_DEPTH + 1)),
        ["record.a.a.a", f"allowed: at most {MAX_DEPTH} levels of nesting"],
        id="too-deep",
    ),
    pytest.param(put(cyclic()), ["record.self.self", "levels of nesting (no cycles)"], id="cycle"),
    pytest.param(
        put([1, 2]), ["record must be a mapping (JSON object), got list"], id="not-a-mapping"
    ),
    pytest.param(
        lambda: SessionCalls(60).create(USER, {"x": NAN}, SESSION),
        ["session.data.x = nan: allowed: finite numbers"],
        id="session-data-nan",
    ),
    pytest.param(
        lambda: QueueCalls(5, 60).enqueue(MESSAGE, {"to": {1: "a"}}),
        ["message.body.to key 1 (int): allowed: str keys only"],
        id="message-body-int-key",
    ),
    # TTLs, caps, timeouts: finite real numbers within Valkey's range
    pytest.param(lru(ttl="60"), ["usr cache ttl = '60' (str): " + TTL], id="ttl-str"),
    pytest.param(lru(ttl=True), ["usr cache ttl = True (bool): " + TTL], id="ttl-bool"),
    pytest.param(lru(ttl=NAN), ["usr cache ttl = nan: " + TTL], id="ttl-nan"),
    pytest.param(lru(ttl=INF), ["usr cache ttl = inf: " + TTL], id="ttl-inf"),
    pytest.param(lru(ttl=0), ["usr cache ttl = 0: " + TTL], id="ttl-0"),
    pytest.param(lru(ttl=-1), ["usr cache ttl = -1: " + TTL], id="ttl-negative"),
    pytest.param(lru(ttl=0.0004), ["usr cache ttl = 0.0004: " + TTL], id="ttl-under-1ms"),
    pytest.param(lru(ttl=1e16), ["usr cache ttl = 1e+16: " + TTL], id="ttl-1e16"),
    pytest.param(
        lru(ttl=MAX_SECONDS + 1),
        [f"usr cache ttl = {MAX_SECONDS + 1}: " + TTL],
        id="ttl-over-10-years",
    ),
    pytest.param(lru(ttl=10**400), ["usr cache ttl = 1000", TTL], id="ttl-beyond-float"),
    pytest.param(lru(ttl=None), ["usr cache ttl = None (NoneType): " + TTL], id="ttl-none"),
    pytest.param(lru(cap="100"), ["usr cache cap = '100' (str): " + CAP], id="cap-str"),
    pytest.param(lru(cap=True), ["usr cache cap = True (bool): " + CAP], id="cap-bool"),
    pytest.param(lru(cap=100.0), ["usr cache cap = 100.0 (float): " + CAP], id="cap-float"),
    pytest.param(lru(cap=NAN), ["usr cache cap = nan (float): " + CAP], id="cap-nan"),
    pytest.param(lru(cap=0), ["usr cache cap = 0: " + CAP], id="cap-0"),
    pytest.param(lru(cap=-5), ["usr cache cap = -5: " + CAP], id="cap-negative"),
    pytest.param(lru(cap=2**32), [f"usr cache cap = {2**32}: " + CAP], id="cap-beyond-zset"),
    pytest.param(
        lambda: QueueCalls(True, 60), ["msg cache cap = True (bool): " + CAP], id="message-cap-bool"
    ),
    pytest.param(
        lambda: QueueCalls(5, 1e16), ["msg cache ttl = 1e+16: " + TTL], id="message-ttl-1e16"
    ),
    pytest.param(
        lambda: SessionCalls(1e16), ["session ttl = 1e+16: " + TTL], id="session-ttl-1e16"
    ),
    pytest.param(session_ttl(1e16), ["session ttl = 1e+16: " + TTL], id="create-ttl-1e16"),
    pytest.param(session_ttl("60"), ["session ttl = '60' (str): " + TTL], id="create-ttl-str"),
    pytest.param(session_ttl(NAN), ["session ttl = nan: " + TTL], id="create-ttl-nan"),
    pytest.param(session_ttl(0), ["session ttl = 0: " + TTL], id="create-ttl-0"),
    pytest.param(
        lambda: SessionCalls(60, sliding="no"),
        ["session sliding = 'no' (str): allowed: True or False"],
        id="sliding-str",
    ),
    pytest.param(
        lambda: SessionCalls(60).get(SESSION, slide=1),
        ["session get slide = 1 (int): allowed: True or False"],
        id="slide-int",
    ),
    pytest.param(lambda: QueueCalls.take(-1), ["take timeout = -1: " + WAIT], id="take-negative"),
    pytest.param(lambda: QueueCalls.take(NAN), ["take timeout = nan: " + WAIT], id="take-nan"),
    pytest.param(lambda: QueueCalls.take(INF), ["take timeout = inf: " + WAIT], id="take-inf"),
    pytest.param(
        lambda: QueueCalls.take("1"), ["take timeout = '1' (str): " + WAIT], id="take-str"
    ),
    pytest.param(lambda: QueueCalls.take(1e16), ["take timeout = 1e+16: " + WAIT], id="take-1e16"),
    pytest.param(
        lambda: QueueCalls.recover(-0.5),
        ["recover min_idle = -0.5: " + WAIT],
        id="min-idle-negative",
    ),
    pytest.param(
        lambda: QueueCalls.recover(INF), ["recover min_idle = inf: " + WAIT], id="min-idle-inf"
    ),
    pytest.param(
        lambda: QueueCalls.recover(True),
        ["recover min_idle = True (bool): " + WAIT],
        id="min-idle-bool",
    ),
    pytest.param(
        lambda: Bounds(user_ttl=NAN), ["bounds.user_ttl = nan: " + TTL], id="bounds-ttl-nan"
    ),
    pytest.param(
        lambda: Bounds(session_ttl="1h"),
        ["bounds.session_ttl = '1h' (str): " + TTL],
        id="bounds-ttl-str",
    ),
    pytest.param(
        lambda: Bounds(message_cap=True),
        ["bounds.message_cap = True (bool): " + CAP],
        id="bounds-cap-bool",
    ),
    pytest.param(
        lambda: Bounds(session_sliding="yes"),
        ["bounds.session_sliding = 'yes' (str): allowed: True or False"],
        id="bounds-sliding-str",
    ),
    # emails: control and format characters and inner whitespace refused
    pytest.param(
        email("ada\x00@example.com"),
        ["email 'ada\\x00@example.com' contains U+0000 (a control character): " + EMAIL],
        id="email-nul",
    ),
    pytest.param(
        email("ada\u200b@example.com"),
        ["contains U+200B (ZERO WIDTH SPACE, a format character): " + EMAIL],
        id="email-zwsp",
    ),
    pytest.param(
        email("ada\u200d@example.com"),
        ["contains U+200D (ZERO WIDTH JOINER, a format character)"],
        id="email-zwj",
    ),
    pytest.param(
        email("\ufeffada@example.com"),
        ["contains U+FEFF (ZERO WIDTH NO-BREAK SPACE, a format character)"],
        id="email-bom",
    ),
    pytest.param(
        email("ada\u202e@example.com"),
        ["contains U+202E (RIGHT-TO-LEFT OVERRIDE, a format character)"],
        id="email-bidi",
    ),
    pytest.param(
        email("ada\u00ad@example.com"),
        ["contains U+00AD (SOFT HYPHEN, a format character)"],
        id="email-soft-hyphen",
    ),
    pytest.param(
        email("ada lovelace@example.com"),
        ["contains U+0020 (SPACE, a space character): " + EMAIL],
        id="email-space",
    ),
    pytest.param(
        email("ada\u00a0@example.com"),
        ["contains U+00A0 (NO-BREAK SPACE, a space character)"],
        id="email-nbsp",
    ),
    pytest.param(
        email("ada\t1@example.com"), ["contains U+0009 (a control character)"], id="email-tab"
    ),
    pytest.param(
        email("ada\u2028@example.com"),
        ["contains U+2028 (LINE SEPARATOR, a line separator character)"],
        id="email-line-separator",
    ),
    pytest.param(
        email("\u00a8ada@example.com"),
        ["contains U+0020 (SPACE, a space character)"],
        id="email-nfkc-makes-a-space",
    ),
    pytest.param(
        email("ada.example.com"),
        ["email 'ada.example.com' is not an address: " + EMAIL],
        id="email-no-at",
    ),
    pytest.param(
        email("a" * 250 + "@example.com"), ["is not an address: " + EMAIL], id="email-too-long"
    ),
    pytest.param(
        email(b"ada@example.com"), ["email must be a str, got bytes: " + EMAIL], id="email-bytes"
    ),
]


@pytest.mark.parametrize(("call", "fragments"), BAD)
def test_bad_input_is_refused_naming_field_and_what_is_allowed(
    call: Callable[[], object], fragments: list[str]
) -> None:
    with pytest.raises(CacheError) as raised:
        call()
    message = str(raised.value)
    assert "allowed:" in message or "must be a mapping" in message
    for fragment in fragments:
        assert fragment in message, message


def test_the_table_is_wide() -> None:
    assert len(BAD) >= 60


GOOD_RECORDS: list[Any] = [
    {},
    {"name": "Ada", "tags": ["a", "b"], "score": 2.5, "ok": True, "none": None},
    {"deep": {"er": {"list": [1, [2, [3]]]}}},
    {"max": MAX_SAFE_INTEGER, "min": -MAX_SAFE_INTEGER, "zero": -0.0, "big": 1e308, "tiny": 5e-324},
    {"ünïcödé": "日本語", "emoji": "\U0001f600", "nul in text": "a\x00b"},
    {"we ird.key": 1, "": ""},
    OrderedDict([("b", 1), ("a", 2)]),
    types.MappingProxyType({"read": "only"}),
    nested(MAX_DEPTH),
]


@pytest.mark.parametrize("record", GOOD_RECORDS)
def test_valid_records_keep_passing_and_read_back_equal(record: Any) -> None:
    call = LruCalls.users(100, 60).put(USER, record)
    assert call.command[:3] == ("FCALL", "vp_lru_put", 3)
    assert strict_loads(call.command[6]) == dict(record)
    assert decode(call.command[6]) == dict(record)


@pytest.mark.parametrize(
    ("ttl", "ms"),
    [
        (0.001, 1),
        (0.29, 290),
        (1, 1000),
        (60, 60_000),
        (3600.5, 3_600_500),
        (Fraction(1, 2), 500),
        (MAX_SECONDS, MAX_MS),
    ],
)
def test_valid_ttls_become_exact_ms(ttl: Any, ms: int) -> None:
    assert LruCalls.users(100, ttl).ttl_ms == ms
    assert SessionCalls(ttl).ttl_ms == ms
    assert SessionCalls(60).create(USER, {}, SESSION, ttl=ttl).command[-1] == ms


@pytest.mark.parametrize("cap", [1, 100, MAX_CAP])
def test_valid_caps_pass(cap: int) -> None:
    assert LruCalls.users(cap, 60).cap == cap
    assert QueueCalls(cap, 60).lru.cap == cap


@pytest.mark.parametrize(("wait", "ms"), [(0, 0), (0.1, 100), (5, 5000), (MAX_SECONDS, MAX_MS)])
def test_valid_timeouts_pass(wait: float, ms: int) -> None:
    assert QueueCalls.take(wait).command[-1] == wait
    assert QueueCalls.recover(wait).command[-1] == ms


def test_valid_bounds_and_flags_pass() -> None:
    bounds = Bounds(user_cap=3, user_ttl=0.5, session_ttl=86400, session_sliding=False)
    assert (bounds.user_cap, bounds.session_sliding) == (3, False)
    assert SessionCalls(60, sliding=True).get(SESSION).before == (
        ("PEXPIRE", SESSION, 60_000, "XX"),
    )
    assert SessionCalls(60, sliding=True).get(SESSION, slide=False).before == ()


# --- emails: one key per address however it is typed ---------------------------------

SAME_ADDRESS: list[tuple[str, list[str]]] = [
    (
        "ada@example.com",
        [
            "ada@example.com",
            "ADA@EXAMPLE.COM",
            "  Ada@Example.com\n",
            "ａｄａ@example.com",
            "ＡＤＡ＠ＥＸＡＭＰＬＥ．ＣＯＭ",
        ],
    ),
    (
        "strasse@example.com",
        ["Straße@example.com", "STRASSE@example.com", "strasse@example.com", "STRAẞE@EXAMPLE.COM"],
    ),
    ("josé@example.com", ["José@example.com", "Jose\u0301@example.com", "JOSÉ@EXAMPLE.COM"]),
    ("finn@example.com", ["\ufb01nn@example.com", "FINN@example.com"]),
    ("ǰ@example.com", ["\u01f0@example.com", "j\u030c@example.com", "J\u030c@example.com"]),
]


@pytest.mark.parametrize(("key", "forms"), SAME_ADDRESS, ids=[k for k, _ in SAME_ADDRESS])
def test_every_form_of_an_address_maps_to_one_index_key(key: str, forms: list[str]) -> None:
    keys = {UserIndexCalls.link(form, USER).command[1] for form in forms}
    assert keys == {unicodedata.normalize("NFC", key)}
    assert {UserIndexCalls.lookup(form).command[1] for form in forms} == keys


def test_the_audit_recognises_normalised_index_keys_only() -> None:
    for key, forms in SAME_ADDRESS:
        normal = normalise_email(forms[0])
        assert audit_rules._is_email(normal), key
        assert not any(audit_rules._is_email(f) for f in forms if f != normal)
    assert not audit_rules._is_email("ada\u200b@example.com")


# --- properties ------------------------------------------------------------------------


def _refuse_constant(name: str) -> float:
    raise ValueError(f"strict JSON has no {name}")


def _safe_int(text: str) -> int:
    number = int(text)
    if abs(number) > MAX_SAFE_INTEGER:
        raise ValueError(f"{text} is not a safe integer for JSON.parse")
    return number


def strict_loads(text: str) -> Any:
    """A reader as strict as Node.js's JSON.parse, given the UTF-8 bytes the server holds:
    no NaN/Infinity, exact integers only."""
    return json.loads(text.encode(), parse_constant=_refuse_constant, parse_int=_safe_int)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_RECORD = st.dictionaries(
    st.text(),
    st.recursive(
        JSON_SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    ),
)
#: What strict JSON cannot carry unchanged.
BAD_SCALARS = (
    st.sampled_from([NAN, INF, -INF])
    | st.integers(min_value=MAX_SAFE_INTEGER + 1)
    | st.integers(max_value=-MAX_SAFE_INTEGER - 1)
    | st.binary(max_size=2)
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
    | st.sets(st.integers(0, 2), max_size=2)
)
BAD_KEYS = st.integers(-3, 3) | st.booleans() | st.none() | st.floats(width=16)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good`, and `bad` one draw in six (one_of would weigh each of their branches alike)."""
    return st.tuples(st.integers(0, 5), good, bad).map(lambda t: t[2] if t[0] == 0 else t[1])


KEYS = mostly(st.text(max_size=5), BAD_KEYS)
ANY_RECORD = st.dictionaries(
    KEYS,
    st.recursive(
        mostly(JSON_SCALARS, BAD_SCALARS),
        lambda inner: mostly(
            st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
            st.tuples(inner),
        ),
        max_leaves=6,
    ),
    max_size=4,
)


@given(ANY_RECORD)
def test_any_record_encode_accepts_reads_back_equal_under_a_strict_reader(record: Any) -> None:
    """Mostly bad records (NaN, int keys, bytes, tuples, big ints): whatever passes is exact."""
    try:
        text = encode(record)
    except CacheError:
        return
    assert strict_loads(text) == record
    assert decode(text) == record


@given(JSON_RECORD)
def test_every_strict_json_record_is_accepted_and_reads_back_equal(record: Any) -> None:
    """The checks refuse nothing that strict JSON carries unchanged."""
    text = encode(record)
    assert strict_loads(text) == record
    assert decode(text) == record


#: Characters whose folding is tricky: compatibility forms, case folds that expand or
#: decompose, NFKC forms that hold a space; and invisible ones, which are refused.
FOLDING = "aAzZ0.-_ßẞǰJĳﬁＡａ０İıΣσς¨´\u0301\u030c"
INVISIBLE = "\u00a0\u200b\u200d\ufeff\u202e\x00\x7f"
ADDRESS_PARTS = st.text(
    mostly(st.sampled_from(FOLDING), st.sampled_from(INVISIBLE) | st.characters()),
    min_size=1,
    max_size=8,
)


@given(ADDRESS_PARTS, ADDRESS_PARTS, ADDRESS_PARTS)
@example("Straße", "example", "com")
@example("J\u030c", "ｅｘａｍｐｌｅ", "com")
def test_normalise_email_is_idempotent_and_leaves_nothing_invisible(
    local: str, domain: str, tld: str
) -> None:
    try:
        normal = normalise_email(f"{local}@{domain}.{tld}")
    except CacheError:
        return
    assert normalise_email(normal) == normal
    assert normal == unicodedata.normalize("NFKC", normal)
    assert normal == unicodedata.normalize("NFKC", normal.casefold())
    assert not any(
        unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zs"} or c.isspace() for c in normal
    )


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_the_ascii_shortcut_agrees_with_the_full_fold(text: str) -> None:
    assert cache._fold(text) == text.lower()
    bad = [c for c in text if cache._refused_char(c)]
    assert bool(bad) == bool(re.search(r"[\x00-\x20\x7f]", text))


def test_decode_is_strict() -> None:
    for text, fragment in [
        ('{"a":NaN}', "stored JSON holds NaN: allowed: finite numbers"),
        ('{"a":-Infinity}', "stored JSON holds -Infinity"),
        ('{"a":1e400}', "stored JSON holds 1e400, beyond a double"),
        ("{'a': 1}", "stored value is not JSON"),
    ]:
        with pytest.raises(CacheError, match=re.escape(fragment)):
            decode(text)
    with pytest.raises(CacheError, match="NaN"):
        cache._queue_item(f'{{"key":"{MESSAGE}","body":{{"a":NaN}}}}')
    item = cache._queue_item(f'{{"key":"{MESSAGE}","body":{{"a":1}}}}')
    assert item == QueueItem(MESSAGE, {"a": 1}, f'{{"key":"{MESSAGE}","body":{{"a":1}}}}')


def test_the_library_refuses_the_same_ranges() -> None:
    """The Lua library's limits are the client's: one range on both sides of the wire."""
    source = functions.library_source()
    assert f"local MAX_MS = {MAX_MS}\n" in source
    assert f"local MAX_CAP = {MAX_CAP}\n" in source
    assert f"to {MAX_MS} (10 years)" in source
    assert math.isclose(MAX_MS / 1000 / 86400 / 365, 10)
