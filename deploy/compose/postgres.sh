#!/usr/bin/env bash
# PostgreSQL for the stack: a cluster initialised on first start in its volume, reachable from
# the stack's network without a password (a local stack; give it one anywhere else).
set -euo pipefail
data=/var/lib/postgresql/data
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    chown postgres:postgres "$data"
    as_postgres /usr/lib/postgresql/15/bin/initdb -D "$data" -A trust -U postgres -E UTF8 >/dev/null
    echo "host all all 0.0.0.0/0 trust" >>"$data/pg_hba.conf"
fi
# The server itself is the container's process: the stop signal reaches it.
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    /usr/lib/postgresql/15/bin/postgres -D "$data" -c listen_addresses='*' 
