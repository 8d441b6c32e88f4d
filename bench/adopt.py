"""Adoption of a Redis against the raw operations it is made of, in one run.

Run: .venv/bin/python bench/adopt.py [--keys 1000000] [--rounds 3]

Seeds a throwaway redis-server (this machine's Redis 7: every type, a third with TTLs),
then, each against a fresh Valkey and the same data:
- raw: REPLICAOF, until the initial sync is done and the link up;
- adoption by replication (valkey_plans.adopt, a client writing all the while), timed
  until Valkey serves every key, and with Redis's SAVE and stop after the switch;
- a prebuilt stream of the same writes as the logical copy, fed by `valkey-cli --pipe`;
- the logical copy (the Redis 8 path, run here against Redis 7, a client writing).
The client is a process of its own, as on a real host.
Redis is restarted from its RDB between runs (an adoption stops it). Prints the times,
the ratios, the write pause the adoption measured and the longest gap the client saw.

Goals (issue 15): adoption <= 1.3x raw REPLICAOF; logical copy <= 2x `--pipe`; the
longest write pause stated, goal under 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class WriterThread(Writer):
    """The client that writes through the switch, as a thread of this process (as the
    first figures of issue 15 were measured; it shares the GIL with the adoption)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.start()

    def finish(self) -> float:
        self.stop.set()
        self.join(10)
        return self.longest_gap


class WriterProcess:
    """The client that writes through the switch, in a process of its own (as on a real
    host: a writer thread in this process takes the GIL from the adoption)."""

    def __init__(self, port: int) -> None:
        self.stop: Any = multiprocessing.Event()
        self.out, child = multiprocessing.Pipe(duplex=False)
        self.proc = multiprocessing.Process(target=_write, args=(port, self.stop, child))
        self.proc.start()

    def finish(self) -> float:
        """Stop it; the longest gap between two acknowledged writes, in seconds."""
        self.stop.set()
        gap = self.out.recv()
        self.proc.join(10)
        return gap


def _write(port: int, stop: Any, out: Any) -> None:
    writer = Writer(port)
    writer.start()
    stop.wait()
    writer.stop.set()
    writer.join(10)
    out.send(writer.longest_gap)


WRITERS = {"thread": WriterThread, "process": WriterProcess}


def run_adoption(
    redis: RedisProcess, valkey: ValkeyProcess, method: str, writer_kind: str = "thread"
) -> tuple[float, ...]:
    """(s until Valkey serves every key, s of the whole run with Redis's SAVE and stop,
    pause the adoption measured, longest gap between the client's writes)."""
    writer = WRITERS[writer_kind](redis.port)
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
            progress=lambda m: None,
        )
    )
    whole = time.monotonic() - start
    time.sleep(0.5)
    longest_gap = writer.finish()
    # Valkey now holds Redis's port; give it back for the next run.
    with contextlib.suppress(ConnectionError):
        valkey_client(port=redis.port).shutdown(nosave=True)
    return report.total_s, whole, report.pause_s, longest_gap


def one_round(
    redis: RedisProcess, valkey: Callable[[], ValkeyProcess], base: Path, writer: str
) -> dict:
    """Every measurement once, each against a fresh Valkey and Redis's same data."""
    spare = valkey()
    raw = raw_replicaof(redis, spare)
    spare.stop()
    replicated = run_adoption(redis, valkey(), "auto", writer)
    redis.start()
    stream = base / "writes.resp"
    if not stream.exists():
        pipe_stream(redis, stream)
    spare = valkey()
    piped = run_pipe(spare, stream)
    spare.stop()
    copied = run_adoption(redis, valkey(), "copy", writer)
    redis.start()
    return {"raw": raw, "piped": piped, "replicated": replicated, "copied": copied}


def show(n: int, rounds: list[dict], writer: str) -> None:
    def med(values: list[float]) -> str:
        return f"{statistics.median(values):7.2f}" + (
            f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
        )

    raw = [r["raw"] for r in rounds]
    piped = [r["piped"] for r in rounds]
    rep = [r["replicated"] for r in rounds]
    cop = [r["copied"] for r in rounds]
    print(f"keys: {n}, rounds: {len(rounds)} (median, range), writer: {writer}")
    print(f"raw REPLICAOF full sync     {med(raw)} s")
    print(f"adoption by replication     {med([r[0] for r in rep])} s until Valkey serves")
    print(f"  with Redis's SAVE, stop   {med([r[1] for r in rep])} s")
    ratio_r = [a[0] / rd["raw"] for a, rd in zip(rep, rounds, strict=True)]
    print(f"  ratio (goal 1.3x)         {med(ratio_r)}x")
    print(f"valkey-cli --pipe stream    {med(piped)} s")
    print(f"logical copy adoption       {med([r[0] for r in cop])} s until Valkey serves")
    print(f"  with Redis's SAVE, stop   {med([r[1] for r in cop])} s")
    ratio_c = [c[0] / rd["piped"] for c, rd in zip(cop, rounds, strict=True)]
    print(f"  ratio (goal 2x)           {med(ratio_c)}x")
    print(f"write pause, replication    {med([r[2] * 1000 for r in rep])} ms (adoption's own)")
    print(f"  client's longest gap      {med([r[3] * 1000 for r in rep])} ms")
    print(f"write pause, copy           {med([r[2] * 1000 for r in cop])} ms (adoption's own)")
    print(f"  client's longest gap      {med([r[3] * 1000 for r in cop])} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--writer", choices=sorted(WRITERS), default="thread")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis = RedisProcess(base / "redis", repl_diskless_sync_delay="0").start()
        seed(redis.client(), args.keys)
        redis.client().save()
        fresh = iter(range(1000))

        def valkey() -> ValkeyProcess:
            return ValkeyProcess(base / f"valkey{next(fresh)}", databases="16").start()

        rounds = [one_round(redis, valkey, base, args.writer) for _ in range(args.rounds)]
        show(args.keys, rounds, args.writer)


if __name__ == "__main__":
    main()
