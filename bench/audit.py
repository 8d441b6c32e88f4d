"""Keyspace audit of 1,000,000 keys against a bare `valkey-cli --scan`, on one server in one run.

Run: .venv/bin/python bench/audit.py [--keys 1000000] [--rounds 3]

Starts its own cache-role valkey-server (4 dbs), fills it through `valkey-cli --pipe`
with plan-conforming keys spread over the 4 dbs (user index entries, user records,
session hashes, messages, each with the TTL its db requires), then alternates, for
each round, the bare scan (`valkey-cli -n DB --scan --count 1000 | wc -l` over the
4 dbs) with the full audit (names, types, TTLs, index values). Prints both medians,
their ratio audit/scan, and the median of each round's ratio (the pair ran back to
back, so it drifts less with the machine's load). Goal: ratio <= 2.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import valkey  # noqa: E402

from tests.valkey_server import ValkeyProcess  # noqa: E402
from valkey_plans.keys import ALPHABET, encode_time  # noqa: E402
from valkey_plans.plan import Plan  # noqa: E402
from valkey_plans.verify.audit import audit_instance  # noqa: E402

START_US = 1_700_000_000_000_000


def resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n"]
    for arg in args:
        out.append(f"${len(arg.encode())}\r\n{arg}\r\n")
    return "".join(out).encode()


def txkey(i: int) -> str:
    """Distinct, well-formed txkeys without the cost of secrets.choice per key."""
    return encode_time(START_US + i) + ALPHABET[i % 62] * 3


def fill(port: int, per_db: int) -> None:
    """Write per_db conforming keys into each of the 4 cache dbs via valkey-cli --pipe."""
    chunks = [resp("SELECT", "0")]
    for i in range(per_db):
        chunks.append(resp("SET", f"user{i}@example.com", f"usr:{txkey(i)}"))
    chunks.append(resp("SELECT", "1"))
    for i in range(per_db):
        chunks.append(resp("SET", f"usr:{txkey(i)}", '{"name":"x"}', "PX", "3600000"))
    chunks.append(resp("SELECT", "2"))
    for i in range(per_db):
        key = f"ses:{txkey(i)}"
        chunks.append(resp("HSET", key, "owner", f"usr:{txkey(i)}", "data", "{}"))
        chunks.append(resp("PEXPIRE", key, "86400000"))
    chunks.append(resp("SELECT", "3"))
    for i in range(per_db):
        chunks.append(resp("SET", f"msg:{txkey(i)}", '{"to":"x"}', "PX", "86400000"))
    subprocess.run(
        ["valkey-cli", "-p", str(port), "--pipe"],
        input=b"".join(chunks),
        check=True,
        capture_output=True,
    )


def bare_scan(port: int) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run(
        f"for db in 0 1 2 3; do valkey-cli -p {port} -n $db --scan --count 1000; done | wc -l",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start, int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    per_db = args.keys // 4

    plan = Plan.from_host_data(
        "bench",
        {
            "valkey_instances": [
                {
                    "name": "cache",
                    "role": "cache",
                    "port": 6379,
                    "cache_dbs": {  # caps above the fill, so the data conforms
                        "user_index": {"db": 0},
                        "user_cache": {"db": 1, "cap": 1_000_000, "ttl": 3600},
                        "session_cache": {"db": 2, "ttl": 86400},
                        "message_queue": {"db": 3, "cap": 1_000_000, "ttl": 86400},
                    },
                }
            ],
        },
    )
    inst = plan.instances[0]
    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyProcess(Path(tmp), databases="4", maxmemory_policy="volatile-lru").start()
        try:
            start = time.perf_counter()
            fill(server.port, per_db)
            print(f"filled {4 * per_db} keys in {time.perf_counter() - start:.1f}s")
            clients = {db: valkey.Valkey(port=server.port, db=db) for db in range(4)}
            scans, audits = [], []
            for round_ in range(args.rounds):
                scan_s, scanned = bare_scan(server.port)
                start = time.perf_counter()
                report = audit_instance(plan, inst, clients.__getitem__)
                audit_s = time.perf_counter() - start
                audited = sum(d.keys for d in report.dbs.values())
                assert scanned == audited == 4 * per_db, (scanned, audited)
                assert report.ok, report.verdict()
                scans.append(scan_s)
                audits.append(audit_s)
                print(
                    f"round {round_ + 1}: scan {scan_s:.2f}s  audit {audit_s:.2f}s  "
                    f"ratio {audit_s / scan_s:.2f}"
                )
        finally:
            server.stop()
    scan_m, audit_m = statistics.median(scans), statistics.median(audits)
    paired = statistics.median(a / b for a, b in zip(audits, scans, strict=True))
    print(
        f"median: bare scan {scan_m:.2f}s, full audit {audit_m:.2f}s, "
        f"ratio {audit_m / scan_m:.2f}; median of the rounds' ratios {paired:.2f} (goal <= 2.00)"
    )


if __name__ == "__main__":
    main()
