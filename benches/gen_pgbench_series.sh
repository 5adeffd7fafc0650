#!/usr/bin/env bash
# A pgbench series (issue 16, "dump series with scattered updates"): real PostgreSQL dumps
# of a pgbench database before and after a day of pgbench transactions.
#
#   benches/gen_pgbench_series.sh DIR [SCALE] [TRANSACTIONS]
#
# Writes DIR/day1.sql and DIR/day2.sql (pg_dump plain format). `pgbench -i -s SCALE` makes
# SCALE * 100,000 accounts (default 4: 400,000, as the scattered series); TRANSACTIONS
# (default 4,000: 1 % of the accounts) pgbench TPC-B transactions from one client with a
# fixed random seed then update random accounts, tellers and branches and append to
# pgbench_history. Autovacuum is off and one client runs, so the rows' order in the dump
# (updated rows move within the heap, as in production) is the same on every run; pg_dump's
# \restrict key is fixed. The server is private (a socket in DIR, no TCP), started and
# stopped here; PostgreSQL refuses to run as root, so it runs as user postgres.
set -euo pipefail
DIR=$(realpath -m "$1") SCALE=${2:-4} TX=${3:-4000}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -x $PGBIN/pgbench ]] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 2; }
mkdir -p "$DIR"
P=$(mktemp -d /tmp/arc-pgbench.XXXXXX)
chown postgres:postgres "$P"
as_pg() { runuser -u postgres -- "$@"; }
stop() { as_pg "$PGBIN/pg_ctl" -D "$P/data" -m fast -w -s stop >/dev/null 2>&1 || true; rm -rf "$P"; }
trap stop EXIT
as_pg "$PGBIN/initdb" -D "$P/data" -U postgres --auth=trust -E UTF8 --no-locale --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$P/data" -l "$P/server.log" -w -s \
  -o "-c listen_addresses= -k $P -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c autovacuum=off" start
export PGHOST=$P PGUSER=postgres
as_pg "$PGBIN/createdb" -h "$P" bench
as_pg "$PGBIN/pgbench" -h "$P" -q -i -s "$SCALE" bench >/dev/null 2>&1
dump() { as_pg "$PGBIN/pg_dump" -h "$P" --restrict-key=arcbench bench > "$1"; }
dump "$DIR/day1.sql"
as_pg "$PGBIN/pgbench" -h "$P" -n -c 1 -j 1 -t "$TX" --random-seed=20261206 bench >/dev/null 2>&1
dump "$DIR/day2.sql"
ls -l "$DIR"/day*.sql
