"""What `valkey-cli --cluster check` says of slots left open, and what closes each.

A slot open on a primary (importing or migrating) is a move cut off midway, with keys
maybe on both sides: `valkey-cli --cluster fix` moves them to one owner. A slot open
only on replicas is stale state, and `--cluster fix` cannot touch it ("can't fix this
slot yet"): Valkey 8.0 replicates slot states to healthy replicas only, so a replica
that was syncing when a move finished keeps its importing (or migrating) mark forever
(valkey-io/valkey#998). Its primary clears it: `CLUSTER SETSLOT <slot> NODE <owner>`
sent to the primary again is replicated to its replicas.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

ANSI = re.compile(r"\x1b\[[0-9;]*m")
NODE = re.compile(r"^([MS]): ([0-9a-f]{40}) (\S+)$")
RANGE = re.compile(r"\[(\d+)(?:-(\d+))?\]")
WARNING = re.compile(r"\[WARNING\] Node (\S+) has slots in (?:importing|migrating) state ([0-9,]+)")


@dataclass
class Node:
    id: str
    primary: bool
    replicates: str | None = None
    slots: list[tuple[int, int]] = field(default_factory=list)

    def owns(self, slot: int) -> bool:
        return self.primary and any(low <= slot <= high for low, high in self.slots)


def _nodes_and_open(output: Iterable[str]) -> tuple[dict[str, Node], dict[int, set[str]]]:
    """Every node the check lists (by address), and the addresses each open slot is open on."""
    nodes: dict[str, Node] = {}
    open_on: dict[int, set[str]] = defaultdict(set)
    current: Node | None = None
    for raw in output:
        line = ANSI.sub("", raw).strip()
        if head := NODE.match(line):
            current = nodes.setdefault(head[3], Node(head[2], head[1] == "M"))
        elif current and line.startswith("slots:"):
            current.slots = [(int(a), int(b or a)) for a, b in RANGE.findall(line)]
        elif current and line.startswith("replicates "):
            current.replicates = line.split()[1]
        if found := WARNING.search(line):
            for slot in found[2].split(","):
                open_on[int(slot)].add(found[1])
    return nodes, open_on


def open_slots(output: Iterable[str]) -> dict:
    """{"fix": slots open on a primary (or on a node the check does not list), "stale":
    [[slot, "ADDRESS:PORT" of a primary to send SETSLOT to, owner's node id], ...]}."""
    nodes, open_on = _nodes_and_open(output)
    address_of = {node.id: address for address, node in nodes.items()}
    fix, stale = [], []
    for slot, addresses in sorted(open_on.items()):
        owner = next((n for n in nodes.values() if n.owns(slot)), None)
        on = [nodes.get(a) for a in addresses]
        primaries = {address_of.get(n.replicates or "") for n in on if n is not None}
        if owner is None or any(n is None or n.primary for n in on) or None in primaries:
            fix.append(slot)
            continue
        stale += [[slot, primary, owner.id] for primary in sorted(primaries)]
    return {"fix": fix, "stale": stale}
