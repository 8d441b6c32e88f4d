#!/bin/sh
# valkey-plans: one restic backup of one Valkey instance. Managed by valkey-plans.
#
#   valkey-plans-backup ENV_FILE
#
# ENV_FILE (root only, 0600, written by the deploy) holds the instance's settings:
#   VP_INSTANCE VP_HOST VP_SOCKET VP_AUTH_FILE VP_USER VP_RDB VP_STAGING VP_WAIT_S
#   VP_REPOSITORIES (one or two restic repositories, blank-separated; `@FILE` is a backup
#   host's append-only repository: its location, login included, is in the root-only
#   FILE, its certificate pinned beside it) VP_KEEP
#   RESTIC_PASSWORD_FILE (restic reads the password there: never on a command line)
#   VP_METRICS_FILE (optional: where the time of the last good backup is published)
# VP_TIME (optional, from the caller's environment) backdates the snapshot (tests).
#
# Steps, each one fatal: BGSAVE (after any save already running), wait for it and for
# rdb_last_bgsave_status:ok, valkey-check-rdb, the keys per db from the file's RESIZEDB
# opcodes (a throwaway load counts them when those cannot be read), `restic backup` of
# that file tagged instance=, valkey=, rdb=, dbN=; only when every
# repository holds the new snapshot, `restic forget --prune` per the plan in each one
# but a backup host's (append-only: its login cannot delete; the backup host prunes it).
# A failure at any step leaves every earlier snapshot and the retention untouched.
set -eu
umask 077
[ $# -eq 1 ] || { echo "usage: $0 ENV_FILE" >&2; exit 2; }
set -a
. "$1"
set +a
log() { echo "valkey-plans-backup[$VP_INSTANCE]: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

cli() {
    if [ -n "${VP_AUTH_FILE:-}" ]; then
        REDISCLI_AUTH="$(cat "$VP_AUTH_FILE")" valkey-cli --no-auth-warning --user "$VP_USER" \
            -s "$VP_SOCKET" "$@"
    else
        valkey-cli -s "$VP_SOCKET" "$@"
    fi
}
# restic on the repository word $1 (a location, or @FILE): plan/backup.py REPO_OPTIONS.
restic_in() {
    r=$1
    shift
    case "$r" in @*) l="${r#@}"; set -- --repository-file "$l" --cacert "$(dirname "$l")/ca.pem" "$@";; *) set -- -r "$r" "$@";; esac;
    restic "$@"
}
# One INFO field of the instance (empty when it is missing).
info() { cli INFO "$1" | tr -d '\r' | sed -n "s/^$2://p"; }

wait_idle() {
    # A BGSAVE already running (a save rule, another backup) finishes first: a second
    # one would be refused, and its file may predate our request.
    i=0
    while [ "$(info persistence rdb_bgsave_in_progress)" = 1 ]; do
        i=$((i + 1)); [ "$i" -le $((VP_WAIT_S * 10)) ] || die "a BGSAVE ran longer than ${VP_WAIT_S}s"
        sleep 0.1
    done
}

fresh_save() {
    # BGSAVE SCHEDULE: while an AOF rewrite runs, Valkey starts the save right after it.
    # rdb_saves counts the saves started; one more than before, no longer in progress,
    # status ok: the file on disk was written after this run asked for it.
    wait_idle
    before=$(info persistence rdb_saves)
    reply=$(cli BGSAVE SCHEDULE)
    case "$reply" in
        *"already in progress"*) fresh_save; return ;;
        "Background saving started"|"Background saving scheduled") ;;
        *) die "BGSAVE refused: $reply" ;;
    esac
    i=0
    while [ "$(info persistence rdb_saves)" = "$before" ] \
        || [ "$(info persistence rdb_bgsave_in_progress)" = 1 ]; do
        i=$((i + 1)); [ "$i" -le $((VP_WAIT_S * 10)) ] || die "BGSAVE did not finish within ${VP_WAIT_S}s"
        sleep 0.1
    done
    status=$(info persistence rdb_last_bgsave_status)
    [ "$status" = ok ] || die "rdb_last_bgsave_status:$status (see the instance's log)"
}

count_keys() {
    # A throwaway valkey-server loads the file (proving this Valkey reads it) and says
    # how many keys each db holds: the tags a restore is verified against. It stays in
    # the foreground of a background job, so its death ends the wait at once.
    sock="$VP_STAGING/load.sock"
    rm -f "$sock"
    valkey-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$VP_STAGING" \
        --dbfilename dump.rdb --save "" --appendonly no --databases 16 --daemonize no \
        --logfile "$VP_STAGING/load.log" >/dev/null &
    pid=$!
    i=0
    until [ "$(valkey-cli -s "$sock" PING 2>/dev/null)" = PONG ]; do
        kill -0 "$pid" 2>/dev/null || die "the check load failed: $(tail -n 3 "$VP_STAGING/load.log")"
        i=$((i + 1)); [ "$i" -le $((VP_WAIT_S * 10)) ] || { kill "$pid"; die "the check load did not finish"; }
        sleep 0.1
    done
    valkey-cli -s "$sock" INFO keyspace | tr -d '\r' | sed -n 's/^\(db[0-9]*\):keys=\([0-9]*\).*/\1=\2/p'
    valkey-cli -s "$sock" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    wait "$pid" || true
    rm -f "$sock"
}

db_sizes() {
    # The keys per db without loading the file: valkey-check-rdb's full parse names the
    # offset after each SELECTDB, where a RESIZEDB opcode (251) carries the db's key
    # count at the save (RDB length encoding: 6 bits, 14 bits, or 32/64 bits big-endian).
    # Anything else there (a future format) fails, and the throwaway load counts instead.
    sed -n 's/^\[offset \([0-9]*\)\] Selecting DB ID \([0-9]*\)$/\1 \2/p' "$VP_STAGING/check.log" \
        >"$VP_STAGING/dbs"
    [ -s "$VP_STAGING/dbs" ] || return 1
    while read -r off db; do
        # shellcheck disable=SC2046  # od's words: one byte each
        set -- $(od -An -tu1 -j "$off" -N 10 "$VP_STAGING/dump.rdb")
        [ "$#" -ge 2 ] && [ "$1" = 251 ] || return 1
        b=$2
        case $((b >> 6)) in
            0) n=$((b & 63)) ;;
            1) n=$(((b & 63) << 8 | $3)) ;;
            2) [ "$b" = 128 ] || return 1; n=$(($3 << 24 | $4 << 16 | $5 << 8 | $6)) ;;
            *) return 1 ;;
        esac
        [ "$n" -eq 0 ] || echo "db$db=$n"
    done <"$VP_STAGING/dbs"
}

install -d -m 700 "$VP_STAGING"
exec 9>"$VP_STAGING/lock"
flock -n 9 || die "another backup of $VP_INSTANCE is running"
fresh_save
# A hard link keeps the checked file: a later save renames a new file over VP_RDB.
rm -f "$VP_STAGING/dump.rdb"
ln "$VP_RDB" "$VP_STAGING/dump.rdb" 2>/dev/null || cp "$VP_RDB" "$VP_STAGING/dump.rdb"
if ! valkey-check-rdb "$VP_STAGING/dump.rdb" >"$VP_STAGING/check.log" 2>&1; then
    die "valkey-check-rdb refused the file: $(tail -n 3 "$VP_STAGING/check.log")"
fi
if ! db_sizes >"$VP_STAGING/keys"; then
    count_keys >"$VP_STAGING/keys" 2>"$VP_STAGING/count.log" \
        || die "the check load failed: $(tail -n 3 "$VP_STAGING/count.log")"
fi
header=$(head -c 9 "$VP_STAGING/dump.rdb")
format=$(echo "$header" | sed -n 's/^\(REDIS\|VALKEY\)0*\([0-9][0-9]*\)$/\2/p')
[ -n "$format" ] || die "unknown RDB header"
version=$(info server valkey_version)
tags="--tag instance=$VP_INSTANCE --tag valkey=$version --tag rdb=$format"
for db in $(cat "$VP_STAGING/keys"); do tags="$tags --tag $db"; done
for repo in $VP_REPOSITORIES; do
    # shellcheck disable=SC2086  # $tags: the script's own words, one per tag
    restic_in "$repo" backup --quiet --host "$VP_HOST" --stdin --stdin-filename dump.rdb \
        ${VP_TIME:+--time "$VP_TIME"} $tags <"$VP_STAGING/dump.rdb" || die "restic backup to $repo"
done
for repo in $VP_REPOSITORIES; do
    case "$repo" in @*) continue ;; esac
    # Only this host's snapshots of this instance: another host backing up an instance
    # of the same name into the same repository (a replacement box) keeps its own.
    # shellcheck disable=SC2086  # $VP_KEEP: --keep-* words rendered from the plan
    restic_in "$repo" forget --quiet --prune --host "$VP_HOST" --group-by host,paths \
        --tag "instance=$VP_INSTANCE" $VP_KEEP || die "restic forget --prune in $repo"
done
rm -f "$VP_STAGING/dump.rdb"
if [ -n "${VP_METRICS_FILE:-}" ]; then
    # For the ValkeyBackupTooOld alert: written whole, then renamed, so the textfile
    # collector never reads half a file. Readable by all: a time and two names.
    metric=valkey_plans_backup_last_success_timestamp_seconds
    install -d -m 755 "$(dirname "$VP_METRICS_FILE")"
    {
        echo "# HELP $metric Unix time of the last backup that completed and verified."
        echo "# TYPE $metric gauge"
        echo "$metric{valkey_host=\"$VP_HOST\",valkey_instance=\"$VP_INSTANCE\"} $(date +%s)"
    } >"$VP_METRICS_FILE.tmp"
    chmod 644 "$VP_METRICS_FILE.tmp"
    mv -f "$VP_METRICS_FILE.tmp" "$VP_METRICS_FILE"
fi
log "ok: $(echo "$tags" | sed 's/--tag //g')"
