"""Finish a slot move that a killed deploy cut off midway: its keys first, then the slot.

The cluster specification's order: MIGRATE every key the owner still holds to the
target, then `CLUSTER SETSLOT slot NODE target` on the target, on the old owner, and on
every other primary. A node that loses a slot while it still holds keys of it deletes
them, so the slot never changes hands before its keys are all across (Valkey itself
refuses SETSLOT NODE on a node that still holds keys of the slot).

The keys are read as valkey-cli prints them to a terminal (`--no-raw`: each one quoted,
every byte that is not printable escaped) and handed back in the same notation on
valkey-cli's stdin, which splits quoted arguments the same way: a key with spaces,
quotes, newlines or any byte crosses as it is, and none is ever on a command line. The
MIGRATE login's password is read on the host from the deploy's root-only file.
"""

from __future__ import annotations

from pyinfra.api import QuoteString, StringCommand

from valkey_plans.deploy.valkey_cli import ADMIN_USER, valkey_cli

#: Keys per MIGRATE, as valkey-cli's own resharding moves them.
BATCH = 100
#: How long one MIGRATE may take (ms): a batch of large values over a slow link.
MIGRATE_TIMEOUT_MS = 60000
#: Rounds of BATCH keys at most (a slot holding more keys than this stops the deploy).
MAX_ROUNDS = 1_000_000


def move_finished(move: list, auth_file: str | None) -> StringCommand:
    """The shell that finishes `move` (deploy/cluster_check.open_slots): [slot, source
    address, target address, target id, every primary's address]."""
    slot, source, target, target_id, primaries = move
    shost, sport = source.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)
    on_source = ("-h", shost, "-p", sport, "--no-raw")
    keys = valkey_cli(
        None, *on_source, "CLUSTER", "GETKEYSINSLOT", str(slot), str(BATCH), auth_file=auth_file
    )
    fail = f"slot {slot} from {source} to {target}:"
    rounds = StringCommand(
        "n=0; while :; do n=$((n+1)); [ $n -le",
        str(MAX_ROUNDS),
        "] || { echo",
        QuoteString(f"{fail} more than {MAX_ROUNDS * BATCH} keys"),
        "; exit 1; }; keys=$(",
        keys,
        '2>&1) || { echo "$keys"; exit 1; }; case "$keys" in "(empty"*) break ;;'
        ' "(error)"*|"") echo',
        QuoteString(fail),
        '"$keys"; exit 1 ;; esac;',
        "line=$(printf '%s\\n' \"$keys\" | sed 's/^ *[0-9]*) //' | tr '\\n' ' ');",
        "out=$(",
        _migrate_line(thost, tport, auth_file),
        "|",
        valkey_cli(None, *on_source, auth_file=auth_file),
        '2>&1); case "$out" in OK|NOKEY) ;; *) echo',
        QuoteString(f"MIGRATE of {fail}"),
        '"$out"; exit 1 ;; esac; done',
    )
    owners = [target, source, *(p for p in primaries if p not in (target, source))]
    setslots = [slot_given(address, slot, target_id, auth_file) for address in owners]
    return StringCommand(rounds, *setslots, _separator="; ")


def _migrate_line(thost: str, tport: str, auth_file: str | None) -> StringCommand:
    """printf of one MIGRATE command line for valkey-cli's stdin, the batch's quoted keys
    in `$line`; with ACLs, AUTH2 with the password from `auth_file` in single quotes (in
    which valkey-cli's splitter knows only the escape \\')."""
    if not auth_file:
        return StringCommand(
            'printf "MIGRATE %s %s \\"\\" 0',
            str(MIGRATE_TIMEOUT_MS),
            'REPLACE KEYS %s\\n"',
            QuoteString(thost),
            QuoteString(tport),
            '"$line"',
        )
    return StringCommand(
        "pw=$(sed \"s/'/\\\\\\\\'/g\"",
        QuoteString(auth_file),
        '); printf "MIGRATE %s %s \\"\\" 0',
        str(MIGRATE_TIMEOUT_MS),
        f"REPLACE AUTH2 {ADMIN_USER} '%s' KEYS %s\\n\"",
        QuoteString(thost),
        QuoteString(tport),
        '"$pw" "$line"',
    )


def slot_given(address: str, slot: int, owner: str, auth_file: str | None) -> StringCommand:
    """`CLUSTER SETSLOT slot NODE owner` on `address`, which must answer OK."""
    node, port = address.rsplit(":", 1)
    setslot = ("CLUSTER", "SETSLOT", str(slot), "NODE", owner)
    return StringCommand(
        "out=$(",
        valkey_cli(None, "-h", node, "-p", port, *setslot, auth_file=auth_file),
        '2>&1); [ "$out" = OK ] || { echo',
        QuoteString(f"CLUSTER SETSLOT {slot} NODE {owner} on {address}:"),
        '"$out"; exit 1; }',
    )
