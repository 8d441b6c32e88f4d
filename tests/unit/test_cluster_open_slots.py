"""A slot left open by a killed deploy (deploy/cluster.py): found, then closed first."""

from __future__ import annotations

from tests.unit.pyinfra_commands import linux_facts, planned_commands
from tests.unit.test_command_quoting import formed
from valkey_plans.deploy.cluster import OpenSlots, cluster_formed

#: What `valkey-cli --cluster check` prints of a rebalance cut off in slot 5 and 77.
CHECK_OUTPUT = """\
10.0.0.1:7000 (aaaa...) -> 100 keys | 5461 slots | 1 slaves.
[OK] 200 keys in 3 masters.
>>> Performing Cluster Check (using node 10.0.0.1:7000)
[OK] All nodes agree about slots configuration.
>>> Check for open slots...
[WARNING] Node 10.0.0.1:7000 has slots in migrating state 5,77.
[WARNING] Node 10.0.0.2:7000 has slots in importing state 5,77.
[WARNING] The following slots are open: 5,77.
>>> Check slots coverage...
[OK] All 16384 slots covered.""".splitlines()

ADDRESSES = [f"10.0.0.{h}:{p}" for h in (1, 2, 3) for p in (7000, 7001)]


#: What it prints of a slot (300) open on one replica only, colours and all (valkey#998).
STALE_OUTPUT = """\
\x1b[29;1m>>> Performing Cluster Check (using node 127.0.0.1:7100)
\x1b[0mM: c0c509abcf7add68cee3cd3bc8e54defb1b3c0a7 127.0.0.1:7100
   slots:[0-99],[101-299],[301-5460] (5459 slots) master
   1 additional replica(s)
M: 72c0016c6e2dc72b1182bafe2188469acab64e71 127.0.0.1:7101
   slots:[100],[300],[5461-10922] (5464 slots) master
   1 additional replica(s)
S: 2201930cfa1d23786b8f370e0409caf740b8c669 127.0.0.1:7105
   slots: (0 slots) slave
   replicates 72c0016c6e2dc72b1182bafe2188469acab64e71
S: 23c39840ecc0efc4beecd286452115665ae626e6 127.0.0.1:7104
   slots: (0 slots) slave
   replicates c0c509abcf7add68cee3cd3bc8e54defb1b3c0a7
\x1b[32;1m[OK] All nodes agree about slots configuration.
\x1b[0m\x1b[29;1m>>> Check for open slots...
\x1b[0m\x1b[31;1m[WARNING] Node 127.0.0.1:7105 has slots in importing state 300.
\x1b[0m\x1b[31;1m[WARNING] The following slots are open: 300.""".splitlines()


def test_the_check_s_open_slots_are_the_fact():
    # the nodes the warnings name are not listed: nothing but valkey-cli's fix may touch them
    assert OpenSlots().process(CHECK_OUTPUT) == {"move": [], "fix": [5, 77], "stale": []}
    closed = [line for line in CHECK_OUTPUT if "WARNING" not in line]
    assert OpenSlots().process(closed) == {"move": [], "fix": [], "stale": []}


def test_a_slot_open_on_a_replica_only_is_closed_by_its_primary_not_by_fix():
    owner = "72c0016c6e2dc72b1182bafe2188469acab64e71"
    found = OpenSlots().process(STALE_OUTPUT)
    assert found == {"move": [], "fix": [], "stale": [[300, "127.0.0.1:7101", owner]]}
    # open on a primary too: a move cut off midway, whose keys valkey-cli's fix moves
    on_primary = "[WARNING] Node 127.0.0.1:7101 has slots in importing state 300."
    assert OpenSlots().process([*STALE_OUTPUT, on_primary]) == {
        "move": [],
        "fix": [300],
        "stale": [],
    }
    commands = commands_with(found)
    assert commands[0] == (
        f"out=$( valkey-cli -h 127.0.0.1 -p 7101 CLUSTER SETSLOT 300 NODE {owner} 2>&1);"
        f" [ \"$out\" = OK ] || {{ echo 'CLUSTER SETSLOT 300 NODE {owner} on 127.0.0.1:7101:'"
        ' "$out"; exit 1; }'
    )
    assert "--cluster check" in commands[1] and len(commands) == 2


def commands_with(open_slots: dict) -> list[str]:
    def deploy() -> None:
        cluster_formed(
            name="formed",
            addresses=ADDRESSES,
            hosts=[f"h{i // 2}" for i in range(len(ADDRESSES))],
            replicas=1,
            socket="/run/valkey-n0/valkey-server.sock",
        )

    facts = linux_facts(
        ClusterView=lambda **kwargs: formed(ADDRESSES), OpenSlots=lambda **kwargs: open_slots
    )
    ((_, commands),) = planned_commands(deploy, facts, {})
    return commands


def test_an_open_slot_is_fixed_then_checked_closed():
    fix, check = commands_with({"move": [], "fix": [5], "stale": []})
    assert fix == "valkey-cli --cluster fix 10.0.0.1:7000 --cluster-yes"
    assert "--cluster check 10.0.0.1:7000" in check
    assert "grep -qF 'The following slots are open:'" in check


def test_a_formed_cluster_with_no_open_slot_changes_nothing():
    assert commands_with({"move": [], "fix": [], "stale": []}) == []


#: The check's warnings of a move of slot 50 from :7100 to :7101 cut off midway.
MIGRATING = "[WARNING] Node 127.0.0.1:7100 has slots in migrating state 50."
IMPORTING = "[WARNING] Node 127.0.0.1:7101 has slots in importing state 50."
TARGET = "72c0016c6e2dc72b1182bafe2188469acab64e71"
PRIMARIES = ["127.0.0.1:7100", "127.0.0.1:7101"]


def test_a_move_cut_off_midway_is_finished_by_the_deploy_not_by_fix():
    nodes = STALE_OUTPUT[:13]
    found = OpenSlots().process([*nodes, MIGRATING, IMPORTING])
    assert found == {
        "move": [[50, "127.0.0.1:7100", "127.0.0.1:7101", TARGET, PRIMARIES]],
        "fix": [],
        "stale": [],
    }
    # the replicas of both ends carry the marks too (Valkey 8 replicates them)
    on_replicas = [
        "[WARNING] Node 127.0.0.1:7104 has slots in migrating state 50.",
        "[WARNING] Node 127.0.0.1:7105 has slots in importing state 50.",
    ]
    assert OpenSlots().process([*nodes, MIGRATING, IMPORTING, *on_replicas]) == found
    move, check = commands_with(found)
    assert "--cluster fix" not in move and "GETKEYSINSLOT 50 100" in move
    # keys first, then the slot: on the target, then on the old owner
    assert move.index("MIGRATE") < move.index(f"SETSLOT 50 NODE {TARGET} on 127.0.0.1:7101")
    assert move.index("-p 7101 CLUSTER SETSLOT") < move.index("-p 7100 CLUSTER SETSLOT")
    assert "--cluster check" in check


def test_open_slots_that_are_not_one_move_are_left_to_fix():
    nodes = STALE_OUTPUT[:13]
    # the target is the owner: not a move in flight
    backwards = [MIGRATING.replace("7100", "7101"), IMPORTING.replace("7101", "7100")]
    # importing on both, or on a node the check does not list
    twice = [IMPORTING, IMPORTING.replace("7101", "7100")]
    unlisted = [MIGRATING, IMPORTING.replace("7101", "7199")]
    for marks in (backwards, twice, unlisted, [MIGRATING]):
        found = OpenSlots().process([*nodes, *marks])
        assert found == {"move": [], "fix": [50], "stale": []}, marks
