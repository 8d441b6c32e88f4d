"""Cached records read back as the standard strict decoder reads them, only faster.

`loads` tries orjson first and hands whatever it refuses to the standard decoder: for
every JSON text the two must agree (the value, or the refusal), so the speed-up can
never change what an application reads.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valkey_plans.client.cache import MAX_SAFE_INTEGER, CacheError, encode, loads

SAFE_INT = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
SCALARS = st.none() | st.booleans() | SAFE_INT | st.floats(allow_nan=False, allow_infinity=False)
VALUES = st.recursive(
    SCALARS | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(VALUES)
def test_any_json_text_reads_as_the_standard_decoder_reads_it(value):
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        for raw in (text, text.encode("utf-8", "surrogatepass")):
            assert loads(raw) == json.loads(raw)


@given(st.dictionaries(st.text(max_size=20), SCALARS, max_size=8))
def test_what_the_library_writes_reads_back_unchanged(record):
    try:
        stored = encode(record)
    except CacheError:
        return  # refused on the way in (text it does not store), nothing to read
    assert loads(stored.encode()) == record


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"NaN", "NaN: allowed: finite numbers"),
        (b'{"a":[Infinity]}', "Infinity: allowed: finite numbers"),
        (b"1e400", "beyond a double"),
        (b'{"a":', "not JSON"),
        (b"\xff", "not JSON"),
    ],
)
def test_refusals_keep_their_words(raw, words):
    with pytest.raises(CacheError, match=words):
        loads(raw)


def test_a_lone_surrogate_escape_reads_as_before():
    assert loads(b'"\\ud800"') == json.loads('"\\ud800"')
