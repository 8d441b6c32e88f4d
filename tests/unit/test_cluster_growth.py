"""Growing a Valkey Cluster: where the new nodes go (deploy.cluster.plan_growth)."""

from __future__ import annotations

import pytest

from valkey_plans.deploy.cluster import plan_growth


def cluster_of(hosts: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """What `valkey-cli --cluster create` made of 2 nodes per host: n0 primaries, n1 replicas
    of the next host's primary (as seen in the lab)."""
    where = {f"{h}:{p}": h for h in hosts for p in (7000, 7001)}
    shards = {f"{h}:7000": [f"{hosts[(i - 1) % len(hosts)]}:7001"] for i, h in enumerate(hosts)}
    return shards, where


def apply(steps, shards: dict[str, list[str]]) -> dict[str, list[str]]:
    """The primaries and replicas after the steps, as the cluster would have them."""
    *_, last = states(steps, shards)
    return last


def states(steps, shards: dict[str, list[str]]):
    """The primaries and replicas after each step, in the order the deploy runs them."""
    result = {p: list(r) for p, r in shards.items()}
    yield {p: list(r) for p, r in result.items()}
    for step in steps:
        if step.kind == "primary":
            result[step.address] = []
        elif step.kind == "replica":
            result[step.primary].append(step.address)
        else:
            for replicas in result.values():
                if step.address in replicas:
                    replicas.remove(step.address)
            result[step.primary].append(step.address)
        yield {p: list(r) for p, r in result.items()}


@pytest.mark.parametrize(
    ("old_hosts", "new_hosts"),
    [(["a", "b", "c"], ["d"]), (["a", "b", "c"], ["d", "e"]), (["a", "b", "c", "d"], ["e"])],
)
def test_every_primary_keeps_one_replica_on_another_host(old_hosts, new_hosts):
    shards, where = cluster_of(old_hosts)
    missing = [(h, f"{h}:{p}") for h in new_hosts for p in (7000, 7001)]
    host_of = {**where, **{a: h for h, a in missing}}

    steps = plan_growth(missing, 1, shards, where)
    after = apply(steps, shards)

    assert len(after) == len(old_hosts) + len(new_hosts), steps
    for primary, replicas in after.items():
        assert len(replicas) == 1, (primary, replicas, steps)
        assert host_of[replicas[0]] != host_of[primary], (primary, replicas, steps)
    added = [s.address for s in steps if s.kind != "move"]
    assert sorted(added) == sorted(a for _, a in missing)
    kinds = [s.kind for s in steps]
    assert kinds == sorted(kinds, key=["primary", "move", "replica"].index), kinds


@pytest.mark.parametrize(
    ("old_hosts", "new_hosts"),
    [(["a", "b", "c"], ["d"]), (["a", "b", "c"], ["d", "e"]), (["a", "b", "c", "d"], ["e"])],
)
def test_no_primary_ever_has_two_replicas_so_valkey_migrates_none(old_hosts, new_hosts):
    """A primary with two replicas would give one to a primary left without (replica
    migration), picked by node id: possibly the one on that primary's own host."""
    shards, where = cluster_of(old_hosts)
    missing = [(h, f"{h}:{p}") for h in new_hosts for p in (7000, 7001)]
    steps = plan_growth(missing, 1, shards, where)
    for state in states(steps, shards):
        assert all(len(replicas) <= 1 for replicas in state.values()), (state, steps)


def test_one_new_host_moves_an_existing_replica_to_the_new_primary():
    shards, where = cluster_of(["a", "b", "c"])
    steps = plan_growth([("d", "d:7000"), ("d", "d:7001")], 1, shards, where)
    assert [s.kind for s in steps] == ["primary", "move", "replica"]
    assert steps[0].address == "d:7000"
    assert steps[1].primary == "d:7000" and where[steps[1].address] != "d"
    assert steps[2].address == "d:7001" and where[steps[2].primary] != "d"


def test_a_primary_left_empty_by_an_interrupted_growth_gets_the_replica():
    # The first add-node ran, the second failed: d:7000 is an empty primary already.
    shards, where = cluster_of(["a", "b", "c"])
    shards["d:7000"] = []
    where["d:7000"] = "d"
    steps = plan_growth([("d", "d:7001")], 1, shards, where, fresh=("d:7000",))
    after = apply(steps, shards)
    assert len(after) == 4 and all(len(r) == 1 for r in after.values()), steps
    assert all(where.get(r[0], "d") != where[p] for p, r in after.items()), after


def test_cluster_nodes_lines_parse_into_members():
    from valkey_plans.deploy.cluster_nodes import parse

    text = (
        "a1 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "b2 10.0.0.2:7001@17001,host-b slave a1 0 1700000000000 1 connected\n"
        "c3 10.0.0.3:7000@17000 master,fail - 1 1 2 disconnected\n"
    )
    first, second, third = parse(text)
    assert (first.address, first.ip, first.primary, first.slots) == (
        "10.0.0.1:7000",
        "10.0.0.1",
        True,
        ("0-5460",),
    )
    assert (second.primary, second.primary_id, second.address) == (False, "a1", "10.0.0.2:7001")
    assert third.failing and not first.failing
