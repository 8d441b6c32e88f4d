"""A Valkey Cluster moved to a new Valkey series without losing an acknowledged write:
every replica node first, then shard by shard a failover to an upgraded replica and the
old primary, one node at a time.

Every host installs the new packages first; a running valkey-server keeps its binary
until it restarts, so the order of the restarts is the order of the upgrade. pyinfra
runs an operation on every host before the next one, and each of these two with
`_serial=True`, host by host:

1. `cluster_replicas_upgraded`: each node of this host that is a replica and runs
   another series restarts, settled before and after (its cluster whole). A replica of
   the new series goes on following its primary of the old one: Valkey replicates to a
   newer version, never to an older (9.x writes RDB format 80, which 8.x refuses).
2. `cluster_primaries_handed_over`: each node of this host that still runs another
   series and is a primary hands its slots to one of its replicas (`CLUSTER FAILOVER`,
   sent to that replica: the primary holds its clients until the replica has every
   write, so no acknowledged write is left behind). It is then that replica's replica,
   by a partial resync (no RDB goes from the new series to the old), and restarts.

Roles and versions are read when the commands run, not when pyinfra collects facts:
phase 1 has changed them by then, and a rerun after a failure repeats only what is left
(a node at the series is skipped). A shard without a replica cannot hand over: its
primary restarts in place (the shutdown saves its data; its slots are down meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from functools import partial

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation

from valkey_plans.deploy.handover import info_field, on_replica
from valkey_plans.deploy.restarts import BACK_SECONDS, settled, until
from valkey_plans.deploy.valkey_cli import valkey_cli
from valkey_plans.plan.versions import series_of

#: Seconds for a replica to take over its primary's slots and the old primary to follow it.
FAILOVER_SECONDS = 60

#: awk over CLUSTER REPLICAS: "ADDRESS:PORT" of the first healthy, connected replica.
HEALTHY_REPLICA_AWK = (
    '$3 !~ /fail|noaddr|handshake/ && $8 == "connected"'
    ' { a = $2; sub(/@.*/, "", a); sub(/,.*/, "", a); print a; exit }'
)


@dataclass(frozen=True)
class Node:
    """A cluster node of this host, as the upgrade restarts it."""

    label: str
    socket: str
    auth_file: str | None
    #: the service runner's bounded restart (`ServiceRunner.restart_command`)
    restart: StringCommand

    def cli(self, *args: str | StringCommand) -> StringCommand:
        """valkey-cli as admin on this node's socket."""
        return valkey_cli(None, *args, socket=self.socket, auth_file=self.auth_file)


class RunningVersion(FactBase[str | None]):
    """The Valkey version a running instance reports ("8.1.4"), None when it does not
    answer (the binary it started from, whatever the package on disk is now)."""

    def command(self, socket: str, auth_file: str | None = None) -> StringCommand:
        info = valkey_cli(None, "INFO", "server", socket=socket, auth_file=auth_file)
        return StringCommand(info, "2>/dev/null", info_field("valkey_version"), "|| true")

    def process(self, output: list[str]) -> str | None:
        return "".join(output).strip() or None


def behind(nodes: Sequence[Node], series: str) -> list[Node]:
    """The nodes that run, now, a series other than `series` (not those that are down:
    their start reads the new binary)."""
    stale = []
    for node in nodes:
        running = host.get_fact(RunningVersion, socket=node.socket, auth_file=node.auth_file)
        if running and series_of(running) != series:
            stale.append(node)
    return stale


def _read(node: Node, series: str) -> list[str | StringCommand]:
    """Statements: $v and $role of `node`, fail if it does not answer, and $old set when
    it runs another series than `series`."""
    cli = node.cli
    return [
        StringCommand(
            "v=$(", cli("INFO", "server"), "2>/dev/null", info_field("valkey_version"), ")"
        ),
        StringCommand(
            "role=$(", cli("INFO", "replication"), "2>/dev/null", info_field("role"), ")"
        ),
        StringCommand(
            '[ -n "$v" ] || { echo', QuoteString(f"{node.label} does not answer"), "; exit 1; }"
        ),
        StringCommand(
            'old=1; case "$v" in',
            StringCommand(QuoteString(f"{series}."), "*)", _separator=""),
            "old=;; esac",
        ),
    ]


def _restarted(node: Node) -> StringCommand:
    """Statements: `node` restarted once settled with its whole cluster, then settled again."""
    failed = QuoteString(f"the restart of {node.label} failed")
    return StringCommand(
        settled(node.socket, node.auth_file, cluster=True),
        StringCommand(node.restart, "|| { echo", failed, "; exit 1; }"),
        settled(node.socket, node.auth_file, cluster=True, seconds=BACK_SECONDS),
        _separator="; ",
    )


def _each_behind(
    nodes: Sequence[Node], series: str, then: Callable[[Node], list[str | StringCommand]]
) -> Generator[StringCommand, None, None]:
    """One command per node that runs another series at fact time: its $v, $role and
    $old read again when the command runs, then `then`'s statements."""
    stale = behind(nodes, series)
    if not stale:
        host.noop(f"every cluster node here runs Valkey {series}")
        return
    for node in stale:
        yield StringCommand(StringCommand(*_read(node, series), _separator="; "), *then(node))


@operation()
def cluster_replicas_upgraded(
    nodes: list[Node], series: str
) -> Generator[StringCommand, None, None]:
    """
    Restart this host's cluster nodes that are replicas of another series, one at a
    time and settled (phase 1 of the module's docstring). Run with `_serial=True`.

    + nodes: this host's cluster nodes
    + series: the series they move to, e.g. "9.1"
    """
    yield from _each_behind(
        nodes,
        series,
        lambda node: ['; if [ -n "$old" ] && [ "$role" = slave ]; then', _restarted(node), "; fi"],
    )


@operation()
def cluster_primaries_handed_over(
    nodes: list[Node], series: str
) -> Generator[StringCommand, None, None]:
    """
    Each of this host's cluster nodes still of another series: its slots handed over to
    an upgraded replica when it is a primary, then restarted, one at a time and settled
    (phase 2 of the module's docstring). Run with `_serial=True`, after phase 1.

    + nodes: this host's cluster nodes
    + series: the series they move to, e.g. "9.1"
    """
    yield from _each_behind(
        nodes,
        series,
        lambda node: [
            '; if [ -n "$old" ]; then if [ "$role" = master ]; then',
            _handed_over(node, series),
            "; fi;",
            _restarted(node),
            "; fi",
        ],
    )


def _handed_over(node: Node, series: str) -> StringCommand:
    """Statements: a CLUSTER FAILOVER to a healthy replica of `node` ("$r") that runs
    `series`, and a wait until `node` follows it, linked; a note when it has none."""
    cli = node.cli
    replica = partial(on_replica, auth_file=node.auth_file)
    info = StringCommand(cli("INFO", "replication"), "2>/dev/null | tr -d '\\r'")
    linked = StringCommand(
        info, "| grep -qx 'role:slave' &&", info, "| grep -qx 'master_link_status:up'"
    )
    myid = StringCommand('"$(', cli("CLUSTER", "MYID"), ')"')
    pick = StringCommand(
        "r=$(",
        cli("CLUSTER", "REPLICAS", myid),
        "2>/dev/null | awk",
        QuoteString(HEALTHY_REPLICA_AWK),
        ")",
    )
    version = StringCommand(
        "rv=$(", replica("INFO", "server"), "2>/dev/null", info_field("valkey_version"), ")"
    )
    at_series = StringCommand(
        'case "$rv" in',
        StringCommand(QuoteString(f"{series}."), "*)", _separator=""),
        ';; *) echo "replica $r of',
        QuoteString(node.label),
        "runs Valkey ${rv:-(no answer)}, not",
        QuoteString(series),
        '(its host upgrades first)"; exit 1;; esac',
    )
    failover = StringCommand(
        "out=$(",
        replica("CLUSTER", "FAILOVER"),
        '2>&1); [ "$out" = OK ] || { echo "CLUSTER FAILOVER on $r: $out"; exit 1; }',
    )
    followed = until(
        linked,
        StringCommand("echo", QuoteString(f"{node.label} did not follow its replica:"), ";", info),
        seconds=FAILOVER_SECONDS,
        tenths=1,
    )
    return StringCommand(
        pick,
        '; if [ -z "$r" ]; then echo',
        QuoteString(f"{node.label} has no healthy replica: it restarts in place"),
        "; else",
        StringCommand(version, at_series, failover, followed, _separator="; "),
        "; fi",
    )
