"""A Sentinel group upgraded without losing an acknowledged write: replicas first, then the
primary role handed over to an upgraded replica, then the old primary.

The package step of the host that holds the group's primary is put off (see
`valkey_plan`): every other host upgrades and restarts first, one at a time and settled.
Then `primary_handed_over` runs on the primary's host:

1. every replica the primary has runs the new series (else nothing is touched);
2. `CLIENT PAUSE ... WRITE`: writes wait, reads go on;
3. every replica has every write (its offset is the primary's);
4. `SENTINEL FAILOVER`: the sentinels promote a replica, so they know the new primary
   at once and tell the clients that ask;
5. the old primary follows the new one (`REPLICAOF`, and `CONFIG REWRITE` as Sentinel
   does itself when it converts an old primary) and is linked;
6. `CLIENT UNPAUSE`: the writes that waited get READONLY and are retried by the client on
   the new primary; none was acknowledged by the old one after the pause.

The pause is bounded (PAUSE_MS) and lifted on any failure. Only then are the old
primary's packages upgraded and it restarts, now as a replica.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation

from valkey_plans.deploy.restarts import until
from valkey_plans.deploy.valkey_cli import valkey_cli

#: Longest write pause the handover may hold; the server lifts it by itself after that.
PAUSE_MS = 30_000
#: Seconds for the replicas to catch up, for the sentinels to name the new primary and
#: for the old primary to link to it.
CATCH_UP_SECONDS = 10
PROMOTE_SECONDS = 30
LINK_SECONDS = 60

#: awk over INFO replication: the primary's offset, then fails unless every replica's
#: `offset=` equals it (and there is at least one replica).
CAUGHT_UP_AWK = (
    '$1 == "master_repl_offset" { want = $2 }'
    ' $1 ~ /^slave[0-9]+$/ { n++; split($2, f, ","); for (i in f) if (f[i] ~ /^offset=/)'
    " got[n] = substr(f[i], 8) }"
    ' END { if (!n || want == "") exit 1; for (i = 1; i <= n; i++) if (got[i] != want) exit 1 }'
)
#: awk over SENTINEL MASTER (name and value lines): fails until the sentinel's failover
#: is over, the group's primary at "$want" ("ADDRESS PORT") with nothing but `master` flags.
FINISHED_AWK = (
    "p { v[k] = $0; p = 0; next } { k = $0; p = 1 }"
    ' END { exit !(v["flags"] == "master" && v["ip"] " " v["port"] == want) }'
)
#: awk over INFO replication: "ADDRESS:PORT" of every replica.
REPLICAS_AWK = (
    '$1 ~ /^slave[0-9]+$/ { split($2, f, ","); ip = ""; port = ""; for (i in f) {'
    " if (f[i] ~ /^ip=/) ip = substr(f[i], 4); if (f[i] ~ /^port=/) port = substr(f[i], 6) }"
    ' print ip ":" port }'
)


class ReplicationRole(FactBase[str | None]):
    """The role an instance reports (`master`, `slave`), None when it does not answer."""

    def command(self, socket: str, auth_file: str | None = None) -> StringCommand:
        info = valkey_cli(None, "INFO", "replication", socket=socket, auth_file=auth_file)
        return StringCommand(info, "2>/dev/null | tr -d '\\r' | sed -n 's/^role://p' || true")

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

    def admin(*args: str | StringCommand) -> StringCommand:
        return valkey_cli(None, *args, socket=socket, auth_file=auth_file)

    sentinel = partial(
        valkey_cli,
        sentinel_port,
        host_address=sentinel_address,
        auth_file=sentinel_auth_file,
        user="default",
    )
    info = StringCommand(admin("INFO", "replication"), "2>/dev/null | tr -d '\\r'")
    yield _replicas_at(info, series, auth_file)
    named = StringCommand(sentinel("SENTINEL", "get-master-addr-by-name", group), "2>/dev/null")
    yield _statements(
        # a failed handover never leaves the primary's writes paused
        StringCommand("unpause() {", admin("CLIENT", "UNPAUSE"), ">/dev/null 2>&1; }"),
        """paused=; trap '[ -z "$paused" ] || unpause' EXIT""",
        _or_fail(
            StringCommand(admin("CLIENT", "PAUSE", str(PAUSE_MS), "WRITE"), "| grep -qx OK"),
            "CLIENT PAUSE",
        ),
        "paused=1",
        until(
            StringCommand(info, "| awk -F:", QuoteString(CAUGHT_UP_AWK)),
            StringCommand("echo 'the replicas did not catch up:';", info),
            seconds=CATCH_UP_SECONDS,
        ),
        StringCommand("out=$(", sentinel("SENTINEL", "FAILOVER", group), "2>&1)"),
        '[ "$out" = OK ] || { echo "SENTINEL FAILOVER: $out"; exit 1; }',
        until(
            StringCommand(
                "new=$(",
                named,
                '| paste -sd \' \') && [ -n "$new" ] && [ "$new" !=',
                QuoteString(f"{address} {port}"),
                "]",
            ),
            StringCommand("echo", QuoteString(f"the sentinels promoted no replica of {group}")),
            seconds=PROMOTE_SECONDS,
        ),
        StringCommand(
            "out=$(",
            admin("REPLICAOF", StringCommand('"${new% *}"'), StringCommand('"${new#* }"')),
            "2>&1)",
        ),
        '[ "$out" = OK ] || { echo "REPLICAOF $new: $out"; exit 1; }',
        _or_fail(StringCommand(admin("CONFIG", "REWRITE"), "| grep -qx OK"), "CONFIG REWRITE"),
        until(
            StringCommand(
                info, "| grep -qx 'master_link_status:up' &&", info, "| grep -qx 'role:slave'"
            ),
            StringCommand("echo 'the old primary did not link to the new one:';", info),
            seconds=LINK_SECONDS,
        ),
        "unpause",
        "paused=",
        # the sentinels' failover is over (+switch-master): the group is as they say
        until(
            StringCommand(
                sentinel("SENTINEL", "MASTER", group),
                '2>/dev/null | awk -v want="$new"',
                QuoteString(FINISHED_AWK),
            ),
            StringCommand("echo", QuoteString(f"the sentinels' failover of {group} is not over:")),
            seconds=PROMOTE_SECONDS,
        ),
    )


def _statements(*parts: str | StringCommand) -> StringCommand:
    return StringCommand(*parts, _separator="; ")


def _or_fail(command: StringCommand, what: str) -> StringCommand:
    return StringCommand(command, "|| { echo", QuoteString(f"{what} failed"), "; exit 1; }")


def _replicas_at(info: StringCommand, series: str, auth_file: str | None) -> StringCommand:
    """Fail, naming it, unless every replica of the primary runs `series` (a replica left
    behind could neither take over nor follow a primary of the new series)."""
    version = StringCommand(
        valkey_cli(
            None,
            "-h",
            StringCommand('"${r%:*}"'),
            "-p",
            StringCommand('"${r##*:}"'),
            "INFO",
            "server",
            auth_file=auth_file,
        ),
        "2>/dev/null | tr -d '\\r' | sed -n 's/^valkey_version://p'",
    )
    return StringCommand(
        "replicas=$(",
        info,
        "| awk -F:",
        QuoteString(REPLICAS_AWK),
        ') && [ -n "$replicas" ] || { echo "no replica to hand the primary role to"; exit 1; };',
        "for r in $replicas; do v=$(",
        version,
        '); case "$v" in',
        StringCommand(QuoteString(f"{series}."), "*)", _separator=""),
        ';; *) echo "replica $r runs Valkey ${v:-(no answer)}, not',
        QuoteString(series),
        '(upgrade it first)"; exit 1;; esac; done',
    )
