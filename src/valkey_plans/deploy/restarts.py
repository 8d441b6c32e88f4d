"""Restarts that are never blind: settled before, bounded, settled after, one host at a time.

A valkey-server that loads its dataset, rewrites its AOF or syncs from its primary is
busy, and restarting it then is how data goes missing or a deploy hangs: Valkey refuses
SIGTERM while it writes its first AOF (seconds after a replica's full sync), so a stop
sent then waits forever, and a replica restarted mid-sync starts its sync again. Every
restart of an instance, a cluster node or a Sentinel is one of this module's operations:

- before: wait (bounded) until the server is settled, and fail the deploy if it never is;
- the restart itself, bounded by a timeout (`systemctl`) or the stop's TERM/KILL schedule;
- after: wait (bounded) until it is settled again, back with its peers.

Each runs with `_serial=True`: pyinfra runs it host by host, so two nodes of one shard, a
primary and its replica, or two sentinels are never down at once.
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra.api import QuoteString, StringCommand, operation

from valkey_plans.deploy.valkey_cli import on_sentinel, valkey_cli

#: How long a server may stay busy before a restart (loading, an AOF rewrite, a sync).
SETTLE_SECONDS = 120
#: How long a restarted server may take to be settled again (load its data, resync).
BACK_SECONDS = 300
#: The bound of `systemctl restart`: a stop that Valkey refuses fails the operation.
RESTART_SECONDS = 300

#: awk over INFO (split at ':'): fails while the node loads, rewrites its AOF or syncs
#: as a replica, or while its link to its primary is down; and on anything but INFO (an
#: error reply such as NOAUTH has no `loading` field, and must never pass as settled).
BUSY_AWK = (
    '$1 == "loading" { seen = 1 }'
    ' $1 == "loading" || $1 == "aof_rewrite_in_progress" || $1 == "master_sync_in_progress"'
    ' { if ($2 != "0") bad = 1 } $1 == "master_link_status" { if ($2 != "up") bad = 1 }'
    " END { exit bad || !seen }"
)
#: What a server that is not settled shows of itself when the wait gives up.
BUSY_FIELDS = "^(loading|aof_rewrite_in_progress|master_sync_in_progress|master_link_status):"
#: awk over CLUSTER NODES: fails while a node is flagged fail or not connected.
UNWELL_AWK = '$3 ~ /fail/ || $8 != "connected" {bad=1} END {exit bad}'


def until(
    condition: str | StringCommand,
    give_up: str | StringCommand,
    seconds: int = 60,
    tenths: int = 5,
) -> StringCommand:
    """Shell: run `condition` every `tenths` tenths of a second until it succeeds; after
    `seconds`, run `give_up` (which explains) and fail. Every wait of the deploy is one
    of these (a wait while writes are paused polls faster)."""
    return StringCommand(
        "i=0; until ",
        condition,
        "; do i=$((i+1)); [ $i -gt ",
        str(10 * seconds // tenths),
        " ] && { ",
        give_up,
        f"; exit 1; }}; sleep {tenths / 10:g}; done",
        _separator="",
    )


def _answer(socket: str, auth_file: str | None, args: tuple[str, ...], field: str) -> StringCommand:
    """Shell printing the instance's answer to `args` on `socket`: as admin when the
    login file exists and the answer holds `field`, else without a login.

    Either may be what the running instance takes: a plan that turns ACLs on or off
    restarts an instance that still runs the other way, and its login file is already
    the new plan's (or still the old one's)."""
    plain = valkey_cli(None, *args, socket=socket)
    if not auth_file:
        return StringCommand(plain, "2>/dev/null")
    admin = valkey_cli(None, *args, socket=socket, auth_file=auth_file)
    return StringCommand(
        "{ out=; [ -r",
        QuoteString(auth_file),
        "] && out=$(",
        admin,
        "2>/dev/null);",
        'case "$out" in',
        StringCommand("*", QuoteString(field), "*)", _separator=""),
        ";; *) out=$(",
        plain,
        "2>/dev/null);; esac; printf '%s\\n' \"$out\"; }",
    )


def settled(
    socket: str, auth_file: str | None, cluster: bool = False, seconds: int = SETTLE_SECONDS
) -> StringCommand:
    """Wait (up to `seconds`) until the instance behind `socket` is settled.

    Settled: not loading, no AOF rewrite running, and as a replica, linked to its
    primary with no sync in progress. A cluster node must also see the whole cluster:
    cluster_state ok, every node connected and none flagged fail. `auth_file` is the
    admin login file, used when it exists and the instance takes it (see `_answer`).
    """

    def answer(*args: str, field: str) -> StringCommand:
        return _answer(socket, auth_file, args, field)

    info = answer("INFO", field="loading:")
    checks: list[str | StringCommand] = [info, "| tr -d '\\r' | awk -F:", QuoteString(BUSY_AWK)]
    shown: list[str | StringCommand] = [
        StringCommand(info, "| tr -d '\\r' | grep -E", QuoteString(BUSY_FIELDS))
    ]
    if cluster:
        nodes = answer("CLUSTER", "NODES", field="myself")
        checks += [
            "&&",
            answer("CLUSTER", "INFO", field="cluster_state:"),
            "| grep -q '^cluster_state:ok' &&",
            nodes,
            "| awk",
            QuoteString(UNWELL_AWK),
        ]
        shown += [";", nodes]
    what = "the node or its cluster" if cluster else "the instance"
    give_up = StringCommand(
        "echo", QuoteString(f"{what} at {socket} is not settled after {seconds} s:"), ";", *shown
    )
    return until(StringCommand(*checks), give_up, seconds=seconds)


@operation()
def settled_restart(
    restart: StringCommand, socket: str, auth_file: str | None = None, cluster: bool = False
) -> Generator[StringCommand, None, None]:
    """
    Restart one valkey-server once it is settled, and wait until it is settled again.

    Run with `_serial=True` (see the module's docstring); `restart` is bounded itself.

    + restart: the init system's restart, its values quoted (the service runner's)
    + socket: the instance's unix socket
    + auth_file: root-only file with the admin password (None without ACLs)
    + cluster: a cluster node, settled only while it sees the whole cluster
    """
    yield settled(socket, auth_file, cluster)
    yield restart
    yield settled(socket, auth_file, cluster, seconds=BACK_SECONDS)


def systemctl_restart(unit: str) -> StringCommand:
    """`systemctl restart` that fails after RESTART_SECONDS instead of waiting forever."""
    return StringCommand(f"timeout {RESTART_SECONDS} systemctl restart", QuoteString(unit))


#: sed over SENTINEL CKQUORUM: the number of usable sentinels, nothing if it is not OK.
USABLE_SED = "s/^OK \\([0-9]*\\) usable.*/\\1/p"
#: awk over a sentinel's config: the id it gave itself.
MYID_AWK = '$1 == "sentinel" && $2 == "myid" { print $3 }'
#: awk over SENTINEL MASTER: the value after num-other-sentinels.
OTHERS_AWK = 'p { print; exit } $0 == "num-other-sentinels" { p = 1 }'


def _braced(command: StringCommand) -> StringCommand:
    """`{ COMMAND; }`: a wait (several statements) as one link of a `&&` chain."""
    return StringCommand("{", command, "; }")


def _sentinel_checks(
    address: str, port: int, name: str, auth_file: str | None
) -> dict[str, StringCommand]:
    """Shell of a sentinel's restart: `answers` (one PING), and the bounded waits `up`
    (answers), `whole` (every sentinel it knows is usable; sets $n) and `back` (as many
    usable as $n)."""

    cli = on_sentinel(port, address, auth_file)

    def usable(into: str) -> StringCommand:
        ckquorum = cli("SENTINEL", "CKQUORUM", name)
        return StringCommand(
            f"{into}=$(",
            ckquorum,
            " 2>/dev/null | sed -n ",
            QuoteString(USABLE_SED),
            ")",
            _separator="",
        )

    answers = StringCommand(cli("PING"), "2>/dev/null | grep -q PONG")
    others = StringCommand(
        cli("SENTINEL", "MASTER", name), "2>/dev/null | awk", QuoteString(OTHERS_AWK)
    )
    whole = StringCommand(
        usable("n"), "; k=$(", others, '); [ -n "$n" ] && [ "$n" -gt "${k:-999}" ]', _separator=""
    )
    back = StringCommand(usable("m"), '; [ -n "$m" ] && [ "$m" -ge "$n" ]', _separator="")
    explain = StringCommand(
        "echo",
        QuoteString(f"sentinel {name} on port {port}:"),
        ";",
        cli("SENTINEL", "CKQUORUM", name),
        "2>&1",
    )
    silent = StringCommand("echo", QuoteString(f"sentinel {name} on port {port} does not answer"))
    return {
        "answers": answers,
        "up": until(answers, silent, seconds=30),
        "whole": until(whole, explain, seconds=SETTLE_SECONDS),
        "back": until(back, explain, seconds=BACK_SECONDS),
    }


def _swapped_keeping_id(source: str, dest: str) -> StringCommand:
    """Shell: `source` copied over the stopped sentinel's `dest`, its `sentinel myid` kept."""
    return StringCommand(
        "myid=$(awk",
        QuoteString(MYID_AWK),
        QuoteString(dest),
        "2>/dev/null || :) &&",
        "cp -p",
        QuoteString(source),
        QuoteString(dest),
        '&& { [ -z "$myid" ] || echo "sentinel myid $myid" >>',
        QuoteString(dest),
        "; }",
    )


@operation()
def sentinel_swapped(
    source: str | None,
    dest: str,
    stop: StringCommand,
    start: StringCommand,
    address: str,
    port: int,
    group: str,
    auth_file: str | None = None,
) -> Generator[StringCommand, None, None]:
    """
    Install a sentinel's planned config with the sentinel stopped, keeping its id, and
    start it again. A running sentinel is stopped only while every sentinel it knows is
    usable, and counts as back once it sees as many usable as before; a sentinel that
    was down is only started.

    Sentinel rewrites its config on exit, so the file is swapped in while it is down.
    Its `sentinel myid` line is carried over: the other sentinels know it by that id,
    and a new one would leave them a stale peer that never answers. Run with
    `_serial=True`, so that a majority of the sentinels is never down at once.

    + source: the planned config (None: a plain restart on the live config, e.g. for a
      new Valkey binary; the live config holds what the sentinel learned since)
    + dest: the sentinel's live config
    + stop: the service runner's stop (a no-op when it is down)
    + start: the service runner's start command
    + address: where the sentinel is reached on the host (one of its binds)
    + port: the sentinel's port
    + group: the name of the group it monitors
    + auth_file: root-only file with the sentinel's password (None without ACLs)
    """
    check = _sentinel_checks(address, port, group, auth_file)
    swap = [_swapped_keeping_id(source, dest), "&&"] if source is not None else []
    yield StringCommand(
        "n=0; if",
        check["answers"],
        "; then",
        check["whole"],
        "; fi;",
        stop,
        "&&",
        *swap,
        start,
        "&&",
        _braced(check["up"]),
        '&& { [ "$n" = 0 ] ||',
        _braced(check["back"]),
        "; }",
    )
