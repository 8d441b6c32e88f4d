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
# filesystem, and reads the password from a pipe that root fills (RESTIC_PASSWORD_FILE=
# /dev/stdin): the password is never an argument, and never readable by the account.
# Only that host's snapshots of that instance are pruned, as its own runner would.
# A repository not created yet is skipped; any other failure makes the exit non-zero.
set -eu
umask 077
dir=${1:-/var/lib/valkey-plans/backup/prune}
cd /
failed=0
for env in "$dir"/*/*.env; do
    [ -e "$env" ] || continue
    if ! (
        set -a
        . "$env"
        set +a
        if [ ! -f "$VP_REPO/config" ]; then
            echo "valkey-plans-prune[$VP_HOST/$VP_INSTANCE]: no repository yet" >&2
            exit 0
        fi
        # shellcheck disable=SC2086  # $VP_KEEP: --keep-* words rendered from the plan
        cat "$(dirname "$env")/password" | runuser -u "$VP_ACCOUNT" -- env \
            RESTIC_PASSWORD_FILE=/dev/stdin restic --no-cache -r "$VP_REPO" forget --quiet \
            --prune --host "$VP_HOST" --group-by host,paths --tag "instance=$VP_INSTANCE" $VP_KEEP
        echo "valkey-plans-prune[$VP_HOST/$VP_INSTANCE]: ok" >&2
    ); then
        echo "valkey-plans-prune: FAILED: $env" >&2
        failed=1
    fi
done
exit "$failed"
