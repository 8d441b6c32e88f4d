"""Valkey Cluster, formed by Valkey's own tool: `valkey-cli --cluster create / add-node`.

The deploy never shards by itself. A fact reads the cluster as one node sees it
(CLUSTER INFO + CLUSTER NODES); the operation creates the cluster when every node is
still empty, changes nothing when every planned node is already a member, and adds
the nodes a grown inventory brings (then rebalances slots onto the new primaries).
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from dataclasses import dataclass
from typing import Literal

from pyinfra import host
from pyinfra.api import FactBase, OperationError, QuoteString, StringCommand, operation

from valkey_plans.deploy import cluster_nodes
from valkey_plans.deploy.cluster_check import open_slots
from valkey_plans.deploy.restarts import BUSY_AWK, until
from valkey_plans.deploy.slot_move import move_finished, slot_given
from valkey_plans.deploy.valkey_cli import valkey_cli

SEPARATOR = "--- nodes ---"


class ClusterView(FactBase[dict]):
    """The cluster as one node sees it: state, slots, members.

    + socket: unix socket of the node to ask
    + auth_file: root-only file with the admin password (None without ACLs)
    """

    def command(self, socket: str, auth_file: str | None = None) -> StringCommand:
        return StringCommand(
            valkey_cli(None, "CLUSTER", "INFO", socket=socket, auth_file=auth_file),
            "&& echo",
            QuoteString(SEPARATOR),
            "&&",
            valkey_cli(None, "CLUSTER", "NODES", socket=socket, auth_file=auth_file),
        )

    def process(self, output: list[str]) -> dict:
        lines = [line.strip() for line in output]
        split = lines.index(SEPARATOR) if SEPARATOR in lines else len(lines)
        pairs = (line.partition(":") for line in lines[:split])
        info = {key: value for key, sep, value in pairs if sep}
        members = cluster_nodes.parse(lines[split + 1 :])
        if "cluster_state" not in info:
            raise ValueError(f"not a cluster node (CLUSTER INFO said {output[:2]!r})")
        return {
            "state": info["cluster_state"],
            "slots_assigned": int(info.get("cluster_slots_assigned", 0)),
            "known_nodes": int(info.get("cluster_known_nodes", 0)),
            "members": members,
        }


class OpenSlots(FactBase[dict]):
    """Slots left importing or migrating anywhere in the cluster, as `valkey-cli --cluster
    check` from one node finds them (deploy/cluster_check.py): {"move": moves cut off
    midway, with their source and target; "fix": other slots open on a primary; "stale":
    [[slot, primary address, owner id], ...] open on replicas only}.

    + address: "ADDRESS:PORT" of a member to start the check from
    + auth_file: root-only file with the admin password (None without ACLs)
    """

    default = dict

    def command(self, address: str, auth_file: str | None = None) -> StringCommand:
        # --cluster check exits non-zero when it finds a problem: its words are the fact
        return StringCommand(_cli("--cluster", "check", address, auth_file=auth_file), "|| true")

    def process(self, output: list[str]) -> dict:
        return open_slots(output)


#: How `valkey-cli --cluster check` names the slots a cut-off migration left open.
OPEN_SLOTS = "The following slots are open:"


def _cli(*args: str | StringCommand, auth_file: str | None) -> StringCommand:
    """valkey-cli as admin, its arguments naming the nodes (`-h`/`-p`, `--cluster ...`: the
    --cluster tools talk TCP to every node). Quoted like every valkey-cli call (node
    addresses come from the plan's bind and announce_ip)."""
    return valkey_cli(None, *args, auth_file=auth_file)


def _on_each_node(
    addresses: list[str],
    auth_file: str | None,
    ask: tuple[str, ...],
    holds: str,
    unless: str,
    seconds: int,
) -> StringCommand:
    """Wait, node after node, until the node's answer to `ask` passes `holds` (shell
    reading it on stdin); after `seconds` on one node, say that it still `unless`."""
    probes = []
    for address in addresses:
        node, port = address.rsplit(":", 1)
        answer = _cli("-h", node, "-p", port, *ask, auth_file=auth_file)
        probes.append(
            until(
                StringCommand(answer, "2>/dev/null |", holds),
                StringCommand("echo", QuoteString(f"{address}: {unless}")),
                seconds=seconds,
            )
        )
    return StringCommand(*probes, _separator="; ")


def _wait_ok(addresses: list[str], auth_file: str | None) -> StringCommand:
    """Wait until every node says cluster_state:ok (up to 60 s each).

    `--cluster create` and `rebalance` return once the slots are assigned, but nodes
    that saw a minority partition while the cluster formed wait out a rejoin delay
    before they serve: without this wait, a deploy that just formed the cluster would
    hand over (and a rerun would find) a cluster whose state is still 'fail'.
    """
    ok = "grep -q '^cluster_state:ok'"
    return _on_each_node(
        addresses, auth_file, ("CLUSTER", "INFO"), ok, "cluster_state is not ok", 60
    )


def _in_sync(addresses: list[str], auth_file: str | None) -> StringCommand:
    """Wait until no node loads, rewrites its AOF or syncs, and every replica is linked
    (up to 120 s each: a new replica's first sync of a large shard)."""
    settled = f"tr -d '\\r' | awk -F: {shlex.quote(BUSY_AWK)}"
    return _on_each_node(addresses, auth_file, ("INFO",), settled, "still syncing or loading", 120)


@dataclass(frozen=True)
class Step:
    """One change that grows the cluster.

    kind "primary": add `address` as an empty primary; "replica": add `address` as a
    replica of `primary`; "move": make the existing replica `address` follow `primary`.
    """

    kind: Literal["primary", "replica", "move"]
    address: str
    primary: str | None = None


def plan_growth(
    missing: list[tuple[str, str]],
    replicas: int,
    shards: dict[str, list[str]] | None = None,
    where: dict[str, str] | None = None,
    fresh: tuple[str, ...] = (),
) -> list[Step]:
    """The steps that add the `missing` nodes, keeping every replica off its primary's host.

    `missing` holds (host, address) of the new nodes in plan order; `shards` maps each
    existing primary's address to its replicas' addresses; `where` gives the inventory
    host of existing addresses. One node per new host becomes a primary, as many as the
    new nodes can carry replicas for. Every other new node replicates a new primary on
    another host; when there is none (one new host), it replicates an existing primary
    on another host instead, and one of that primary's replicas moves over to the new
    primary, so each primary keeps `replicas` replicas, all on other hosts. The steps
    come in the order to run them.
    `fresh` names existing primaries without slots (added by an earlier, interrupted
    growth): they count as new primaries and get their replicas first.
    """
    shards = {primary: list(found) for primary, found in (shards or {}).items()}
    host_of = {**(where or {}), **{address: h for h, address in missing}}
    count = max(1, (len(missing) + len(fresh)) // (replicas + 1))
    primaries: list[str] = list(fresh)
    for node_host, address in missing:
        if len(primaries) < count and node_host not in {host_of.get(p) for p in primaries}:
            primaries.append(address)
    load = {address: len(shards.get(address, [])) for address in primaries}
    added: list[Step] = [Step("primary", a) for a in primaries if a not in fresh]
    moves: list[Step] = []
    for node_host, address in missing:
        if address in load:
            continue
        needy = [p for p in primaries if load[p] < replicas] or primaries
        elsewhere = [p for p in needy if host_of.get(p) != node_host]
        if elsewhere:
            target = min(elsewhere, key=lambda p: load[p])
            load[target] += 1
            added.append(Step("replica", address, target))
            continue
        swap = next(
            (
                (old, replica, new)
                for old in sorted(shards)
                if host_of.get(old) != node_host
                for replica in sorted(shards[old])
                for new in needy
                if host_of.get(replica) != host_of.get(new)
            ),
            None,
        )
        if swap is None:  # nowhere else to go: the new primary's own host
            target = min(needy, key=lambda p: load[p])
            load[target] += 1
            added.append(Step("replica", address, target))
            continue
        old, replica, new = swap
        added.append(Step("replica", address, old))
        moves.append(Step("move", replica, new))
        shards[old] = [r for r in shards[old] if r != replica] + [address]
        load[new] += 1
    # Execution order. Valkey moves a replica on its own to a primary that serves slots
    # and has none, taking it from a primary that has two (replica migration), and it
    # picks the replica by node id, not by host. So no primary ever has two here: the
    # new primaries first (no slots yet, so none is orphaned), then the moves that give
    # them a replica, then the new replicas for the primaries that gave one away.
    primary_steps = [step for step in added if step.kind == "primary"]
    return primary_steps + moves + [step for step in added if step.kind == "replica"]


def _agreed(*parts: StringCommand) -> StringCommand:
    """Run a `valkey-cli --cluster` command, again while it finds nodes that disagree.

    add-node and rebalance first check that every node has the same view of the slots;
    right after a node joins (or gets its config epoch) gossip can briefly disagree even
    though a `--cluster check` just passed. Any other failure stops at once.
    """
    return StringCommand(
        "i=0; until out=$(",
        StringCommand(*parts),
        " 2>&1); do",
        ' echo "$out" | grep -q "Nodes don\'t agree" || { echo "$out"; exit 1; };',
        ' i=$((i+1)); [ $i -gt 60 ] && { echo "$out"; exit 1; }; sleep 0.5; done; echo "$out"',
        _separator="",
    )


def _myid(address: str, auth_file: str | None) -> StringCommand:
    """Shell substitution giving the node id of the node at `address`."""
    node, port = address.rsplit(":", 1)
    myid = _cli("-h", node, "-p", port, "CLUSTER", "MYID", auth_file=auth_file)
    return StringCommand('"$(', myid, ')"', _separator="")


def _fresh(view: dict) -> tuple[str, ...]:
    """Healthy primaries that serve no slots yet, from a ClusterView."""
    return tuple(
        m.address for m in view["members"] if m.primary and "fail" not in m.flags and not m.slots
    )


def _shards(view: dict) -> dict[str, list[str]]:
    """Healthy primary address -> its replicas' addresses, from a ClusterView."""
    by_id = {m.id: m for m in view["members"]}
    shards: dict[str, list[str]] = {}
    for member in view["members"]:
        if member.primary and "fail" not in member.flags:
            shards[member.address] = []
    for member in view["members"]:
        primary = by_id.get(member.primary_id or "")
        if primary is not None and primary.address in shards:
            shards[primary.address].append(member.address)
    return shards


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
    members = {m.address for m in view["members"]}
    if view["known_nodes"] <= 1 and view["slots_assigned"] == 0:
        yield _cli(
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            str(replicas),
            "--cluster-yes",
            auth_file=auth_file,
        )
        yield _wait_ok(addresses, auth_file)
        return
    missing = [(h, a) for h, a in zip(hosts, addresses, strict=True) if a not in members]
    existing = next(a for a in addresses if a in members)
    yield from _open_slots_closed(existing, auth_file)
    if not missing:
        if view["state"] != "ok":
            raise OperationError(
                f"cluster has every planned node but its state is {view['state']!r}: check"
                " `valkey-cli --cluster check` before deploying again"
            )
        if _fresh(view):  # an earlier growth stopped before its rebalance
            yield from _rebalanced(addresses, existing, auth_file)
            return
        host.noop(f"cluster of {len(addresses)} nodes is formed and ok")
        return
    where = dict(zip(addresses, hosts, strict=True))
    steps = plan_growth(missing, replicas, _shards(view), where, _fresh(view))
    check = _cli("--cluster", "check", existing, auth_file=auth_file)
    # add-node returns before gossip has spread; moves and rebalance need nodes that agree
    # (bounded generously: a loaded machine can take a while to spread a new node)
    agree = until(StringCommand(check, ">/dev/null 2>&1"), check, seconds=90)
    for step in steps:
        yield _step_command(step, existing, auth_file)
        yield agree
    yield from _rebalanced(addresses, existing, auth_file)


def _open_slots_closed(existing: str, auth_file: str | None) -> Generator[StringCommand]:
    """Finish what a killed deploy (or Valkey 8.0 itself) left midway: a move cut off
    midway is finished, keys first (deploy/slot_move.py); other slots open on a primary
    are closed by `valkey-cli --cluster fix` (it moves the slot's keys to one owner); a
    slot open only on replicas by `CLUSTER SETSLOT slot NODE owner` on their primary,
    which replicates it to them (deploy/cluster_check.py). Then the check must find none
    open."""
    found = host.get_fact(OpenSlots, address=existing, auth_file=auth_file)
    if not any(found.get(kind) for kind in ("move", "fix", "stale")):
        return
    for move in found.get("move", []):
        yield move_finished(move, auth_file)
    if found.get("fix"):
        yield _cli("--cluster", "fix", existing, "--cluster-yes", auth_file=auth_file)
    for slot, primary, owner in found.get("stale", []):
        yield slot_given(primary, slot, owner, auth_file)
    check = _cli("--cluster", "check", existing, auth_file=auth_file)
    yield StringCommand(
        "out=$(",
        check,
        ' 2>&1); echo "$out"; ! echo "$out" | grep -qF ',
        QuoteString(OPEN_SLOTS),
        _separator="",
    )


def _step_command(step: Step, existing: str, auth_file: str | None) -> StringCommand:
    """The command of one growth step (see `plan_growth`); `existing` is a member's address."""
    if step.kind == "primary":
        return _agreed(_cli("--cluster", "add-node", step.address, existing, auth_file=auth_file))
    assert step.primary is not None
    if step.kind == "move":
        node, port = step.address.rsplit(":", 1)
        replicate = _cli("-h", node, "-p", port, "CLUSTER", "REPLICATE", auth_file=auth_file)
        # valkey-cli exits 0 on an error reply; until gossip reaches the replica, it
        # answers "ERR Unknown node" for the new primary: retry until OK, then fail.
        return until(
            StringCommand(
                "out=$(",
                replicate,
                " ",
                _myid(step.primary, auth_file),
                ' 2>&1); [ "$out" = OK ]',
                _separator="",
            ),
            StringCommand(
                "echo ",
                QuoteString(f"{step.address}: CLUSTER REPLICATE: "),
                '"$out"',
                _separator="",
            ),
            seconds=30,
        )
    return _agreed(
        _cli(
            "--cluster",
            "add-node",
            step.address,
            existing,
            "--cluster-slave",
            "--cluster-master-id",
            auth_file=auth_file,
        ),
        _myid(step.primary, auth_file),
    )


def _rebalanced(
    addresses: list[str], existing: str, auth_file: str | None
) -> Generator[StringCommand, None, None]:
    """Move slots onto empty primaries once every node serves (a node that just joined
    answers MIGRATE with CLUSTERDOWN until its rejoin delay is over), and every replica is
    in sync: Valkey 8.0 replicates a move's final SETSLOT only to replicas in sync, and a
    replica still syncing would keep the slot open forever (valkey-io/valkey#998)."""
    yield _wait_ok(addresses, auth_file)
    yield _in_sync(addresses, auth_file)
    yield _agreed(
        _cli(
            "--cluster",
            "rebalance",
            existing,
            "--cluster-use-empty-masters",
            "--cluster-yes",
            auth_file=auth_file,
        )
    )
    yield _wait_ok(addresses, auth_file)
