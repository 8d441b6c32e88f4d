"""Adoption against real servers: redis-server 7 as the source, valkey-server adopting it.

Both paths run here: replication (Redis 7's own path) and the logical copy (Redis 8's
path, which works from Redis 7 as well, so it is tested on every machine; the lab runs it
against Redis 8). A client keeps writing through every switch: every seeded key, value
and TTL (within 2 s) and every acknowledged write must be in Valkey afterwards.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path

import pytest
import valkey

from tests.adopt_servers import RedisProcess, Writer, differences, seed, snapshot
from tests.valkey_server import ValkeyProcess
from valkey_plans.adopt import AdoptError, Adoption, Endpoint, adopt
from valkey_plans.adopt.logical import ChangeFeed

KEYS = 3000


@pytest.fixture
def pair(tmp_path: Path):
    """A seeded Redis on a free port and an empty Valkey on another (the spare port)."""
    redis = RedisProcess(tmp_path / "redis").start()
    spare = ValkeyProcess(tmp_path / "valkey").start()
    seed(redis.client(), KEYS)
    yield redis, spare
    spare.stop()
    redis.stop()


def adoption(redis: RedisProcess, spare: ValkeyProcess, tmp_path: Path, **over) -> Adoption:
    given = {
        "redis": Endpoint(redis.port),
        "valkey": Endpoint(spare.port),
        "port": redis.port,
        "databases": 16,
        "stop_redis": redis.stop,
        "state_file": str(tmp_path / "adopt.state"),
    }
    return Adoption(**{**given, **over})


@pytest.mark.parametrize("method", ["auto", "copy"])
def test_every_key_and_every_acknowledged_write_survives_the_switch(pair, tmp_path, method):
    redis, spare = pair
    writer = Writer(redis.port)
    writer.start()
    time.sleep(0.3)
    before = snapshot(redis.client())
    report = adopt(adoption(redis, spare, tmp_path, method=method))
    time.sleep(0.3)
    writer.stop.set()
    writer.join(10)
    assert report.method == ("replication" if method == "auto" else "copy")
    assert redis.proc is None, "Redis must be stopped after the switch"
    moved = valkey.Valkey(port=redis.port)
    assert moved.info("server")["server_name"] == "valkey"
    after = snapshot(moved)
    assert len(before) == KEYS and differences(before, after) == []
    pipe = moved.pipeline(transaction=False)
    for n in writer.acked:
        pipe.get(f"w:{n}")
    got = pipe.execute()
    missing = [n for n, v in zip(writer.acked, got, strict=True) if v != str(n).encode()]
    assert writer.acked and missing == []
    # the pause is a figure (bench/adopt.py), not a test: a loaded machine stretches it
    assert report.pause_s > 0, "the switch never paused the writes"
    print(f"\n{method}: writes paused {report.pause_s:.3f} s")
    assert not (tmp_path / "adopt.state").exists()


def test_keys_changed_during_the_copy_are_copied_again(pair, tmp_path):
    redis, spare = pair
    client = redis.client()
    changes: list[str] = []

    def progress(message: str) -> None:
        # Change keys between the first pass and the switch: deleted, rewritten, retyped.
        if message.startswith("copied") and "meanwhile" in message:
            client.delete("k:1")
            client.set("k:2", "rewritten")
            client.delete("k:7")
            client.set("k:7", "now a string")
            client.persist("k:0")
            changes.append(message)

    want = None
    report = adopt(adoption(redis, spare, tmp_path, method="copy", progress=progress))
    assert changes and report.passes >= 2
    moved = valkey.Valkey(port=redis.port)
    want = moved.get("k:2"), moved.exists("k:1"), moved.get("k:7"), moved.pttl("k:0")
    assert want == (b"rewritten", 0, b"now a string", -1)


def test_a_failed_switch_leaves_redis_serving_with_its_settings(pair, tmp_path):
    redis, spare = pair
    client = redis.client()
    client.config_set("save", "900 1")
    # A pause bound of 0 ms: settling can never finish within its share (a bound of 1 ms
    # could, on a quick enough machine), so the switch stops.
    with pytest.raises(AdoptError, match="settling took|did not reach"):
        adopt(adoption(redis, spare, tmp_path, method="copy", pause_ms=0))
    client.set("after", "1")  # writes go through: no pause left behind
    assert client.config_get("save")["save"] == "900 1"
    assert client.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""
    assert client.dbsize() == KEYS + 1
    # The next run completes.
    adopt(adoption(redis, spare, tmp_path))
    assert valkey.Valkey(port=redis.port).get("after") == b"1"


def test_redis_that_cannot_be_stopped_after_the_switch_is_named(pair, tmp_path):
    """Past the switch Valkey serves every key; a Redis that will not stop is an error
    that says so (the host's next run finishes the job: test_adopt_killed)."""
    redis, spare = pair

    def refuse() -> None:
        raise RuntimeError("the init system said no")

    with pytest.raises(AdoptError, match="Valkey serves port .* could not be saved and stopped"):
        adopt(adoption(redis, spare, tmp_path, stop_redis=refuse))
    moved = valkey.Valkey(port=redis.port)
    assert moved.info("server")["server_name"] == "valkey" and moved.dbsize() == KEYS
    assert redis.proc is not None and redis.proc.poll() is None  # refused: still running


def test_redis_keeps_every_key_in_its_data_dir_as_of_the_switch(pair, tmp_path):
    """The SAVE after the switch: Redis's kept dump holds the writes made just before."""
    redis, spare = pair
    redis.client().config_set("save", "")
    redis.client().set("last-before-switch", "1")
    adopt(adoption(redis, spare, tmp_path))
    with contextlib.suppress(valkey.ConnectionError):  # Valkey gives the port back
        valkey.Valkey(port=redis.port).shutdown(nosave=True)
    redis.start()  # from its kept data dir
    assert redis.client().dbsize() == KEYS + 1
    assert redis.client().get("last-before-switch") == b"1"


def test_settings_left_by_a_killed_run_are_restored_and_the_copy_restarts(pair, tmp_path):
    redis, spare = pair
    client = redis.client()
    # A killed run: notifications on, the state file holding the user's own values.
    (tmp_path / "adopt.state").write_text('{"save": "900 1", "notify-keyspace-events": "Ex"}')
    client.config_set("notify-keyspace-events", "KA")
    spare.client().set("half-copied", "x")
    redis_port = redis.port
    seen: list[tuple[str, str]] = []

    def progress(message: str) -> None:
        if message.startswith("Redis "):  # after the restore, before any change
            config = client.config_get("*")
            seen.append((config["save"], "".join(sorted(config["notify-keyspace-events"]))))

    runner = adoption(redis, spare, tmp_path, method="copy", progress=progress)
    adopt(runner)
    assert seen == [("900 1", "Ex")]
    moved = valkey.Valkey(port=redis_port)
    assert moved.exists("half-copied") == 0
    assert moved.dbsize() == KEYS


def test_keys_of_types_valkey_cannot_hold_are_refused_by_name(pair, tmp_path):
    redis, spare = pair
    with pytest.raises(AdoptError, match=r"db 15.*databases 4"):
        redis.client().execute_command("SELECT", 15)
        redis.client(db=15).set("far", "away")
        adopt(adoption(redis, spare, tmp_path, databases=4))
    assert redis.client().ping()


def test_the_change_feed_sees_writes_in_every_db(pair, tmp_path):
    redis, _ = pair
    redis.client().config_set("notify-keyspace-events", "KA")
    feed = ChangeFeed(adoption(redis, _, tmp_path))
    try:
        redis.client(db=3).set("x:1", "1")
        redis.client().delete("k:4")
        feed.synced()
        assert feed.take() == {3: [b"x:1"], 0: [b"k:4"]}
    finally:
        feed.close()


def test_keys_expiring_during_the_copy_do_not_stop_it_nor_come_back(pair, tmp_path):
    redis, spare = pair
    client = redis.client()
    for i in range(500):
        client.set(f"short:{i}", "x", px=200 + i)

    def progress(message: str) -> None:
        if "meanwhile" in message:
            time.sleep(1.0)  # every short key expires between the passes

    adopt(adoption(redis, spare, tmp_path, method="copy", progress=progress))
    moved = valkey.Valkey(port=redis.port)
    assert list(moved.scan_iter(match="short:*", count=1000)) == []
    assert moved.dbsize() == KEYS


def test_the_copy_keeps_stream_ids_counters_and_empty_streams(pair, tmp_path):
    """Streams without consumer groups take the copy's fast path (XINFO STREAM, XRANGE):
    the last id, entries added and max deleted id must come over, an empty stream too."""
    redis, spare = pair
    client = redis.client()
    for i in range(5):
        client.xadd("s:trimmed", {"n": i}, id=f"{i + 1}-0")
    client.xdel("s:trimmed", "5-0", "2-0")
    client.xadd("s:empty", {"n": 1}, id="7-1")
    client.xdel("s:empty", "7-1")
    fields = ("last-generated-id", "entries-added", "max-deleted-entry-id", "length")

    def ids(c: valkey.Valkey, key: str) -> tuple:
        got = c.xinfo_stream(key)
        return tuple(got[f] for f in fields), c.xrange(key)

    want = {key: ids(client, key) for key in ("s:trimmed", "s:empty")}
    adopt(adoption(redis, spare, tmp_path, method="copy"))
    moved = valkey.Valkey(port=redis.port)
    assert {key: ids(moved, key) for key in want} == want
    assert want["s:empty"][0][3] == 0 and want["s:trimmed"][0][2] == b"5-0"


@pytest.mark.parametrize("method", ["auto", "copy"])
def test_an_acl_user_other_than_default_adopts_or_is_refused_by_name(pair, tmp_path, method):
    redis, spare = pair
    admin = redis.client()
    admin.execute_command("ACL", "SETUSER", "mover", "on", ">s3cret", "+@all", "~*", "&*")
    admin.execute_command("ACL", "SETUSER", "nopause", "on", ">s3cret", "+@all", "-client", "~*")
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">s3cret", "+@read", "~*", "&*")

    def as_user(user: str) -> Adoption:
        login = Endpoint(redis.port, user=user, password="s3cret")
        return replace(adoption(redis, spare, tmp_path, method=method), redis=login)

    with pytest.raises(AdoptError, match=r"'nopause' may not run: CLIENT PAUSE.*PSUBSCRIBE"):
        adopt(as_user("nopause"))  # its channels too: Redis 7 gives none by default
    with pytest.raises(AdoptError, match=r"ACL user 'reader': NOPERM .*'info'"):
        adopt(as_user("reader"))
    assert admin.dbsize() == KEYS and not (tmp_path / "adopt.state").exists()
    report = adopt(as_user("mover"))
    assert report.method == ("replication" if method == "auto" else "copy")
    assert valkey.Valkey(port=redis.port).dbsize() == KEYS
