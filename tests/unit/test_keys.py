"""Key names: round trip, order, validation messages, monotonicity (no server needed)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valkey_plans import keys
from valkey_plans.domains import DOMAINS
from valkey_plans.keys import (
    ALPHABET,
    TIME_LIMIT_US,
    KeyFormatError,
    Keys,
    encode_time,
    new_key,
    new_txkey,
    parse,
    txkey_time,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
micros = st.integers(min_value=0, max_value=TIME_LIMIT_US - 1)
suffixes = st.text(alphabet=ALPHABET, min_size=3, max_size=3)
domains = st.sampled_from(sorted(DOMAINS))


def test_alphabet_is_ascii_ordered_so_string_order_is_numeric_order():
    assert list(ALPHABET) == sorted(ALPHABET)
    assert len(ALPHABET) == 62


@given(micros, suffixes)
def test_time_round_trips_to_the_microsecond(us, suffix):
    txkey = encode_time(us) + suffix
    assert txkey_time(txkey) == EPOCH + timedelta(microseconds=us)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2398, 1, 1), timezones=st.just(UTC)
    )
)
def test_datetime_round_trips(when):
    assert txkey_time(encode_time(when) + "000") == when


@given(micros, micros, suffixes, suffixes)
def test_string_order_equals_time_order(a, b, sa, sb):
    ka, kb = encode_time(a) + sa, encode_time(b) + sb
    if a < b:
        assert ka < kb
    elif a > b:
        assert ka > kb


@given(domains)
def test_every_generated_key_validates_and_decodes_to_now(domain):
    before = datetime.now(UTC)
    key = new_key(domain)
    parsed = parse(key)
    assert parsed.domain == domain
    assert parsed.txkey == key[4:]
    assert len(key) == 16
    # decoded time is the issue time (a bump within one microsecond may put it slightly ahead)
    assert before - timedelta(milliseconds=1) <= parsed.created


@given(domains, micros, suffixes)
def test_parse_accepts_any_well_formed_key(domain, us, suffix):
    parsed = parse(f"{domain}:{encode_time(us)}{suffix}")
    assert parsed.created == EPOCH + timedelta(microseconds=us)


@given(st.text(min_size=0, max_size=30).filter(lambda t: len(t) != 12))
def test_wrong_txkey_length_is_rejected_with_the_length(txkey):
    with pytest.raises(KeyFormatError, match=f"has {len(txkey)} characters.*exactly 12"):
        parse(f"usr:{txkey}")


@given(st.integers(0, 11), st.characters().filter(lambda c: c not in ALPHABET))
def test_bad_character_is_rejected_with_char_and_position(position, char):
    txkey = list(new_txkey())
    txkey[position] = char
    with pytest.raises(KeyFormatError) as err:
        parse("usr:" + "".join(txkey))
    assert f"{char!r} at position {position}" in str(err.value)
    assert "0-9A-Za-z" in str(err.value)


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=3).filter(
        lambda d: d not in DOMAINS
    )
)
def test_unknown_domain_is_rejected_naming_the_allowed_ones(domain):
    with pytest.raises(KeyFormatError) as err:
        parse(f"{domain}:{new_txkey()}")
    assert f"unknown domain {domain!r}" in str(err.value)
    assert "con, crt, msg, ord, otp, prd, ses, usr" in str(err.value)


@pytest.mark.parametrize("key", ["usr-0000000000000", "usr0000000000000", "us", "", "usrr:0"])
def test_missing_separator_is_rejected(key):
    with pytest.raises(KeyFormatError, match="lacks the ':' separator at position 3"):
        parse(key)


@pytest.mark.parametrize("domain", ["USR", "us1", "Usr"])
def test_domain_must_be_three_lowercase_letters(domain):
    with pytest.raises(KeyFormatError, match="exactly 3 lowercase letters"):
        parse(f"{domain}:{new_txkey()}")


def test_structural_keys_are_not_record_keys():
    with pytest.raises(KeyFormatError, match="structural key"):
        parse("vp:lru:usr")


@given(st.integers(min_value=TIME_LIMIT_US, max_value=TIME_LIMIT_US * 100))
def test_time_beyond_nine_digits_is_rejected(us):
    with pytest.raises(KeyFormatError, match="beyond the 9-digit base-62 range"):
        encode_time(us)


def test_times_before_the_epoch_and_naive_times_are_rejected():
    with pytest.raises(KeyFormatError, match="beyond the 9-digit base-62 range"):
        encode_time(datetime(1969, 12, 31, tzinfo=UTC))
    with pytest.raises(KeyFormatError, match="no time zone"):
        encode_time(datetime(2024, 1, 1))
    with pytest.raises(KeyFormatError, match="2398"):
        encode_time(datetime(2400, 1, 1, tzinfo=UTC))


def test_bytes_keys_parse_like_str():
    key = new_key("ses")
    assert parse(key.encode()) == parse(key)


def test_keys_strictly_increase_in_a_tight_loop():
    issued = [new_txkey() for _ in range(50_000)]
    assert all(a < b for a, b in zip(issued, issued[1:], strict=False))


def test_keys_strictly_increase_across_threads_and_never_collide():
    per_thread: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        out.extend(new_txkey() for _ in range(10_000))

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [k for out in per_thread for k in out]
    for out in per_thread:
        assert all(a < b for a, b in zip(out, out[1:], strict=False))
    # the time part alone is unique: every key got its own microsecond stamp
    assert len({k[:9] for k in everything}) == len(everything)


def test_a_plan_can_narrow_and_extend_the_registry():
    mine = Keys(domains={"usr": "user", "abc": "my thing"})
    assert mine.parse(mine.new("abc")).domain == "abc"
    with pytest.raises(KeyFormatError, match="unknown domain 'msg'; allowed: abc, usr"):
        mine.new("msg")
    narrow = keys.DEFAULT_KEYS.narrow(["usr", "ses"])
    assert sorted(narrow.domains) == ["ses", "usr"]
    with pytest.raises(KeyFormatError, match="unknown domain 'zzz'"):
        keys.DEFAULT_KEYS.narrow(["zzz"])
    wider = narrow.extend({"inv": "invoice"})
    assert wider.is_valid(wider.new("inv"))
    assert not narrow.is_valid(wider.new("inv"))
    with pytest.raises(KeyFormatError, match="exactly 3 lowercase letters"):
        Keys(domains={"ab1": "bad"})
