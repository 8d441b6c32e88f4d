"""What `valkey-cli --cluster check` says of slots left open, and what closes each.

A slot open on a primary (importing or migrating) is a move cut off midway, with keys
maybe on both sides: `valkey-cli --cluster fix` moves them to one owner. A slot open
only on replicas is stale state, and `--cluster fix` cannot touch it ("can't fix this
slot yet"): Valkey 8.0 replicates slot states to healthy replicas only, so a replica
that was syncing when a move finished keeps its importing (or migrating) mark forever
(valkey-io/valkey#998). Its primary clears it: `CLUSTER SETSLOT <slot> NODE <owner>`
sent to the primary again is replicated to its replicas.

A move cut off midway, its slot migrating on its owner and importing on one other
primary, is finished by the deploy itself (deploy/slot_move.py), not by `--cluster fix`:
fix counts the target's keys as a second owner, may pick the target by its key count,
and gives it the slot before the owner is marked importing, and the owner then drops
the slot's keys it still holds (seen on Valkey 9.1; valkey-io/valkey#1532).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

ANSI = re.compile(r"\x1b\[[0-9;]*m")
NODE = re.compile(r"^([MS]): ([0-9a-f]{40}) (\S+)$")
RANGE = re.compile(r"\[(\d+)(?:-(\d+))?\]")
WARNING = re.compile(r"\[WARNING\] Node (\S+) has slots in (importing|migrating) state ([0-9,]+)")


@dataclass
class Node:
    id: str
    primary: bool
    replicates: str | None = None
    slots: list[tuple[int, int]] = field(default_factory=list)

    def owns(self, slot: int) -> bool:
        return self.primary and any(low <= slot <= high for low, high in self.slots)


def _nodes_and_open(
    output: Iterable[str],
) -> tuple[dict[str, Node], dict[int, dict[str, str]]]:
    """Every node the check lists (by address), and for each open slot the addresses it is
    open on, each with its state there ("importing" or "migrating")."""
    nodes: dict[str, Node] = {}
    open_on: dict[int, dict[str, str]] = defaultdict(dict)
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
            for slot in found[3].split(","):
                open_on[int(slot)][found[1]] = found[2]
    return nodes, open_on


def open_slots(output: Iterable[str]) -> dict:
    """{"move": [[slot, source address, target address, target id, [every primary's
    address]], ...] for moves cut off midway; "fix": other slots open on a primary (or
    on a node the check does not list); "stale": [[slot, "ADDRESS:PORT" of a primary to
    send SETSLOT to, owner's node id], ...] for slots open on replicas only}."""
    nodes, open_on = _nodes_and_open(output)
    address_of = {node.id: address for address, node in nodes.items()}
    move, fix, stale = [], [], []
    for slot, marks in sorted(open_on.items()):
        owner = next((n for n in nodes.values() if n.owns(slot)), None)
        on = [nodes.get(a) for a in marks]
        primaries = {address_of.get(n.replicates or "") for n in on if n is not None}
        if owner is None or any(n is None or n.primary for n in on) or None in primaries:
            if cut := _cut_off_move(slot, marks, nodes, owner):
                move.append(cut)
            else:
                fix.append(slot)
            continue
        stale += [[slot, primary, owner.id] for primary in sorted(primaries)]
    return {"move": move, "fix": fix, "stale": stale}


def _cut_off_move(
    slot: int, marks: dict[str, str], nodes: dict[str, Node], owner: Node | None
) -> list | None:
    """The move of `slot`, if the marks are exactly what a move leaves: migrating on its
    owner, importing on one other primary, and on replicas of those two only."""
    if owner is None or any(a not in nodes for a in marks):
        return None
    marked = {a: state for a, state in marks.items() if nodes[a].primary}
    source = [a for a, state in marked.items() if state == "migrating"]
    target = [a for a, state in marked.items() if state == "importing"]
    if len(source) != 1 or len(target) != 1 or nodes[source[0]] is not owner:
        return None
    pair = {owner.id, nodes[target[0]].id}
    if any(nodes[a].replicates not in pair for a in marks if a not in marked):
        return None
    every_primary = sorted(a for a, n in nodes.items() if n.primary)
    return [slot, source[0], target[0], nodes[target[0]].id, every_primary]
