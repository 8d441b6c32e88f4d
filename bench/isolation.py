"""API GET latency alone, beside a waiting blocking client, and beside a background bulk delete.

Run: .venv/bin/python bench/isolation.py [--rounds 3] [--keys 100000] [--batch 100] [--nice 19 0]

Starts its own valkey-server on a free port. Each round fills --keys keys, then
cycles through the scenarios in short blocks of --block GETs until the background
worker has deleted all of them:

- raw valkey-py GET: a plain `valkey.Valkey`, the baseline, nothing else running;
- api alone: the `api` workload client, nothing else running;
- api + blocking waiting: while `blocking` sits in BLPOP;
- api + background delete: while `background`, in its own process as a worker would
  be, deletes keys in pipelines of --batch DELs;
- api + CPU-only neighbour: while a process spins in pure Python without touching
  Valkey, a control that shows how much of the background figure is this machine's
  CPU contention (2 cores: server, api and worker) rather than the server.

Alternating short blocks keeps all scenarios under the same ambient load (a shared
machine drifts within seconds), so the ratios compare scenarios, not moments.
One table per --nice value of the worker and the control: at nice 19 (a background
job's usual priority) the table shows what the server does to the api; at nice 0 on
a 2-core machine it mostly shows the CPU scheduler, as the control row proves.
Prints median p50/p99 over the rounds and the ratios. Goal: p99 with background
load <= 1.5x the p99 of api alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import valkey  # noqa: E402

from tests.valkey_server import ValkeyProcess  # noqa: E402
from valkey_plans.client.clients import Clients  # noqa: E402
from valkey_plans.client.settings import TierSettings  # noqa: E402

HOT_KEY = "usr:hot"
QUEUE = "never-filled"
SCENARIOS = (
    "raw valkey-py GET",
    "api alone",
    "api + blocking waiting",
    "api + background delete",
    "api + CPU-only neighbour",
)


def latencies(get: Callable[[str], object], count: int) -> list[float]:
    """Microseconds per GET of one hot key."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        get(HOT_KEY)
        samples.append((clock() - start) / 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill(client: valkey.Valkey, keys: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"bulk:{i}", "x")
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


PAUSED, RUNNING, DONE = 0, 1, 2


class Pausable:
    """A neighbour process that works only between `run()` and `pause()`.

    Both calls wait for the neighbour to acknowledge through a shared state value, so
    a measurement block never starts before the neighbour really runs or really rests.
    """

    def __init__(self, nice: int, target: Callable[..., None], *args: object) -> None:
        self.go = multiprocessing.Event()
        self.state: Synchronized = multiprocessing.Value("i", PAUSED)
        self.process = multiprocessing.Process(
            target=_niced, args=(nice, target, *args, self.go, self.state)
        )
        self.process.start()

    def _await(self, wanted: int) -> None:
        while self.state.value not in (wanted, DONE):
            time.sleep(0.0001)

    def run(self) -> None:
        self.go.set()
        self._await(RUNNING)

    def pause(self) -> None:
        self.go.clear()
        self._await(PAUSED)

    def stop(self) -> None:
        self.go.set()
        self.process.join()


def _niced(nice: int, target: Callable[..., None], *args: object) -> None:
    os.nice(nice)
    target(*args)


def _step(go: Event, state: Synchronized) -> None:
    """Called by a neighbour between units of work: rest while paused, then say so."""
    if not go.is_set():
        state.value = PAUSED
        while not go.wait(0.5):
            pass
    state.value = RUNNING


def delete_keys(
    port: int, keys: int, batch: int, deleted: Synchronized, go: Event, state: Synchronized
) -> None:
    """The background workload: its own process and client, pipelines of DELs."""
    with Clients(TierSettings(app="bench", port=port)) as clients:
        background = clients.background
        background.ping()
        for first in range(0, keys, batch):
            _step(go, state)
            pipe = background.pipeline(transaction=False)
            for i in range(first, min(first + batch, keys)):
                pipe.delete(f"bulk:{i}")
            pipe.execute()
            deleted.value = min(first + batch, keys)
    state.value = DONE


def spin(stop: Event, go: Event, state: Synchronized) -> None:
    """CPU load without Valkey: the control for the background scenario."""
    n = 0
    while not stop.is_set():
        _step(go, state)
        for i in range(10_000):
            n += i
    state.value = DONE


def measure_round(
    clients: Clients, raw: valkey.Valkey, server: ValkeyProcess, args: argparse.Namespace, nice: int
) -> dict[str, list[float]]:
    api = clients.api
    samples: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    fill(raw, args.keys)
    deleted = multiprocessing.Value("i", 0)
    worker = Pausable(nice, delete_keys, server.port, args.keys, args.batch, deleted)
    stop_spinning = multiprocessing.Event()
    spinner = Pausable(nice, spin, stop_spinning)
    worker.pause()
    spinner.pause()

    def blocked() -> bool:
        return any("b" in c["flags"] for c in raw.client_list() if c["name"] == "bench:blocking")

    try:
        while deleted.value < args.keys:
            samples["raw valkey-py GET"] += latencies(raw.get, args.block)
            samples["api alone"] += latencies(api.get, args.block)

            waiter = threading.Thread(target=clients.blocking.blpop, args=(QUEUE, args.max_wait))
            waiter.start()
            while not blocked():
                time.sleep(0.0005)
            samples["api + blocking waiting"] += latencies(api.get, args.block)
            raw.rpush(QUEUE, "wake")
            waiter.join()

            worker.run()
            samples["api + background delete"] += latencies(api.get, args.block)
            worker.pause()

            spinner.run()
            samples["api + CPU-only neighbour"] += latencies(api.get, args.block)
            spinner.pause()
    finally:
        stop_spinning.set()
        spinner.stop()
        worker.stop()
    if raw.dbsize() != 1:
        raise SystemExit(f"background delete left {raw.dbsize() - 1} keys")
    return samples


def report(rounds: list[dict[str, list[float]]], args: argparse.Namespace, nice: int) -> None:
    print(
        f"\nbackground worker and CPU control at nice {nice}: {args.rounds} rounds of "
        f"{args.keys} DELs in pipelines of {args.batch};\nscenarios alternate in blocks of "
        f"{args.block} GETs; medians of per-round percentiles (us)"
    )
    print(f"{'scenario':26} {'samples':>8} {'p50':>7} {'p99':>7} {'p99/alone':>10}")
    medians = {
        name: (
            statistics.median(percentile(r[name], 0.50) for r in rounds),
            statistics.median(percentile(r[name], 0.99) for r in rounds),
        )
        for name in SCENARIOS
    }
    alone_p50, alone_p99 = medians["api alone"]
    for name, (p50, p99) in medians.items():
        samples = statistics.median(len(r[name]) for r in rounds)
        print(f"{name:26} {samples:8.0f} {p50:7.1f} {p99:7.1f} {p99 / alone_p99:10.2f}")
    raw_p50, raw_p99 = medians["raw valkey-py GET"]
    print(
        f"api alone vs raw valkey-py: p50 {alone_p50 / raw_p50:.2f}x, "
        f"p99 {alone_p99 / raw_p99:.2f}x"
    )
    ratio = medians["api + background delete"][1] / alone_p99
    print(
        f"goal p99(background) <= 1.5 x p99(alone): {ratio:.2f}x "
        f"{'met' if ratio <= 1.5 else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100_000, help="keys the background deletes")
    parser.add_argument("--batch", type=int, default=100, help="DELs per background pipeline")
    parser.add_argument("--block", type=int, default=200, help="GETs per scenario block")
    parser.add_argument(
        "--nice",
        type=int,
        nargs="+",
        default=[19, 0],
        help="niceness of the background worker and the CPU control; one table per value",
    )
    parser.add_argument("--max-wait", type=float, default=10.0, help="BLPOP timeout (s)")
    args = parser.parse_args()

    results: dict[int, list[dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyProcess(Path(tmp)).start()
        try:
            raw = server.client()
            raw.set(HOT_KEY, "x" * 100)
            with Clients(
                TierSettings(app="bench", port=server.port), max_block=args.max_wait
            ) as clients:
                latencies(clients.api.get, 1000)  # warm up both pools
                latencies(raw.get, 1000)
                for nice in args.nice:
                    results[nice] = [
                        measure_round(clients, raw, server, args, nice) for _ in range(args.rounds)
                    ]
        finally:
            server.stop()
    print(f"valkey-py {valkey.__version__}, valkey-server on a free port, {os.cpu_count()} CPUs")
    for nice, rounds in results.items():
        report(rounds, args, nice)


if __name__ == "__main__":
    main()
