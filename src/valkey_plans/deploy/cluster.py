"""Valkey Cluster, formed by Valkey's own tool: `valkey-cli --cluster create / add-node`.

The deploy never shards by itself. A fact reads the cluster as one node sees it
(CLUSTER INFO + CLUSTER NODES); the operation creates the cluster when every node is
still empty, changes nothing when every planned node is already a member, and adds
the nodes a grown inventory brings (then rebalances slots onto the new primaries).
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import FactBase, OperationError, StringCommand, operation

from valkey_plans.deploy.functions import valkey_cli

SEPARATOR = "--- nodes ---"


class ClusterView(FactBase[dict]):
    """The cluster as one node sees it: state, slots, members.

    + socket: unix socket of the node to ask
    + auth_file: root-only file with the admin password (None without ACLs)
    """

    def command(self, socket: str, auth_file: str | None = None) -> StringCommand:
        return StringCommand(
            valkey_cli(None, "CLUSTER", "INFO", socket=socket, auth_file=auth_file),
            f"&& echo '{SEPARATOR}' &&",
            valkey_cli(None, "CLUSTER", "NODES", socket=socket, auth_file=auth_file),
        )

    def process(self, output: list[str]) -> dict:
        info: dict[str, str] = {}
        members = []
        in_nodes = False
        for line in output:
            if line.strip() == SEPARATOR:
                in_nodes = True
            elif not in_nodes and ":" in line:
                key, _, value = line.strip().partition(":")
                info[key] = value
            elif in_nodes and line.strip():
                fields = line.split()
                members.append(
                    {
                        "id": fields[0],
                        "address": fields[1].split("@")[0],
                        "flags": fields[2].split(","),
                        "primary_id": fields[3],
                        "slots": fields[8:],
                    }
                )
        if "cluster_state" not in info:
            raise ValueError(f"not a cluster node (CLUSTER INFO said {output[:2]!r})")
        return {
            "state": info["cluster_state"],
            "slots_assigned": int(info.get("cluster_slots_assigned", 0)),
            "known_nodes": int(info.get("cluster_known_nodes", 0)),
            "members": members,
        }


def _cli_parts(args: tuple[str, ...], auth_file: str | None) -> list[str]:
    """valkey-cli by address (the --cluster tools talk TCP to every node), as admin."""
    login = [f'REDISCLI_AUTH="$(cat {auth_file})"', "valkey-cli", "--no-auth-warning"]
    return [*login, "--user", "admin", *args] if auth_file else ["valkey-cli", *args]


def _wait_ok(addresses: list[str], auth_file: str | None) -> StringCommand:
    """Wait until every node says cluster_state:ok (up to 60 s each).

    `--cluster create` and `rebalance` return once the slots are assigned, but nodes
    that saw a minority partition while the cluster formed wait out a rejoin delay
    before they serve: without this wait, a deploy that just formed the cluster would
    hand over (and a rerun would find) a cluster whose state is still 'fail'.
    """
    probes = []
    for address in addresses:
        node, port = address.rsplit(":", 1)
        info = " ".join(_cli_parts(("-h", node, "-p", port, "CLUSTER", "INFO"), auth_file))
        probes.append(
            f"i=0; until {info} 2>/dev/null | grep -q '^cluster_state:ok'; do i=$((i+1));"
            f" [ $i -gt 120 ] && {{ echo '{address}: cluster_state is not ok'; exit 1; }};"
            " sleep 0.5; done"
        )
    return StringCommand("; ".join(probes))


def plan_growth(missing: list[tuple[str, str]], replicas: int) -> list[tuple[str, str | None]]:
    """(address, primary address or None) for each new node: which become primaries.

    `missing` holds (host, address) in plan order. One node per new host becomes a
    primary, as many as the new nodes can carry replicas for; the others become
    replicas of a new primary on another host when there is one.
    """
    count = max(1, len(missing) // (replicas + 1))
    primaries: list[tuple[str, str]] = []
    for item in missing:
        if len(primaries) < count and item[0] not in {h for h, _ in primaries}:
            primaries.append(item)
    roles: list[tuple[str, str | None]] = [(address, None) for _, address in primaries]
    load = {address: 0 for _, address in primaries}
    for node_host, address in missing:
        if (node_host, address) in primaries:
            continue
        elsewhere = [(h, a) for h, a in primaries if h != node_host] or primaries
        target = min(elsewhere, key=lambda p: load[p[1]])[1]
        load[target] += 1
        roles.append((address, target))
    return roles


@operation()
def cluster_formed(
    addresses: list[str],
    hosts: list[str],
    replicas: int,
    socket: str,
    auth_file: str | None = None,
) -> Generator[StringCommand, None, None]:
    """
    Form (or grow) a Valkey Cluster from the planned nodes, with valkey-cli --cluster.

    + addresses: "ADDRESS:PORT" of every planned node, in plan order
    + hosts: the inventory host of each node (same order), to keep replicas off their
      primary's host when nodes are added
    + replicas: replicas per primary
    + socket: unix socket of a node on this host (the one asked for the cluster's view)
    + auth_file: root-only file with the admin password (None without ACLs)

    **Example:**

    .. code:: python

        cluster_formed(
            name="Valkey Cluster main",
            addresses=["10.0.0.1:7000", "10.0.0.1:7001", ...],
            hosts=["db-1", "db-1", ...],
            replicas=1,
            socket="/run/valkey-n0/valkey-server.sock",
        )
    """
    view = host.get_fact(ClusterView, socket=socket, auth_file=auth_file)
    members = {m["address"] for m in view["members"]}
    if view["known_nodes"] <= 1 and view["slots_assigned"] == 0:
        yield StringCommand(
            *_cli_parts(
                (
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ),
                auth_file,
            )
        )
        yield _wait_ok(addresses, auth_file)
        return
    missing = [(h, a) for h, a in zip(hosts, addresses, strict=True) if a not in members]
    if not missing:
        if view["state"] != "ok":
            raise OperationError(
                f"cluster has every planned node but its state is {view['state']!r}: check"
                " `valkey-cli --cluster check` before deploying again"
            )
        host.noop(f"cluster of {len(addresses)} nodes is formed and ok")
        return
    existing = next(a for a in addresses if a in members)
    for address, primary in plan_growth(missing, replicas):
        if primary is None:
            yield StringCommand(
                *_cli_parts(("--cluster", "add-node", address, existing), auth_file)
            )
        else:
            host_, port = primary.rsplit(":", 1)
            myid = " ".join(_cli_parts(("-h", host_, "-p", port, "CLUSTER", "MYID"), auth_file))
            yield StringCommand(
                *_cli_parts(
                    (
                        "--cluster",
                        "add-node",
                        address,
                        existing,
                        "--cluster-slave",
                        "--cluster-master-id",
                    ),
                    auth_file,
                ),
                f'"$({myid})"',
            )
    check = " ".join(_cli_parts(("--cluster", "check", existing), auth_file))
    # add-node returns before gossip has spread; rebalance needs nodes that agree
    wait = "i=0; until {} >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 60 ] && exit 1; sleep 0.5; done"
    yield StringCommand(wait.format(check))
    yield StringCommand(
        *_cli_parts(
            ("--cluster", "rebalance", existing, "--cluster-use-empty-masters", "--cluster-yes"),
            auth_file,
        )
    )
    yield _wait_ok(addresses, auth_file)
