#!/bin/sh
# Managed by valkey-plans (pyinfra): do not edit, change the plan.
# Proves that Valkey accepts a candidate config by really starting valkey-server on
# it: TCP off, a spare unix socket, an empty scratch dir (no data is loaded), no
# persistence. Exit 0 only if that throwaway server answers.
# Usage: check-config CANDIDATE.conf [more valkey-server options, e.g. --aclfile FILE]
set -eu
candidate="$1"
shift
tried="$candidate${*:+ $*}"
server=$(command -v valkey-server)
cli=$(command -v valkey-cli)
# "Valkey server v=8.0.1 sha=...": a refusal names the Valkey that refused.
version=$("$server" --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p')
scratch=$(mktemp -d "${TMPDIR:-/tmp}/valkey-plans-check.XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT INT TERM

as_valkey=no
if [ "$(id -u)" = 0 ] && id valkey >/dev/null 2>&1; then
    chown valkey "$scratch"
    as_valkey=yes
fi
set -- "$candidate" "$@" --daemonize no --port 0 --unixsocket "$scratch/check.sock" \
    --dir "$scratch" --pidfile "$scratch/check.pid" --logfile "$scratch/check.log" \
    --save "" --appendonly no --cluster-config-file "$scratch/nodes.conf"
# Cluster mode binds its bus at port + 10000 even with TCP off (so 10000, where another
# program, an exporter say, may listen): give the throwaway server a free bus port.
if grep -q '^cluster-enabled yes' "$candidate"; then
    bus=$((20000 + $$ % 20000))
    while command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn "sport = :$bus" 2>/dev/null)" ]; do
        bus=$((bus + 1))
    done
    set -- "$@" --cluster-port "$bus"
fi
# TLS: no listener, but tls-replication makes Valkey load and check the certificates.
if grep -q '^tls-port' "$candidate"; then set -- "$@" --tls-port 0 --tls-replication yes; fi
# Every word stays one argument (paths may hold spaces): the command is "$@", never a
# string split by the shell.
set -- "$server" "$@"
if [ "$as_valkey" = yes ]; then set -- runuser -u valkey -- "$@"; fi

"$@" >"$scratch/stdout" 2>&1 &
pid=$!
tries=0
while [ "$tries" -lt 100 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "valkey-server ${version:-(version unknown)} rejected $tried:" >&2
        said=$(cat "$scratch/stdout" "$scratch/check.log" 2>/dev/null | grep -v '^\s*$' | tail -n 15)
        echo "$said" >&2
        if echo "$said" | grep -q 'Bad directive'; then
            echo "Valkey ${version:-on this host} does not know a setting above: one of a" \
                "newer Valkey, or misspelt (valkey_version sets the host's Valkey)" >&2
        fi
        pid=""
        exit 1
    fi
    # Any answer proves the server runs on this config; with ACLs on, it is NOAUTH.
    if [ -S "$scratch/check.sock" ] &&
        "$cli" -s "$scratch/check.sock" ping 2>&1 | grep -qE '^(PONG|NOAUTH|NOPERM)'; then
        exit 0
    fi
    tries=$((tries + 1))
    sleep 0.1
done
echo "valkey-server did not answer on $tried within 10 s" >&2
exit 1
