"""Adoption of a Redis against the raw operations it is made of, in one run.

Run: .venv/bin/python bench/adopt.py [--keys 1000000]

Seeds a throwaway redis-server (this machine's Redis 7: every type, a third with TTLs),
then, each against a fresh Valkey and the same data:
- raw: REPLICAOF, until the initial sync is done and the link up;
- adoption by replication (valkey_plans.adopt, a client writing all the while), with
  and without the BGSAVE on Redis that keeps its data dir current (`final_snapshot`);
- a prebuilt stream of the same writes as the logical copy, fed by `valkey-cli --pipe`;
- the logical copy (the Redis 8 path, run here against Redis 7, a client writing).
Redis is restarted from its RDB between runs (an adoption stops it). Prints the times,
the ratios, the write pause the adoption measured and the longest gap the client saw.

Goals (issue 15): adoption <= 1.3x raw REPLICAOF; logical copy <= 2x `--pipe`; the
longest write pause stated, goal under 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from valkey import ConnectionError  # noqa: E402
from valkey import Valkey as valkey_client  # noqa: E402

from tests.adopt_servers import RedisProcess, Writer, seed  # noqa: E402
from tests.valkey_server import ValkeyProcess  # noqa: E402
from valkey_plans.adopt import (  # noqa: E402
    Adoption,
    Endpoint,
    adopt,
    logical,  # noqa: E402
)
from valkey_plans.adopt.resp import Conn  # noqa: E402


def raw_replicaof(redis: RedisProcess, valkey: ValkeyProcess) -> float:
    start = time.monotonic()
    client = valkey.client()
    client.replicaof("127.0.0.1", redis.port)
    while True:
        fields = client.info("replication")
        if fields.get("master_link_status") == "up" and not fields.get("master_sync_in_progress"):
            return time.monotonic() - start
        time.sleep(0.01)


def pipe_stream(redis: RedisProcess, path: Path) -> None:
    """The writes of the logical copy, as one RESP stream (the reads are done here)."""
    out = bytearray()
    with Conn(redis.port) as conn:
        for keys in logical.scan(conn, 1000):
            meta = conn.pipeline([c for k in keys for c in (("TYPE", k), ("PEXPIRETIME", k))])
            kinds = [m.decode() for m in meta[::2]]
            values = conn.pipeline([logical.READ[t](k) for k, t in zip(keys, kinds, strict=True)])
            for key, kind, expire, value in zip(keys, kinds, meta[1::2], values, strict=True):
                cmds = logical.value_writes(kind, key, value)
                cmds += [("PEXPIREAT", key, expire)] if expire > 0 else []
                for args in cmds:
                    out += b"*%d\r\n" % len(args)
                    for arg in args:
                        raw = arg if isinstance(arg, bytes) else str(arg).encode()
                        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    path.write_bytes(bytes(out))


def run_pipe(valkey: ValkeyProcess, path: Path) -> float:
    start = time.monotonic()
    with path.open("rb") as stream:
        subprocess.run(
            ["valkey-cli", "-p", str(valkey.port), "--pipe"],
            stdin=stream,
            check=True,
            capture_output=True,
        )
    return time.monotonic() - start


def run_adoption(
    redis: RedisProcess, valkey: ValkeyProcess, method: str, snapshot: bool = True
) -> tuple[float, ...]:
    """(total s, pause the adoption measured, longest gap between the client's writes)."""
    writer = Writer(redis.port)
    writer.start()
    time.sleep(0.5)
    start = time.monotonic()
    report = adopt(
        Adoption(
            redis=Endpoint(redis.port),
            valkey=Endpoint(valkey.port),
            port=redis.port,
            databases=16,
            stop_redis=redis.stop,
            method=method,
            final_snapshot=snapshot,
            progress=lambda m: None,
        )
    )
    total = time.monotonic() - start
    time.sleep(0.5)
    writer.stop.set()
    writer.join(10)
    # Valkey now holds Redis's port; give it back for the next run.
    with contextlib.suppress(ConnectionError):
        valkey_client(port=redis.port).shutdown(nosave=True)
    return total, report.pause_s, writer.longest_gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis = RedisProcess(base / "redis", repl_diskless_sync_delay="0").start()
        seed(redis.client(), args.keys)
        redis.client().save()
        fresh = iter(range(100))

        def valkey() -> ValkeyProcess:
            return ValkeyProcess(base / f"valkey{next(fresh)}", databases="16").start()

        spare = valkey()
        raw = raw_replicaof(redis, spare)
        spare.stop()
        spare = valkey()
        adopted, pause_r, gap_r = run_adoption(redis, spare, "auto")
        redis.start()
        spare = valkey()
        bare, _, _ = run_adoption(redis, spare, "auto", snapshot=False)
        redis.start()
        stream = base / "writes.resp"
        pipe_stream(redis, stream)
        spare = valkey()
        piped = run_pipe(spare, stream)
        spare.stop()
        spare = valkey()
        copied, pause_c, gap_c = run_adoption(redis, spare, "copy")
        print(f"keys: {args.keys}")
        print(f"raw REPLICAOF full sync   {raw:8.2f} s")
        print(f"adoption by replication   {adopted:8.2f} s  ratio {adopted / raw:.2f}x (goal 1.3x)")
        print(f"  without Redis's BGSAVE  {bare:8.2f} s  ratio {bare / raw:.2f}x")
        print(f"valkey-cli --pipe stream  {piped:8.2f} s")
        print(f"logical copy adoption     {copied:8.2f} s  ratio {copied / piped:.2f}x (goal 2x)")
        print(
            f"write pause, replication: {pause_r * 1000:.0f} ms (client gap {gap_r * 1000:.0f} ms)"
        )
        print(
            f"write pause, copy:        {pause_c * 1000:.0f} ms (client gap {gap_c * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
