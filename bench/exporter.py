"""api GET latency with the exporter scraping every 15 s, against no scraping, in one run.

Run: .venv/bin/python bench/exporter.py [--seconds 30] [--rounds 3] [--scrape-every 15]

Starts a throwaway valkey-server (cache role, the rendered aclfile, 20,000 keys over the
4 cache dbs) and Debian's prometheus-redis-exporter with the environment the deploy
renders for it (the `exporter` ACL user). Each round measures GETs on one connection for
--seconds without scraping, then for --seconds while a thread scrapes /metrics every
--scrape-every seconds (the first scrape at once, so every phase holds at least one).
Prints p50/p99 per phase and the median over rounds of the p99 ratio.

Goal (issue 16): p99 with scraping <= 1.05x without.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import SecretStr  # noqa: E402

from tests.valkey_server import ValkeyProcess, free_port  # noqa: E402
from valkey_plans.plan import Plan  # noqa: E402
from valkey_plans.plan.render import acl_file, exporter_environment  # noqa: E402
from valkey_plans.plan.secrets import ACL_USERS, EXPORTER_USER  # noqa: E402

EXPORTER = "/usr/bin/prometheus-redis-exporter"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(client, seconds: float) -> list[float]:
    """Latency of GETs on existing keys, back to back, for `seconds` (microseconds)."""
    out, keys, i = [], [f"k{n}" for n in range(1000)], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        client.get(keys[i % 1000])
        out.append((time.perf_counter() - start) * 1e6)
        i += 1
    return out


def scraping(url: str, every: float, stop: threading.Event, count: list[int]) -> None:
    while not stop.is_set():
        urllib.request.urlopen(url, timeout=10).read()
        count[0] += 1
        stop.wait(every)


def start_exporter(plan: Plan, passwords: dict[str, SecretStr], port: int) -> subprocess.Popen:
    env = exporter_environment(plan, plan.instances[0], passwords[EXPORTER_USER])
    proc = subprocess.Popen(
        [EXPORTER], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/metrics"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the exporter never answered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scrape-every", type=float, default=15)
    args = parser.parse_args()
    passwords = {u: SecretStr(secrets.token_urlsafe(24)) for u in (*ACL_USERS, EXPORTER_USER)}
    port = free_port()
    exporter_port = next(p for p in iter(free_port, None) if p > port)
    data = {
        "valkey_instances": [{"name": "bench", "role": "cache", "port": port}],
        "valkey_acl": True,
        "valkey_app": {"cache_instance": "bench"},
        "valkey_exporter": {"port_offset": exporter_port - port},
    }
    plan = Plan.from_host_data("@local", data)
    with tempfile.TemporaryDirectory() as tmp:
        aclfile = Path(tmp) / "users.acl"
        aclfile.write_text(acl_file(plan, plan.instances[0], passwords))
        admin = ("admin", passwords["admin"].get_secret_value())
        proc = ValkeyProcess(
            Path(tmp) / "v", port=port, login=admin, aclfile=str(aclfile), databases="4"
        )
        proc.start()
        client = proc.client(username="admin", password=admin[1])
        for db in range(4):
            dbc = proc.client(username="admin", password=admin[1], db=db)
            dbc.mset({f"k{n}": "x" * 100 for n in range(5000)})
        exporter = start_exporter(plan, passwords, exporter_port)
        url = f"http://127.0.0.1:{exporter_port}/metrics"
        ratios = []
        try:
            for round_ in range(args.rounds):
                idle = measure(client, args.seconds)
                stop, count = threading.Event(), [0]
                thread = threading.Thread(
                    target=scraping, args=(url, args.scrape_every, stop, count), daemon=True
                )
                thread.start()
                busy = measure(client, args.seconds)
                stop.set()
                thread.join()
                ratio = percentile(busy, 0.99) / percentile(idle, 0.99)
                ratios.append(ratio)
                print(
                    f"round {round_ + 1}: without p50 {percentile(idle, 0.5):.0f} us p99"
                    f" {percentile(idle, 0.99):.0f} us; with {count[0]} scrapes p50"
                    f" {percentile(busy, 0.5):.0f} us p99 {percentile(busy, 0.99):.0f} us;"
                    f" p99 ratio {ratio:.3f}x"
                )
        finally:
            exporter.terminate()
            exporter.wait(timeout=10)
            proc.stop()
    print(
        f"median p99 ratio with scraping / without: {statistics.median(ratios):.3f}x"
        " (goal <= 1.05x)"
    )


if __name__ == "__main__":
    main()
