"""A lost cluster primary: first write through the client against the cluster's failover.

Run: .venv/bin/python bench/failover.py [--rounds 3] [--mode kill|stop]

Starts a 6-node Valkey Cluster on loopback (3 primaries, 3 replicas,
cluster-node-timeout 1000 ms), then per round: a writer thread writes keys of one
primary's slots through `Clients` (the tier's defaults: connect timeout 1 s, retry
budget 10 s); the primary is lost (`kill`: SIGKILL, connections refused; `stop`:
SIGSTOP, connections hang as on a vanished host's established sockets); the round
measures, from the loss, the cluster's own failover (its replica shown as primary by
another node's CLUSTER NODES) and the writer's first acknowledged write begun after
the loss. In stop mode the write in flight at the loss waits the command timeout
(`--command-timeout`, VALKEY_COMMAND_TIMEOUT) before the next one can begin: the gap is
that timeout less the failover time when it is the longer. Goal (issue 17): first write
at most the failover time + 1 s. The lost node comes back as a replica before the next
round. The lab's cluster test prints the same
figure for a host cut off the network (`cut -> first write ...`).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import valkey  # noqa: E402

from tests.valkey_server import ValkeyProcess, linked, replicated_cluster  # noqa: E402
from valkey_plans.client.clients import Clients  # noqa: E402
from valkey_plans.client.settings import load_settings  # noqa: E402
from valkey_plans.keys import new_key  # noqa: E402


def cluster(tmp: Path) -> list[ValkeyProcess]:
    return replicated_cluster(lambda name, **config: ValkeyProcess(tmp / name, **config).start())


def until(ready, limit: float = 60.0) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if ready():
                return time.monotonic()
        except (valkey.ValkeyError, OSError):
            pass
        time.sleep(0.01)
    raise SystemExit("the cluster did not settle within 60 s")


def role(node: ValkeyProcess) -> str:
    return node.client(socket_timeout=0.5).info("replication")["role"]


def one_round(nodes: list[ValkeyProcess], clients: Clients, mode: str) -> tuple[float, float]:
    """(failover s, first write s) from the loss of the primary of a fresh key's slot."""
    probe = new_key("usr")
    owner_port = clients.api.get_node_from_key(probe).port
    owner = next(n for n in nodes if n.port == owner_port)
    heir = next(n for n in nodes if n.client().info("replication").get("master_port") == owner_port)
    slot = clients.api.keyslot(probe)
    began: list[tuple[float, float]] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            key = new_key("usr")
            if clients.api.keyslot(key) != slot:
                continue
            start = time.monotonic()
            try:
                clients.api.set(key, "1")
                began.append((start, time.monotonic()))
            except valkey.ValkeyError:
                pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    until(lambda: bool(began))
    lost = time.monotonic()
    assert owner.proc is not None
    if mode == "kill":
        owner.proc.kill()
        owner.proc.wait()
    else:
        os.kill(owner.proc.pid, signal.SIGSTOP)
    promoted = until(lambda: role(heir) == "master")
    until(lambda: any(b > lost for b, _ in began))
    first = min(done for b, done in began if b > lost)
    stop.set()
    writer.join(30)
    if mode == "kill":
        owner.start()
    else:
        os.kill(owner.proc.pid, signal.SIGCONT)
    until(lambda: role(owner) == "slave" and all(linked(n) for n in nodes))
    return promoted - lost, first - lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=("kill", "stop"), default="kill")
    parser.add_argument(
        "--command-timeout",
        help="VALKEY_COMMAND_TIMEOUT of the writer (default: the tier's); in stop mode the"
        " write in flight at the loss waits this long",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nodes = cluster(Path(tmp))
        try:
            until(lambda: all(linked(n) for n in nodes))
            env = {"VALKEY_PORT": str(nodes[0].port), "VALKEY_MODE": "cluster"}
            if args.command_timeout:
                env["VALKEY_COMMAND_TIMEOUT"] = args.command_timeout
            tier = load_settings(env).hosted
            with Clients(tier) as clients:
                rounds = [one_round(nodes, clients, args.mode) for _ in range(args.rounds)]
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    os.kill(node.proc.pid, signal.SIGCONT)
                node.stop()
    for n, (failover, first) in enumerate(rounds, 1):
        gap = first - failover
        print(f"round {n}: failover {failover:.2f} s, first write {first:.2f} s ({gap:+.2f} s)")
    gap = statistics.median(first - failover for failover, first in rounds)
    print(
        f"{args.mode} (command timeout {tier.command_timeout:g} s): median first write"
        f" - failover: {gap:+.2f} s (goal: at most +1 s)"
    )


if __name__ == "__main__":
    main()
