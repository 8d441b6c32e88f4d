"""Local cache operations against raw valkey-py GETs, on one server in one run.

Run: .venv/bin/python bench/cache.py [--seconds 0.5] [--rounds 5]

Starts its own cache-role valkey-server (4 dbs, volatile-lru) with the library
loaded the way the deploy does, then alternates each cache operation with its raw
baseline (same client, same db, same value size) for several rounds, and prints
median rates and the ratio cache/raw. Goals (issue 17): user-cache hit and session
get >= 0.95x a raw GET; 100 users in one call >= 0.9x 100 pipelined GETs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.valkey_server import ValkeyProcess  # noqa: E402
from valkey_plans.client import functions  # noqa: E402
from valkey_plans.client.cache import LocalCache, run_many  # noqa: E402
from valkey_plans.keys import new_key  # noqa: E402

RECORD = {"email": "someone@example.com", "name": "Some One", "plan": "pro", "n": 12345}
BATCH = 100


def paired_rates(
    op: Callable[[], object], raw: Callable[[], object], seconds: float, block: int
) -> tuple[float, float]:
    """Rates of `op` and `raw`, run in alternating small blocks for about `seconds`.

    Alternating often keeps both sides under the same machine load (a shared 2-core
    box drifts over a second), so the ratio measures the code, not the neighbours.
    """
    spent = {True: 0.0, False: 0.0}
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for ours, fn in ((True, op), (False, raw)):
            start = time.perf_counter()
            for _ in range(block):
                fn()
            spent[ours] += time.perf_counter() - start
        done += block
    return done / spent[True], done / spent[False]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyProcess(Path(tmp), databases="4", maxmemory_policy="volatile-lru").start()
        try:
            functions.ensure_loaded(server.client())
            clients = [server.client(db=n) for n in range(4)]
            cache = LocalCache.from_clients(*clients)
            users = [new_key("usr") for _ in range(BATCH)]
            for key in users:
                cache.users.put(key, RECORD)
                clients[1].set(f"raw:{key}", cache.users.calls.put(key, RECORD).command[4])
            session = cache.sessions.create(users[0], {"ip": "10.0.0.1", "roles": ["a"]})
            clients[2].set("raw:session", '{"ip":"10.0.0.1","roles":["a"]}')
            cache.index.link("someone@example.com", users[0])
            raw_user, raw_index = f"raw:{users[0]}", "raw:index"
            clients[0].set(raw_index, users[0])

            def batch_cache() -> object:
                return cache.users.get_many(users)

            def batch_pipelined_fcalls() -> object:
                return run_many(clients[1], (cache.users.calls.get(k) for k in users))

            def batch_raw() -> object:
                pipe = clients[1].pipeline(transaction=False)
                for key in users:
                    pipe.get(f"raw:{key}")
                return pipe.execute()

            cases: list[tuple[str, Callable[[], object], Callable[[], object], int]] = [
                (
                    "user cache hit (RPUSH+GET)",
                    lambda: cache.users.get(users[0]),
                    lambda: clients[1].get(raw_user),
                    20,
                ),
                (
                    "session get (HMGET)",
                    lambda: cache.sessions.get(session.key),
                    lambda: clients[2].get("raw:session"),
                    20,
                ),
                (
                    "index lookup (GET)",
                    lambda: cache.index.lookup("someone@example.com"),
                    lambda: clients[0].get(raw_index),
                    20,
                ),
                (f"{BATCH} users, one call", batch_cache, batch_raw, 2),
                (f"{BATCH} users, pipelined gets", batch_pipelined_fcalls, batch_raw, 2),
            ]
            print(
                f"valkey {server.client().info('server')['valkey_version']}, "
                f"{args.rounds} rounds x {args.seconds}s, medians; sessions sliding:"
                f" {cache.sessions.calls.sliding}"
            )
            print(f"{'operation':32} {'cache/s':>10} {'raw GET/s':>10} {'ratio':>6}")
            for name, op, raw, block in cases:
                ours, theirs, ratios = [], [], []
                for _ in range(args.rounds):
                    a, b = paired_rates(op, raw, args.seconds, block)
                    ours.append(a)
                    theirs.append(b)
                    ratios.append(a / b)
                print(
                    f"{name:32} {statistics.median(ours):10.0f} "
                    f"{statistics.median(theirs):10.0f} {statistics.median(ratios):6.2f}"
                )
            assert cache.users.get(users[0]) == RECORD
            assert cache.users.drain() == BATCH  # every read was logged; the set is whole
        finally:
            server.stop()


if __name__ == "__main__":
    main()
