#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the distributed sweep test.
#
#   source .ci/start-postgres.sh      # exports RSITR_TEST_POSTGRES_URL; the server stops when the shell exits
#   eval "$(.ci/start-postgres.sh)"   # same, but the server keeps running; stop it with
#       pg_ctl -D "$RSITR_TEST_POSTGRES_DATA" stop   (as root: runuser -u postgres -- .../pg_ctl ...)
#
# Installs Debian's `postgresql` package if no server binaries are present (root or sudo needed for that),
# then initialises a fresh cluster in a temporary directory owned by an unprivileged user (PostgreSQL refuses
# to run as root), with password authentication, listening on loopback only on a free port, and creates one
# database. Nothing is left behind but the temporary directory, which the stop hook removes. The URL names
# the psycopg (3) driver explicitly, so it means the same under every SQLAlchemy version.

_rsitr_pg_main() {
    # Every step checks its own status: errexit does not apply inside a function called from `||`.
    local sudo="" run_as=() user bindir port password data
    [ "$(id -u)" -eq 0 ] || sudo="sudo"

    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
        echo "start-postgres: installing Debian's postgresql package" >&2
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >&2
        bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1) || return 1
    fi

    # The server must not run as root: use the package's `postgres` account when we are root.
    user=$(id -un)
    if [ "$(id -u)" -eq 0 ]; then
        user=postgres
        run_as=(runuser -u postgres --)
    fi

    data=$(mktemp -d /tmp/rsitr-pg.XXXXXX) || return 1
    chown "$user" "$data" || return 1
    chmod 700 "$data"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
    printf '%s\n' "$password" > "$data/.pw"
    chown "$user" "$data/.pw"

    "${run_as[@]}" "$bindir/initdb" -D "$data/cluster" -U rsitr --pwfile="$data/.pw" --auth=scram-sha-256 \
        --encoding=UTF8 --no-sync >"$data/initdb.log" 2>&1 \
        || { cat "$data/initdb.log" >&2; return 1; }
    "${run_as[@]}" "$bindir/pg_ctl" -D "$data/cluster" -l "$data/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off -c max_connections=50" start >&2 \
        || { cat "$data/server.log" >&2; return 1; }
    PGPASSWORD=$password "$bindir/createdb" -h 127.0.0.1 -p "$port" -U rsitr rsitr_test || return 1

    RSITR_TEST_POSTGRES_URL="postgresql+psycopg://rsitr:${password}@127.0.0.1:${port}/rsitr_test"
    RSITR_TEST_POSTGRES_DATA="$data/cluster"
    _RSITR_PG_STOP="${run_as[*]} $bindir/pg_ctl -D $data/cluster -m fast -w stop >/dev/null 2>&1; rm -rf $data"
    export RSITR_TEST_POSTGRES_URL RSITR_TEST_POSTGRES_DATA
    echo "start-postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced (e.g. by .ci/run): export into the caller and stop the server when the caller exits.
    _rsitr_pg_main || return 1
    trap 'eval "$_RSITR_PG_STOP"' EXIT
else
    set -euo pipefail
    _rsitr_pg_main
    printf 'export RSITR_TEST_POSTGRES_URL=%q\nexport RSITR_TEST_POSTGRES_DATA=%q\n' \
        "$RSITR_TEST_POSTGRES_URL" "$RSITR_TEST_POSTGRES_DATA"
fi
