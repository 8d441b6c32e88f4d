"""The message queue on a real cache instance: a killed worker loses no message."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
import valkey

from valkey_plans.client import functions
from valkey_plans.client.cache import MESSAGE_LRU, MessageQueue
from valkey_plans.client.schema import MESSAGE_DELIVERIES
from valkey_plans.keys import new_key

ACKED = "test:acked"  # kept on another db so the queue db holds only the queue
TOOK = "test:took"


@pytest.fixture
def server(valkey_factory):
    server = valkey_factory("cache", databases="4", maxmemory_policy="volatile-lru")
    functions.ensure_loaded(server.client())
    return server


def queue_on(port: int) -> MessageQueue:
    client = valkey.Valkey(port=port, db=3)
    return MessageQueue(client, valkey.Valkey(port=port, db=3), cap=5, ttl=3600)


def _worker(port: int, hang_after: int) -> None:
    """Acks `hang_after` jobs, then takes one more and hangs in it (to be SIGKILLed)."""
    queue, log = queue_on(port), valkey.Valkey(port=port, db=0)
    done = 0
    while True:
        item = queue.take(timeout=5)
        if item is None:
            return
        if done == hang_after:
            log.set(TOOK, item.key)
            time.sleep(3600)
        queue.ack(item)
        log.sadd(ACKED, item.key)
        done += 1


def test_killed_worker_loses_no_message(server) -> None:
    queue, log = queue_on(server.port), server.client(db=0)
    sent = {queue.enqueue({"to": f"user{n}@example.com", "n": n}) for n in range(20)}
    assert queue.pending() == 20
    # the msg: copies are bounded at cap 5; the queue still holds all 20 envelopes
    assert server.client(db=3).zcard(MESSAGE_LRU) == 5

    worker = multiprocessing.get_context("fork").Process(target=_worker, args=(server.port, 3))
    worker.start()
    deadline = time.monotonic() + 10
    while log.get(TOOK) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    hung = log.get(TOOK)
    assert hung is not None, "worker never took its fourth message"
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    assert worker.exitcode == -signal.SIGKILL
    assert queue.processing() == 1

    assert queue.recover(min_idle=3600) == 0  # first sighting only stamps the job
    assert queue.recover(min_idle=0) == 1
    while (item := queue.take(timeout=0.1)) is not None:
        assert queue.ack(item) is True
        log.sadd(ACKED, item.key)
    assert {k.decode() for k in log.smembers(ACKED)} == sent
    assert hung.decode() in sent
    assert (queue.pending(), queue.processing()) == (0, 0)
    assert server.client(db=3).zcard(MESSAGE_LRU) == 0  # acked messages leave transit


def test_live_worker_keeps_its_job_until_min_idle(server) -> None:
    queue = queue_on(server.port)
    key = queue.enqueue({"n": 1}, key=new_key("msg"))
    item = queue.take(timeout=1)
    assert item is not None and item.key == key and item.body == {"n": 1}
    assert queue.get(key) == {"n": 1}
    assert queue.recover(min_idle=3600) == 0
    assert queue.recover(min_idle=3600) == 0  # stamped, but not idle long enough
    assert queue.processing() == 1
    assert queue.ack(item) is True
    assert queue.ack(item) is False
    assert queue.take(timeout=0.05) is None


def test_a_late_ack_after_recovery_removes_only_its_own_delivery(server) -> None:
    """A slow worker acks after recover() put its job back: the job stays pending, its
    msg: record stays, and the next delivery (retry 1) is the one whose ack ends it."""
    queue = queue_on(server.port)
    key = queue.enqueue({"n": 1})
    slow = queue.take(timeout=1)
    assert slow is not None and slow.retry == 0
    assert queue.recover(min_idle=0) == 1  # the slow worker looks dead: job put back
    assert queue.ack(slow) is False  # its delivery is gone: nothing of the next one goes
    assert (queue.pending(), queue.processing()) == (1, 0)
    assert queue.get(key) == {"n": 1}  # the readable copy survives
    again = queue.take(timeout=1)
    assert again is not None and (again.key, again.body, again.retry) == (key, {"n": 1}, 1)
    assert queue.ack(slow) is False  # still not the slow worker's: no effect
    assert queue.get(key) == {"n": 1}
    assert queue.ack(again) is True
    assert queue.get(key) is None and queue.take(timeout=0.05) is None
    assert server.client(db=3).hlen(MESSAGE_DELIVERIES) == 0


def test_two_deliveries_keep_the_record_until_the_last_ack(server) -> None:
    """Recovered twice while both workers still run: each ack removes its own delivery."""
    queue = queue_on(server.port)
    key = queue.enqueue({"n": 2})
    first = queue.take(timeout=1)
    assert queue.recover(min_idle=0) == 1
    second = queue.take(timeout=1)
    assert first is not None and second is not None and first.envelope != second.envelope
    assert queue.recover(min_idle=0) == 1
    third = queue.take(timeout=1)
    assert third is not None and third.retry == 2
    assert [queue.ack(item) for item in (second, first)] == [False, False]
    assert queue.get(key) == {"n": 2}
    assert queue.ack(third) is True and queue.get(key) is None


def test_a_dead_workers_job_is_processed_by_another(server) -> None:
    """SIGKILL mid-job, recover, and a second worker process takes and acks it."""
    queue, log = queue_on(server.port), server.client(db=0)
    key = queue.enqueue({"n": 3})
    ctx = multiprocessing.get_context("fork")
    dead = ctx.Process(target=_worker, args=(server.port, 0))
    dead.start()
    deadline = time.monotonic() + 10
    while log.get(TOOK) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.get(TOOK) == key.encode()
    os.kill(dead.pid, signal.SIGKILL)
    dead.join()
    assert queue.recover(min_idle=0) == 1
    assert queue.get(key) == {"n": 3}  # the record stayed while the job was put back
    other = ctx.Process(target=_worker, args=(server.port, 10))
    other.start()
    other.join(timeout=20)
    assert other.exitcode == 0
    assert set(log.smembers(ACKED)) == {key.encode()}
    assert (queue.pending(), queue.processing()) == (0, 0) and queue.get(key) is None
