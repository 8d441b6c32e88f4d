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


def test_the_check_s_open_slots_are_the_fact():
    assert OpenSlots().process(CHECK_OUTPUT) == [5, 77]
    closed = [line for line in CHECK_OUTPUT if "WARNING" not in line]
    assert OpenSlots().process(closed) == []


def commands_with(open_slots: list[int]) -> list[str]:
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
    fix, check = commands_with([5])
    assert fix == "valkey-cli --cluster fix 10.0.0.1:7000 --cluster-yes"
    assert "--cluster check 10.0.0.1:7000" in check
    assert "grep -qF 'The following slots are open:'" in check


def test_a_formed_cluster_with_no_open_slot_changes_nothing():
    assert commands_with([]) == []
