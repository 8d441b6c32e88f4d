"""The adoption's pure parts: which path, what a copy writes, who holds a port, the refusal."""

from __future__ import annotations

import pytest

from valkey_plans.adopt.core import AdoptError, choose_method
from valkey_plans.adopt.logical import stream_writes, value_writes
from valkey_plans.deploy.adoption import parse_listeners, refusal
from valkey_plans.plan import Plan


@pytest.mark.parametrize(
    ("version", "asked", "method"),
    [
        ("7.0.15", "auto", "replication"),
        ("6.2.14", "auto", "replication"),
        ("8.0.2", "auto", "copy"),
        ("8.2.1", "auto", "copy"),
        ("7.0.15", "copy", "copy"),
    ],
)
def test_replication_up_to_redis_7_and_a_logical_copy_from_8(version, asked, method):
    assert choose_method(version, asked) == method


def test_an_unknown_method_or_version_is_refused():
    with pytest.raises(AdoptError, match="allowed: auto, copy"):
        choose_method("7.0.15", "dump")
    with pytest.raises(AdoptError, match="version"):
        choose_method("unknown", "auto")


def test_values_are_written_byte_for_byte_with_scores_after_members():
    assert value_writes("string", b"k", b"\x00\xff") == [("SET", b"k", b"\x00\xff")]
    assert value_writes("hash", b"h", [b"f", b"v"]) == [("HSET", b"h", b"f", b"v")]
    assert value_writes("zset", b"z", [b"m", b"1.5", b"n", b"2"]) == [
        ("ZADD", b"z", b"1.5", b"m", b"2", b"n")
    ]
    assert value_writes("list", b"l", []) == []  # gone between TYPE and the read


def _full(entries: list, groups: list) -> list:
    return [
        b"length", len(entries), b"last-generated-id", b"9-0", b"max-deleted-entry-id",
        b"3-0", b"entries-added", 4, b"entries", entries, b"groups", groups,
    ]  # fmt: skip


def test_a_stream_keeps_its_ids_groups_consumers_and_pending_entries():
    group = [
        b"name", b"g", b"last-delivered-id", b"5-0", b"entries-read", 2, b"pending",
        [[b"5-0", b"c1", 1700000000000, 3]], b"consumers", [[b"name", b"c1", b"pel-count", 1]],
    ]  # fmt: skip
    cmds = stream_writes(b"s", _full([[b"5-0", [b"a", b"1"]]], [group]))
    assert cmds == [
        ("XADD", b"s", b"5-0", b"a", b"1"),
        ("XSETID", b"s", b"9-0", "ENTRIESADDED", 4, "MAXDELETEDID", b"3-0"),
        ("XGROUP", "CREATE", b"s", b"g", b"5-0", "ENTRIESREAD", 2),
        ("XGROUP", "CREATECONSUMER", b"s", b"g", b"c1"),
        ("XCLAIM", b"s", b"g", b"c1", 0, b"5-0", "TIME", 1700000000000)
        + ("RETRYCOUNT", 3, "FORCE", "JUSTID"),
    ]


def test_an_empty_stream_is_created_empty():
    cmds = stream_writes(b"s", _full([], []))
    assert cmds[0][:2] == ("XGROUP", "CREATE") and "MKSTREAM" in cmds[0]
    assert cmds[1][:2] == ("XGROUP", "DESTROY")


SS = [
    'LISTEN 0 511 127.0.0.1:6379 0.0.0.0:* users:(("redis-server",pid=812,fd=6))',
    'LISTEN 0 511 [::1]:6379 [::]:* users:(("redis-server",pid=812,fd=7))',
    'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=90,fd=3),("sshd",pid=91,fd=3))',
    "LISTEN 0 511 127.0.0.1:6380 0.0.0.0:*",
]


def test_listeners_are_read_per_port_from_ss():
    assert parse_listeners(SS) == {6379: ["redis-server"], 22: ["sshd"], 6380: []}


def test_a_running_redis_on_a_planned_port_is_refused_naming_the_setting():
    plan = Plan.from_host_data("web-1", {})
    message = refusal(plan, parse_listeners(SS))
    assert message and "redis-server is running on port 6379" in message
    assert '"adopt": {"from": "redis"}' in message and "Nothing was changed" in message
    adopting = Plan.from_host_data(
        "web-1",
        {
            "valkey_instances": [
                {"name": "cache", "role": "cache", "port": 6379, "adopt": {"from": "redis"}}
            ]
        },
    )
    assert refusal(adopting, parse_listeners(SS)) is None
    assert refusal(plan, parse_listeners(SS[2:])) is None
