"""Invalidation delay: a write acknowledged on store node A, until node B stops serving
the old value, over loopback in one run.

Run: .venv/bin/python bench/invalidation.py [--writes 1000]

Starts its own hosted valkey-server and two cache-role servers (library loaded as the
deploy does), two `Store` nodes with their invalidation subscribers, and for each
write: B reads the user (so it is cached locally), A saves a new version, and the
clock runs from A's acknowledgement until B's `get_user` returns the new version
(polled without sleeping). It prints the median, p99 and max, and, as the raw
baseline measured in the same run, the round trip of a bare PUBLISH reaching a
subscriber on the same server. Goal (issue 17): p99 under 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.valkey_server import ValkeyProcess  # noqa: E402
from valkey_plans.client import functions  # noqa: E402
from valkey_plans.client.cache import LocalCache  # noqa: E402
from valkey_plans.client.store import Store  # noqa: E402


def store_node(tmp: Path, hosted: ValkeyProcess, name: str) -> tuple[Store, ValkeyProcess]:
    cache = ValkeyProcess(tmp / name, databases="4", maxmemory_policy="volatile-lru").start()
    functions.ensure_loaded(cache.client())
    local = LocalCache.from_clients(*(cache.client(db=n) for n in range(4)))
    return Store(hosted.client(), local, subscriber=hosted.client(), node=name), cache


def quantiles(delays: list[float]) -> str:
    ordered = sorted(delays)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    median = statistics.median(ordered)
    return f"median {median * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, max {ordered[-1] * 1e3:.3f} ms"


def store_delays(a: Store, b: Store, writes: int) -> list[float]:
    key = a.save_user({"email": "bench@example.com", "name": "v0"})
    delays = []
    for n in range(1, writes + 1):
        b.get_user(key)  # cached on B
        a.save_user({"email": "bench@example.com", "name": f"v{n}"}, key=key)
        acked = time.perf_counter()
        while b.get_user(key)["name"] != f"v{n}":
            pass
        delays.append(time.perf_counter() - acked)
    return delays


def publish_delays(hosted: ValkeyProcess, writes: int) -> list[float]:
    """The raw floor: PUBLISH acknowledged until the subscriber has the message."""
    sub = hosted.client().pubsub()
    sub.subscribe("bench")
    sub.get_message(timeout=1)
    pub, delays = hosted.client(), []
    for n in range(writes):
        pub.publish("bench", str(n))
        acked = time.perf_counter()
        while sub.get_message(timeout=1) is None:
            pass
        delays.append(time.perf_counter() - acked)
    sub.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hosted = ValkeyProcess(Path(tmp) / "hosted").start()
        (a, ca), (b, cb) = (store_node(Path(tmp), hosted, n) for n in ("a", "b"))
        try:
            with a.running(), b.running():
                assert a.subscribed.wait(10) and b.subscribed.wait(10)
                ours = store_delays(a, b, args.writes)
            raw = publish_delays(hosted, args.writes)
        finally:
            for proc in (ca, cb, hosted):
                proc.stop()
    print(f"invalidation, {args.writes} writes: {quantiles(ours)} (goal: p99 < 5 ms)")
    print(f"raw PUBLISH -> subscriber:   {quantiles(raw)}")
    ratio = statistics.median(ours) / statistics.median(raw)
    print(f"median ratio store/raw: {ratio:.2f}x")


if __name__ == "__main__":
    main()
