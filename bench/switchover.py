"""A planned switchover under Sentinel (the upgrade's handover) against an unplanned failover.

Run: .venv/bin/python bench/switchover.py [--rounds 3] [--down-after-ms 5000]

Per round, on a fresh loopback group (tests/sentinel_group.py: a primary, two replicas,
three sentinels with `down-after-milliseconds` as given), a client writes through
Sentinel and waits for a replica (WAIT 1) after each write:

- planned: the deploy's handover (deploy/handover.py) moves the primary role; the figure is
  the longest time between two acknowledged writes, from the handover's start until the
  first write acknowledged after it ends;
- unplanned: the primary is killed (SIGKILL); the figure is the time from the kill to the
  first write acknowledged after it (the sentinels' detection plus their failover).

Goal (issue 14): the planned pause at most 1 s. Both are printed with their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sentinel_group import Writer, handed_over, start_group, until  # noqa: E402


def planned(tmp: Path, down_after_ms: int) -> float:
    group = start_group(tmp, down_after_ms)
    writer = Writer(group.sentinels[1].port).start()
    try:
        run = handed_over(group, writer, before=200)
        if run.done.returncode:
            raise SystemExit(f"the handover failed: {run.done.stdout}{run.done.stderr}")
        until(lambda: writer.after(run.end) >= 1, "a write after the handover")
        resumed = min(t for t in writer.ack_times if t > run.end)
        return writer.longest_pause(run.start, resumed)
    finally:
        writer.join()
        group.stop()


def unplanned(tmp: Path, down_after_ms: int) -> float:
    group = start_group(tmp, down_after_ms)
    writer = Writer(group.sentinels[1].port).start()
    try:
        until(lambda: len(writer.acked) >= 200, "writes before the loss")
        assert group.primary.proc is not None
        group.primary.proc.kill()
        lost = time.monotonic()
        until(lambda: writer.after(lost) >= 1, "a write after the failover", seconds=120)
        return min(t for t in writer.ack_times if t > lost) - lost
    finally:
        writer.join()
        group.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--down-after-ms", type=int, default=5000)
    args = parser.parse_args()
    pauses, failovers = [], []
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="vp-switchover-") as tmp:
            pauses.append(planned(Path(tmp) / "planned", args.down_after_ms))
        with tempfile.TemporaryDirectory(prefix="vp-switchover-") as tmp:
            failovers.append(unplanned(Path(tmp) / "unplanned", args.down_after_ms))
        print(f"round {n + 1}: planned pause {pauses[-1]:.2f} s, unplanned {failovers[-1]:.2f} s")
    pause, failover = statistics.median(pauses), statistics.median(failovers)
    print(
        f"median planned switchover pause {pause:.2f} s (goal <= 1 s:"
        f" {'met' if pause <= 1 else 'not met'}); median unplanned failover {failover:.2f} s"
        f" (down-after-milliseconds {args.down_after_ms}); ratio {pause / failover:.2f}x"
    )


if __name__ == "__main__":
    main()
