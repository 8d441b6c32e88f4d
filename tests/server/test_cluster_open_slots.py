"""A slot left open on a replica only (valkey-io/valkey#998), found and closed by the
deploy's commands (deploy/cluster.py, deploy/cluster_check.py) on a real loopback cluster.

Valkey 8.0 replicates a slot move's states to replicas in sync only: a replica that is
down (or syncing) when the move finishes keeps its importing mark, and
`valkey-cli --cluster fix` cannot close it. The lab's grown cluster met exactly this.
"""

from __future__ import annotations

import subprocess

from tests.unit.pyinfra_commands import linux_facts, planned_commands, shell_text
from tests.valkey_server import ValkeyProcess, linked, replicated_cluster
from valkey_plans.deploy.cluster import ClusterView, OpenSlots, cluster_formed

SLOT = 300


def sh(command: str) -> list[str]:
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def view(node: ValkeyProcess) -> dict:
    """The deploy's ClusterView fact of `node`, read from the real node."""
    out = sh(
        f"valkey-cli -p {node.port} CLUSTER INFO && echo '--- nodes ---' &&"
        f" valkey-cli -p {node.port} CLUSTER NODES"
    )
    return ClusterView().process(out)


def deploy_commands(
    nodes: list[ValkeyProcess], found: dict, auth_file: str | None = None
) -> list[str]:
    """The commands the deploy's cluster operation plans for `nodes`, the open slots
    being `found` (the OpenSlots fact) and the cluster view read from the first node."""
    addresses = [f"127.0.0.1:{n.port}" for n in nodes]

    def deploy() -> None:
        cluster_formed(
            name="formed",
            addresses=addresses,
            hosts=[f"h{i}" for i in range(len(addresses))],
            replicas=1,
            socket="/unused",
            auth_file=auth_file,
        )

    facts = linux_facts(
        ClusterView=lambda **kwargs: view(nodes[0]), OpenSlots=lambda **kwargs: found
    )
    ((_, commands),) = planned_commands(deploy, facts, {})
    return commands


def stale_on_a_replica(nodes: list[ValkeyProcess]) -> ValkeyProcess:
    """Move SLOT from one primary to another while the target's replica is down; that
    replica comes back still importing it."""
    ids = {n.port: _myself(n).split()[0] for n in nodes}
    source = next(n for n in nodes if SLOT in _slots(n))
    primaries = [n for n in nodes if n.client().info("replication")["role"] == "master"]
    target = next(n for n in primaries if n is not source)
    replica = next(
        n for n in nodes if n.client().info("replication").get("master_port") == target.port
    )
    target.client().execute_command("CLUSTER", "SETSLOT", SLOT, "IMPORTING", ids[source.port])
    source.client().execute_command("CLUSTER", "SETSLOT", SLOT, "MIGRATING", ids[target.port])
    assert _mark(replica), "the replica holds the importing mark while it is up"
    replica.stop()
    for node in (target, source):
        node.client().execute_command("CLUSTER", "SETSLOT", SLOT, "NODE", ids[target.port])
    replica.start()
    return replica


def _myself(node: ValkeyProcess) -> str:
    """The node's own line of CLUSTER NODES (the only one that shows its open slots)."""
    lines = node.client().execute_command("CLUSTER", "NODES").decode().splitlines()
    return next(line for line in lines if "myself" in line)


def _slots(node: ValkeyProcess) -> set[int]:
    slots: set[int] = set()
    for part in _myself(node).split()[8:]:
        if part.startswith("["):
            continue
        low, _, high = part.partition("-")
        slots.update(range(int(low), int(high or low) + 1))
    return slots


def _mark(node: ValkeyProcess) -> bool:
    return f"[{SLOT}-<-" in _myself(node)


def test_a_slot_open_on_a_replica_only_is_closed_by_its_primary(valkey_factory):
    nodes = replicated_cluster(valkey_factory)
    replica = stale_on_a_replica(nodes)
    addresses = [f"127.0.0.1:{n.port}" for n in nodes]
    check = sh(shell_text(OpenSlots().command(address=addresses[0])))
    found = OpenSlots().process(check)
    assert found["fix"] == [] and [s[0] for s in found["stale"]] == [SLOT], (found, check)
    fix = subprocess.run(
        ["valkey-cli", "--cluster", "fix", addresses[0], "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "can't fix this slot" in fix.stdout, "valkey-cli's own fix closes it after all"
    assert _mark(replica)

    commands = deploy_commands(nodes, found)
    assert not any("--cluster fix" in c for c in commands), commands
    for command in commands:
        sh(command)
    assert not _mark(replica), "the replica still imports the slot"
    again = OpenSlots().process(sh(shell_text(OpenSlots().command(address=addresses[0]))))
    assert again == {"move": [], "fix": [], "stale": []}, again
    assert all(linked(n) for n in nodes)


#: Keys as users write them, all in one slot: spaces, quotes, a backslash, a newline,
#: bytes that are not UTF-8, printf's own `%`: each must cross valkey-cli's quoting.
ODD_KEYS = [
    b"{moved} with space",
    b'{moved}"double"',
    b"{moved}'single'",
    b"{moved}back\\slash",
    b"{moved}new\nline",
    b"{moved}\x00\xff\x7f bytes",
    b"{moved}%s %d",
]
#: The admin password, as awkward as a plan's may be for the MIGRATE line's quoting.
PASSWORD = "p'w\\\"x %s"


def _half_moved(nodes: list[ValkeyProcess], keys: list[bytes]) -> tuple[ValkeyProcess, ...]:
    """A move of the keys' slot cut off midway: migrating on its owner, importing on
    another primary, every second key already across (so both hold as many keys)."""
    slot = int(nodes[0].client().execute_command("CLUSTER", "KEYSLOT", keys[0]))
    ids = {n.port: _myself(n).split()[0] for n in nodes}
    source = next(n for n in nodes if slot in _slots(n))
    roles = {n.port: n.client().info("replication")["role"] for n in nodes}
    target = next(n for n in nodes if roles[n.port] == "master" and n is not source)
    for key in keys:
        source.client().set(key, key + b" value")
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
    source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port])
    source.client().execute_command(
        "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys[::2]
    )
    return source, target


def test_a_move_cut_off_midway_is_finished_keys_first(valkey_factory, tmp_path):
    """What a killed rebalance leaves, half of a slot's keys on each side: the deploy
    moves the rest across (several batches, with an ACL login), then hands the slot over;
    not `--cluster fix`, which may give the slot to the target first, and the owner then
    drops the keys it still holds."""
    nodes = replicated_cluster(valkey_factory)
    for node in nodes:
        node.client().execute_command(
            "ACL", "SETUSER", "admin", "on", f">{PASSWORD}", "~*", "&*", "+@all"
        )
    auth = tmp_path / "admin-password"
    auth.write_text(PASSWORD)
    keys = ODD_KEYS + [f"{{moved}}:{i}".encode() for i in range(250)]
    source, target = _half_moved(nodes, keys)
    addresses = [f"127.0.0.1:{n.port}" for n in nodes]
    fact = OpenSlots().command(address=addresses[0], auth_file=str(auth))
    found = OpenSlots().process(sh(shell_text(fact)))
    assert found["fix"] == [] and found["stale"] == [], found
    ((slot, source_address, target_address, *_),) = found["move"]
    assert source_address == f"127.0.0.1:{source.port}", found
    assert target_address == f"127.0.0.1:{target.port}", found

    commands = deploy_commands(nodes, found, auth_file=str(auth))
    assert not any("--cluster fix" in c for c in commands), commands
    assert not any(PASSWORD in c for c in commands), "the password is on a command line"
    for command in commands:
        sh(command)
    assert source.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert target.client().mget(keys) == [key + b" value" for key in keys]
    for node in nodes:
        assert f"[{slot}-" not in _myself(node), f"{node.port} still has the slot open"
    again = OpenSlots().process(sh(shell_text(fact)))
    assert again == {"move": [], "fix": [], "stale": []}, again
