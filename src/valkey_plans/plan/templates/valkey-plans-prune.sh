#!/bin/sh
# valkey-plans: prune, on the backup host, the append-only repositories it serves.
# Managed by valkey-plans.
#
#   valkey-plans-prune [DIR]
#
# The Valkey hosts' rest-server logins are append-only: they cannot delete, so their
# retention runs here. DIR (default /var/lib/valkey-plans/backup/prune, root only) holds
# one directory per Valkey host: `password` (its repository password, 0600) and one
# INSTANCE.env per backed-up instance, written by the deploy:
#   VP_HOST VP_INSTANCE VP_REPO (the repository's directory) VP_KEEP (--keep-* words)
#   VP_ACCOUNT (the account that owns the repositories and runs rest-server)
# restic runs as VP_ACCOUNT (so every file it writes stays the server's), on the
# filesystem, and reads the password from its stdin, a pipe that root fills from the
# root-only file (restic reads a password there when stdin is not a terminal; a pipe
# root made cannot be reopened by the account as /dev/stdin): the password is never an
# argument, and never in a file the account can read.
# Only that host's snapshots of that instance are pruned, as its own runner would.
# A repository not created yet is skipped; any other failure makes the exit non-zero.
# (Each job runs in a subshell tested by `if`, where `set -e` does not apply: every
# step that may fail says so itself.)
set -eu
umask 077
dir=${1:-/var/lib/valkey-plans/backup/prune}
cd /
failed=0
for env in "$dir"/*/*.env; do
    [ -e "$env" ] || continue
    if ! (
        set -a
        . "$env" || exit 1
        set +a
        if [ ! -f "$VP_REPO/config" ]; then
            echo "valkey-plans-prune[$VP_HOST/$VP_INSTANCE]: no repository yet" >&2
            exit 0
        fi
        # shellcheck disable=SC2086  # $VP_KEEP: --keep-* words rendered from the plan
        cat "$(dirname "$env")/password" | runuser -u "$VP_ACCOUNT" -- env \
            -u RESTIC_PASSWORD -u RESTIC_PASSWORD_FILE -u RESTIC_PASSWORD_COMMAND \
            restic --no-cache -r "$VP_REPO" forget --quiet --prune --host "$VP_HOST" \
            --group-by host,paths --tag "instance=$VP_INSTANCE" $VP_KEEP || exit 1
        echo "valkey-plans-prune[$VP_HOST/$VP_INSTANCE]: ok" >&2
    ); then
        echo "valkey-plans-prune: FAILED: $env" >&2
        failed=1
    fi
done
exit "$failed"
