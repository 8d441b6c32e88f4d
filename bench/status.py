"""`valkey-plans status` refresh time and its own load, against a 6-node Valkey Cluster.

Run: .venv/bin/python bench/status.py [--nodes 6] [--refreshes 20] [--interval 1.0]

Starts --nodes throwaway valkey-server processes (cluster-enabled, free loopback ports
whose bus port +10000 is free too), joins them with `valkey-cli --cluster create
--cluster-replicas 1`, waits for cluster_state:ok, and plans them as an inventory of
hosts with two cluster nodes each (reached over loopback, as @local instances are).
A light GET/SET load runs on every node while status samples. Then it measures:

- one snapshot as `status --json` takes it (connect, baseline INFO, wait --interval,
  sample): wall time, and the time beyond the interval (the cost of status itself);
- --refreshes refreshes of one `--watch` session with no wait (interval 0): the work of
  one refresh (sampling every node in parallel, the snapshot, drawing the table), median
  and max;
- the commands status sends per instance, from INFO commandstats (CONFIG RESETSTAT
  before), for the one-shot snapshot and per steady-state refresh.

Goal (issue 16): under 1 s per refresh for 6 nodes, and the commands per refresh stated.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import valkey  # noqa: E402
from rich.console import Console  # noqa: E402

from tests.valkey_server import ValkeyProcess  # noqa: E402
from valkey_plans.plan import Plan  # noqa: E402
from valkey_plans.plan.inventory import Target  # noqa: E402
from valkey_plans.verify import status  # noqa: E402


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """Free ports p with p + 10000 (the cluster bus) free as well, none another's bus."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        taken = {*ports, *(q + 10000 for q in ports)}
        if port <= 55535 and not {port, port + 10000} & taken and _free(port + 10000):
            ports.append(port)
    return ports


def start_cluster(root: Path, count: int) -> list[ValkeyProcess]:
    nodes = []
    for port in cluster_ports(count):
        nodes.append(
            ValkeyProcess(
                root / f"node-{port}",
                port=port,
                databases="1",
                cluster_enabled="yes",
                cluster_config_file=str(root / f"node-{port}" / "nodes.conf"),
                cluster_node_timeout="5000",
            ).start()
        )
    addresses = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(
        [
            "valkey-cli",
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    deadline = time.monotonic() + 60
    for node in nodes:
        while b"cluster_state:ok" not in node.client().execute_command("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node.port}: cluster_state never became ok")
            time.sleep(0.1)
    return nodes


def targets(nodes: list[ValkeyProcess]) -> list[Target]:
    """Two cluster nodes per inventory host, as a small cluster inventory would plan them."""
    found = []
    for h in range(0, len(nodes), 2):
        host = f"node-{h // 2 + 1}"
        instances = [
            {
                "name": f"n{i}",
                "role": "cluster-node",
                "cluster": "bench",
                "port": node.port,
                "announce_ip": "127.0.0.1",
            }
            for i, node in enumerate(nodes[h : h + 2])
        ]
        plan = Plan.from_host_data(
            host,
            {
                "valkey_instances": instances,
                "valkey_app": {"hosted_instance": "n0", "cache_instance": None},
            },
        )
        found.append(Target(host, plan, "local://"))
    return found


def load(nodes: list[ValkeyProcess], stop: threading.Event) -> None:
    """A little traffic spread over the primaries' slots, so the rates are not all zero."""
    from valkey.cluster import ValkeyCluster

    client = ValkeyCluster(host="127.0.0.1", port=nodes[0].port, client_name="app:api")
    n = 0
    while not stop.is_set():
        key = f"usr:{n % 1000:012d}"
        client.set(key, b"v") if n % 4 == 0 else client.get(key)
        n += 1
    client.close()


def calls_per_instance(admins: list[valkey.Valkey]) -> dict[str, float]:
    """Calls per command averaged over the nodes (the load's GET/SET left out).

    `admins` are connected before the counters are reset, so their own handshake is
    not counted; neither is the INFO commandstats that reads the counters.
    """
    total: dict[str, int] = {}
    for admin in admins:
        for name, stats in admin.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command not in ("get", "set", "config|resetstat", "cluster|slots"):
                total[command] = total.get(command, 0) + stats["calls"]
    return {command: calls / len(admins) for command, calls in sorted(total.items())}


def reset_stats(admins: list[valkey.Valkey]) -> None:
    for admin in admins:
        admin.config_resetstat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--refreshes", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vp-bench-status-") as tmp:
        nodes = start_cluster(Path(tmp), args.nodes)
        stop = threading.Event()
        traffic = threading.Thread(target=load, args=(nodes, stop), daemon=True)
        traffic.start()
        admins = [node.client() for node in nodes]
        for admin in admins:
            admin.ping()
        time.sleep(1.0)  # the load's cluster client has connected to every primary
        try:
            report(admins, targets(nodes), args)
        finally:
            stop.set()
            traffic.join(timeout=5)
            for node in nodes:
                node.stop()


def report(admins: list[valkey.Valkey], inventory: list[Target], args: argparse.Namespace) -> None:
    reset_stats(admins)
    start = time.perf_counter()
    snap = status.snapshot(inventory, args.interval)
    one_shot = time.perf_counter() - start
    one_shot_calls = calls_per_instance(admins)
    states = {s.cluster_state for s in snap.instances}
    assert snap.ok and states == {"ok"}, (snap.to_dict(), states)
    print(f"{len(admins)} cluster nodes on {len(inventory)} hosts, cluster_state ok on all")
    print(
        f"one snapshot (status --json, --interval {args.interval:g}): {one_shot:.3f} s,"
        f" {one_shot - args.interval:.3f} s beyond the interval"
    )
    print(f"  commands per instance: {one_shot_calls}")
    with status.status_of(inventory, interval=0.0) as live:
        live.refresh()  # connections and baseline, as --watch's first refresh
        reset_stats(admins)
        times = []
        out = Console(file=io.StringIO(), width=200, force_terminal=True)
        for _ in range(args.refreshes):
            begin = time.perf_counter()
            out.print(status.table(live.refresh()))  # what --watch redraws
            times.append(time.perf_counter() - begin)
        per_refresh = {c: n / args.refreshes for c, n in calls_per_instance(admins).items()}
    print(
        f"--watch refresh (sample {len(admins)} nodes in parallel, snapshot, draw the table), over"
        f" {args.refreshes} refreshes: median {statistics.median(times) * 1000:.1f} ms,"
        f" max {max(times) * 1000:.1f} ms; goal < 1000 ms"
    )
    print(f"  commands per instance per refresh: {per_refresh}")


if __name__ == "__main__":
    main()
