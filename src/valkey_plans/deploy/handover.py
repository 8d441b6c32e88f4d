"""A Sentinel group upgraded without losing an acknowledged write: replicas first, then the
primary role handed over to an upgraded replica, then the old primary.

The package step of the host that holds the group's primary is put off (see
`valkey_plan`): every other host upgrades and restarts first, one at a time and settled.
Then `primary_handed_over` runs on the primary's host, as one shell command:

1. every replica the primary has runs the new series (else nothing is touched);
2. `CLIENT PAUSE ... WRITE`: writes wait, reads go on;
3. every replica has every write (its own offset is the primary's);
4. `SENTINEL FAILOVER`: the sentinels promote a replica, so they know the new primary
   at once and tell the clients that ask;
5. the old primary follows the new one (`REPLICAOF`, and `CONFIG REWRITE` as Sentinel
   does itself when it converts an old primary) and is linked;
6. `CLIENT UNPAUSE`: the writes that waited get READONLY and are retried by the client on
   the new primary; none was acknowledged by the old one after the pause;
7. the sentinels' failover is over (they name the new primary with no failover flag).

The pause is bounded (PAUSE_MS) and lifted on any failure, and its waits poll every
0.1 s. Only then are the old primary's packages upgraded and it restarts as a replica.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation

from valkey_plans.deploy.restarts import until
from valkey_plans.deploy.valkey_cli import on_sentinel, valkey_cli

#: Longest write pause the handover may hold; the server lifts it by itself after that.
PAUSE_MS = 30_000
#: Seconds for the replicas to catch up, for the sentinels to name the new primary and
#: finish their failover, and for the old primary to link to the new one.
CATCH_UP_SECONDS = 10
PROMOTE_SECONDS = 30
LINK_SECONDS = 60
#: How often the waits inside the pause look again (tenths of a second).
FAST = 1

#: awk over INFO replication: "ADDRESS:PORT" of every replica.
REPLICAS_AWK = (
    '$1 ~ /^slave[0-9]+$/ { split($2, f, ","); ip = ""; port = ""; for (i in f) {'
    " if (f[i] ~ /^ip=/) ip = substr(f[i], 4); if (f[i] ~ /^port=/) port = substr(f[i], 6) }"
    ' print ip ":" port }'
)
#: awk over SENTINEL MASTER (name and value lines): fails until the sentinel's failover
#: is over, the group's primary at "$want" ("ADDRESS PORT") with nothing but `master` flags.
FINISHED_AWK = (
    "p { v[k] = $0; p = 0; next } { k = $0; p = 1 }"
    ' END { exit !(v["flags"] == "master" && v["ip"] " " v["port"] == want) }'
)


class ReplicationRole(FactBase[str | None]):
    """The role an instance reports (`master`, `slave`), None when it does not answer."""

    def command(self, socket: str, auth_file: str | None = None) -> StringCommand:
        info = valkey_cli(None, "INFO", "replication", socket=socket, auth_file=auth_file)
        return StringCommand(info, "2>/dev/null", info_field("role"), "|| true")

    def process(self, output: list[str]) -> str | None:
        role = "".join(output).strip()
        return role or None


@operation()
def primary_handed_over(
    socket: str,
    auth_file: str | None,
    address: str,
    port: int,
    series: str,
    group: str,
    sentinel_address: str,
    sentinel_port: int,
    sentinel_auth_file: str | None = None,
) -> Generator[StringCommand, None, None]:
    """
    Hand the primary role of a Sentinel group over to one of its replicas (see the
    module's docstring); nothing when the instance is no primary any more.

    + socket: the primary's unix socket; auth_file: its admin login file (None: no ACLs)
    + address, port: where the sentinels know the primary
    + series: the Valkey series every replica must run first, e.g. "9.1"
    + group: the name the sentinels know the group by
    + sentinel_address, sentinel_port, sentinel_auth_file: this host's sentinel
    """
    if host.get_fact(ReplicationRole, socket=socket, auth_file=auth_file) != "master":
        host.noop(f"{address}:{port} is no primary: nothing to hand over")
        return
    sentinel = on_sentinel(sentinel_port, sentinel_address, sentinel_auth_file)
    admin = partial(valkey_cli, None, socket=socket, auth_file=auth_file)
    info = StringCommand(admin("INFO", "replication"), "2>/dev/null | tr -d '\\r'")
    replica = partial(on_replica, auth_file=auth_file)
    yield StringCommand(
        *_replicas_at(info, replica, series),
        *_paused(admin),
        _caught_up(info, replica),
        *_failed_over(sentinel, group, f"{address} {port}"),
        *_following(admin, info),
        "unpause",
        "paused=",
        until(
            StringCommand(
                sentinel("SENTINEL", "MASTER", group),
                '2>/dev/null | awk -v want="$new"',
                QuoteString(FINISHED_AWK),
            ),
            StringCommand("echo", QuoteString(f"the sentinels' failover of {group} is not over")),
            seconds=PROMOTE_SECONDS,
            tenths=FAST,
        ),
        _separator="; ",
    )


def on_replica(*args: str, auth_file: str | None) -> StringCommand:
    """valkey-cli as admin on the replica "$r" ("ADDRESS:PORT"), as its primary reaches it
    (every node of an inventory has the same admin password)."""
    where = (StringCommand('"${r%:*}"'), StringCommand('"${r##*:}"'))
    return valkey_cli(None, "-h", where[0], "-p", where[1], *args, auth_file=auth_file)


def info_field(name: str) -> str:
    """sed printing the value of one INFO field."""
    return f"| tr -d '\\r' | sed -n 's/^{name}://p'"


def _replicas_at(
    info: StringCommand, replica: Callable[..., StringCommand], series: str
) -> list[str | StringCommand]:
    """Statements: $replicas, every replica of the primary; fail (naming it) unless each
    runs `series` (a replica left behind could neither take over nor follow a primary of
    the new series)."""
    return [
        StringCommand("replicas=$(", info, "| awk -F:", QuoteString(REPLICAS_AWK), ")"),
        '[ -n "$replicas" ] || { echo "no replica to hand the primary role to"; exit 1; }',
        StringCommand(
            "for r in $replicas; do v=$(",
            replica("INFO", "server"),
            "2>/dev/null",
            info_field("valkey_version"),
            '); case "$v" in',
            StringCommand(QuoteString(f"{series}."), "*)", _separator=""),
            ';; *) echo "replica $r runs Valkey ${v:-(no answer)}, not',
            QuoteString(series),
            '(upgrade it first)"; exit 1;; esac; done',
        ),
    ]


def _paused(admin: Callable[..., StringCommand]) -> list[str | StringCommand]:
    """Statements: the primary's writes paused, and lifted again whenever the shell exits
    before the handover has lifted them itself."""
    pause = StringCommand(admin("CLIENT", "PAUSE", str(PAUSE_MS), "WRITE"), "| grep -qx OK")
    return [
        StringCommand("unpause() {", admin("CLIENT", "UNPAUSE"), ">/dev/null 2>&1; }"),
        """paused=; trap '[ -z "$paused" ] || unpause' EXIT""",
        StringCommand(pause, "|| { echo 'CLIENT PAUSE failed'; exit 1; }"),
        "paused=1",
    ]


def _caught_up(info: StringCommand, replica: Callable[..., StringCommand]) -> StringCommand:
    """A wait until every replica's own offset is the paused primary's (a replica reports
    what it has processed at once; the primary learns it only from the next ACK)."""
    offsets = StringCommand(
        "o=$(",
        info,
        info_field("master_repl_offset"),
        '); [ -n "$o" ] && for r in $replicas; do [ "$(',
        replica("INFO", "replication"),
        "2>/dev/null",
        info_field("slave_repl_offset"),
        ')" = "$o" ] || exit 1; done',
    )
    return until(
        StringCommand("(", offsets, ")"),
        StringCommand("echo 'the replicas did not catch up:';", info),
        seconds=CATCH_UP_SECONDS,
        tenths=FAST,
    )


def _failed_over(
    sentinel: Callable[..., StringCommand], group: str, primary: str
) -> list[str | StringCommand]:
    """Statements: SENTINEL FAILOVER, then a wait until the sentinel names another
    primary, "$new" ("ADDRESS PORT")."""
    named = StringCommand(sentinel("SENTINEL", "get-master-addr-by-name", group), "2>/dev/null")
    return [
        StringCommand("out=$(", sentinel("SENTINEL", "FAILOVER", group), "2>&1)"),
        '[ "$out" = OK ] || { echo "SENTINEL FAILOVER: $out"; exit 1; }',
        until(
            StringCommand(
                "new=$(",
                named,
                '| paste -sd \' \') && [ -n "$new" ] && [ "$new" !=',
                QuoteString(primary),
                "]",
            ),
            StringCommand("echo", QuoteString(f"the sentinels promoted no replica of {group}")),
            seconds=PROMOTE_SECONDS,
            tenths=FAST,
        ),
    ]


def _following(admin: Callable[..., StringCommand], info: StringCommand) -> list[StringCommand]:
    """Statements: the old primary replicates "$new", with that in its config file, and
    is linked to it."""
    follow = admin("REPLICAOF", StringCommand('"${new% *}"'), StringCommand('"${new#* }"'))
    rewrite = StringCommand(admin("CONFIG", "REWRITE"), "| grep -qx OK")
    linked = StringCommand(
        info, "| grep -qx 'master_link_status:up' &&", info, "| grep -qx 'role:slave'"
    )
    return [
        StringCommand("out=$(", follow, "2>&1)"),
        StringCommand('[ "$out" = OK ] || { echo "REPLICAOF $new: $out"; exit 1; }'),
        StringCommand(rewrite, "|| { echo 'CONFIG REWRITE failed'; exit 1; }"),
        until(
            linked,
            StringCommand("echo 'the old primary did not link to the new one:';", info),
            seconds=LINK_SECONDS,
            tenths=FAST,
        ),
    ]
