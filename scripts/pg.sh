#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, on a loopback port, in a temporary directory.
#   bash scripts/pg.sh start   # idempotent; prints the URL (postgresql://postgres@127.0.0.1:PORT/postgres)
#   bash scripts/pg.sh stop    # stops the cluster and removes its directory
#   bash scripts/pg.sh url     # prints the URL of the running cluster (exit 1 when none)
#   bash scripts/pg.sh restart [SECONDS]  # stop at once (no clean shutdown: crash recovery on
#                              # start), stay down SECONDS (default 0), start on the same port
# Debian's `postgresql` package provides the binaries (apt-get install -y postgresql). PostgreSQL
# refuses to run as root: when run as root, initdb/pg_ctl run as the `postgres` user.
set -euo pipefail
STATE=${DSPEX_PG_STATE:-/tmp/dspex-pg}
cmd=${1:-start}

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$d" ] || [ ! -x "$d/pg_ctl" ]; then
        echo "pg.sh: PostgreSQL is not installed (apt-get install -y postgresql)" >&2
        exit 1
    fi
    echo "$d"
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() {
    [ -f "$STATE/port" ] && [ -d "$STATE/data" ] && as_pg "$(bindir)/pg_ctl" -D "$STATE/data" status >/dev/null 2>&1
}

url() { echo "postgresql://postgres@127.0.0.1:$(cat "$STATE/port")/postgres"; }

launch() {
    as_pg "$(bindir)/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $(cat "$STATE/port") -k $STATE -c fsync=off -c max_connections=200" start >/dev/null \
        || { cat "$STATE/server.log" >&2; exit 1; }
}

case "$cmd" in
start)
    if running; then url; exit 0; fi
    BIN=$(bindir)
    rm -rf "$STATE"
    mkdir -p "$STATE"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "$port" >"$STATE/port"
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$STATE"; fi
    as_pg "$BIN/initdb" -D "$STATE/data" -U postgres --auth=trust -E UTF8 >"$STATE/initdb.log" 2>&1 \
        || { cat "$STATE/initdb.log" >&2; exit 1; }
    launch
    url
    ;;
stop)
    if [ -d "$STATE/data" ]; then
        as_pg "$(bindir)/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE"
    ;;
url)
    running && url
    ;;
restart)
    running || { echo "pg.sh: no cluster in $STATE" >&2; exit 1; }
    as_pg "$(bindir)/pg_ctl" -D "$STATE/data" -m immediate -w -t 60 stop >/dev/null
    sleep "${2:-0}"
    launch
    ;;
*)
    echo "usage: $0 start|stop|url|restart" >&2
    exit 2
    ;;
esac
