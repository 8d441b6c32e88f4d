"""Backup and restore against the raw steps by hand, and api GETs while a replica is backed up.

Run: .venv/bin/python bench/backup.py [--keys 1000000] [--rounds 3] [--seconds 10]

Everything is real and local: valkey-server, restic, the runner the deploy installs
(templates/valkey-plans-backup.sh) and the restore of valkey_plans.backup.restore.

1. Backup of --keys keys (20-byte strings): the runner (BGSAVE, wait, valkey-check-rdb,
   a throwaway load counting keys, restic backup, forget --prune) against the raw steps
   (BGSAVE + wait + `restic backup` of the file); each into a fresh repository, so that
   neither gains from the other's deduplication; the order alternates per round.
2. Restore of that snapshot into a stopped-and-started instance: the restore (restic
   check, dump, valkey-check-rdb, format, throwaway load, move aside, start, verify)
   against raw stop + copy of the RDB + start.
3. p99 of GETs on a primary for --seconds while the runner backs up its replica,
   against the same with no backup.

Prints each figure, then the median ratio over rounds. Goals (issue 12): backup <= 1.2x,
restore <= 1.5x, p99 during a replica's backup <= 1.2x idle.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server.backup_helpers import RUNNER, instance_with_repository, restic  # noqa: E402
from tests.server.test_restore import ConfInstance  # noqa: E402
from tests.valkey_server import ValkeyProcess  # noqa: E402
from valkey_plans.backup.host import HostShell  # noqa: E402
from valkey_plans.backup.restore import restore  # noqa: E402


class Factory:
    """valkey_factory outside pytest: servers in one directory, all stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root, self.started = root, []

    def __call__(self, name: str = "valkey", **config: str) -> ValkeyProcess:
        proc = ValkeyProcess(self.root / f"{name}-{len(self.started)}", **config).start()
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.started:
            proc.stop()


def fill(client, keys: int) -> None:
    for start in range(0, keys, 10000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(keys, start + 10000)):
            pipe.set(f"usr:{i}", "x" * 20)
        pipe.execute()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_backup(server: ValkeyProcess, settings, repo: str) -> None:
    client = server.client()
    before = client.info("persistence")["rdb_saves"]
    client.bgsave()
    while True:
        info = client.info("persistence")
        if info["rdb_saves"] > before and not info["rdb_bgsave_in_progress"]:
            break
        time.sleep(0.1)
    restic(settings, "backup", "--quiet", settings.rdb, repo=repo)


def runner_backup(settings, tmp: Path) -> None:
    env_file = tmp / "bench.env"
    env_file.write_text(settings.env_file())
    subprocess.run(["sh", str(RUNNER), str(env_file)], check=True, capture_output=True)


def fresh_repo(settings, tmp: Path, label: str) -> str:
    repo = str(tmp / f"repo-{label}-{time.monotonic_ns()}")
    restic(settings, "init", repo=repo)
    return repo


def backup_round(server, settings, tmp: Path, order: int) -> tuple[float, float, str]:
    """(runner seconds, raw seconds, the runner's repository)."""
    results: dict[str, float] = {}
    runner_repo = fresh_repo(settings, tmp, "runner")
    raw_repo = fresh_repo(settings, tmp, "raw")
    steps = {
        "runner": lambda: runner_backup(replace(settings, repositories=[runner_repo]), tmp),
        "raw": lambda: raw_backup(server, settings, raw_repo),
    }
    for name in sorted(steps, reverse=bool(order % 2)):
        results[name] = timed(steps[name])
    return results["runner"], results["raw"], runner_repo


def restore_round(settings, tmp: Path, repo: str, target: ConfInstance, n: int):
    tsettings = replace(
        settings,
        socket=target.sock,
        config=str(target.conf),
        rdb=str(target.dir / "dump-target.rdb"),
        data_dir=str(target.dir),
        staging=str(tmp / "staging-restore"),
        stop=target.stop,
        start=target.start,
    )
    ours = timed(lambda: restore(HostShell(), tsettings, repo, None, f"r{n}", lambda _: None))

    def raw() -> None:
        target.down()
        subprocess.run(["cp", settings.rdb, tsettings.rdb], check=True)
        target.up()
        while target.client().info("persistence")["loading"]:
            time.sleep(0.05)

    return ours, timed(raw)


def gets(client, seconds: float) -> list[float]:
    """Latency of GETs on existing keys, back to back, for `seconds` (microseconds)."""
    out, i = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        client.get(f"usr:{i % 1000}")
        out.append((time.perf_counter() - start) * 1e6)
        i += 1
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def replica_round(
    primary, replica_settings, tmp: Path, seconds: float, order: int
) -> tuple[float, float]:
    """(p99 while the replica is backed up, p99 idle), GETs on the primary; the idle
    phase comes first in even rounds, last in odd ones."""
    client = primary.client()
    idle = p99(gets(client, seconds)) if order % 2 == 0 else None
    done = threading.Event()

    def backups() -> None:
        while not done.is_set():
            runner_backup(replica_settings, tmp)

    worker = threading.Thread(target=backups)
    worker.start()
    time.sleep(0.5)
    busy = p99(gets(client, seconds))
    done.set()
    worker.join()
    if idle is None:
        idle = p99(gets(client, seconds))
    return busy, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        factory = Factory(tmp)
        try:
            run(factory, tmp, args)
        finally:
            factory.stop()


def run(factory: Factory, tmp: Path, args: argparse.Namespace) -> None:
    server, settings = instance_with_repository(factory, tmp, "main")
    fill(server.client(), args.keys)
    target = ConfInstance(tmp, "target", appendonly=False).up()
    ratios: dict[str, list[float]] = {"backup": [], "restore": [], "p99": []}
    try:
        for n in range(args.rounds):
            ours, raw, repo = backup_round(server, settings, tmp, n)
            print(f"round {n}: backup runner {ours:.2f} s, raw {raw:.2f} s, {ours / raw:.2f}x")
            ratios["backup"].append(ours / raw)
            ours, raw = restore_round(settings, tmp, repo, target, n)
            print(
                f"round {n}: restore {ours:.2f} s, raw stop+copy+start {raw:.2f} s,"
                f" {ours / raw:.2f}x"
            )
            ratios["restore"].append(ours / raw)
    finally:
        target.down()
    replica = factory(
        "replica",
        unixsocket=str(tmp / "replica.sock"),
        dbfilename="dump-replica.rdb",
        replicaof=f"127.0.0.1 {server.port}",
    )
    while replica.client().info("replication").get("master_link_status") != "up":
        time.sleep(0.1)
    rsettings = replace(
        settings,
        instance="replica",
        socket=str(tmp / "replica.sock"),
        rdb=str(replica.workdir / "dump-replica.rdb"),
        staging=str(tmp / "staging-replica"),
    )
    restic(rsettings, "init", repo=str(tmp / "repo" / "replica"))
    rsettings = replace(rsettings, repositories=[str(tmp / "repo" / "replica")])
    for n in range(args.rounds):
        busy, idle = replica_round(server, rsettings, tmp, args.seconds, n)
        print(
            f"round {n}: primary GET p99 {busy:.0f} us during replica backups,"
            f" {idle:.0f} us idle, {busy / idle:.2f}x"
        )
        ratios["p99"].append(busy / idle)
    goals = {"backup": 1.2, "restore": 1.5, "p99": 1.2}
    for key, values in ratios.items():
        median = statistics.median(values)
        verdict = "ok" if median <= goals[key] else "ABOVE GOAL"
        print(f"median {key} ratio {median:.2f}x (goal <= {goals[key]}x): {verdict}")


if __name__ == "__main__":
    main()
