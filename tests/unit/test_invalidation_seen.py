"""Seen: an invalidation heard from several cluster nodes is applied once."""

from hypothesis import given
from hypothesis import strategies as st

from valkey_plans.client.invalidation import Seen


@given(st.lists(st.text(min_size=1, max_size=8), max_size=200))
def test_each_id_is_first_exactly_once_while_remembered(ids):
    seen = Seen(size=1000)
    firsts = [message_id for message_id in ids if seen.first(message_id)]
    assert firsts == list(dict.fromkeys(ids))


def test_the_oldest_ids_are_forgotten_beyond_the_size():
    seen = Seen(size=3)
    assert all(seen.first(i) for i in "abcd")
    assert seen.first("a")  # forgotten: the memory stays bounded
    assert not seen.first("d")


def test_a_message_without_an_id_is_always_applied():
    seen = Seen()
    assert seen.first(None) and seen.first(None)
