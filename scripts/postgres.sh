#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests, one per checkout. Idempotent.
#
#   scripts/postgres.sh start          init (first time) and start; prints the SQLAlchemy URL
#   scripts/postgres.sh url            prints the URL of the `codeinterp` database
#   scripts/postgres.sh createdb NAME  makes database NAME unless it exists; prints its URL
#   scripts/postgres.sh dropdb NAME    drops database NAME if it exists
#   scripts/postgres.sh stop           stops the cluster (its data dir is kept)
#   scripts/postgres.sh destroy        stops it and removes its data dir
#   scripts/postgres.sh status         exit 0 when it runs
#
# It listens on 127.0.0.1 only (no unix socket), on a port picked once at init, with trust
# authentication for loopback connections only: for tests, never for data that matters.
# CODEINTERP_PG_DIR overrides where it lives. As root, the server runs as the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$BIN/pg_ctl" ] || BIN=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
[ -x "$BIN/pg_ctl" ] || { echo "postgres.sh: pg_ctl not found (apt-get install postgresql-15)" >&2; exit 1; }

DIR=${CODEINTERP_PG_DIR:-/tmp/codeinterp-pg-$(pwd -P | sha256sum | cut -c1-10)}
DATA=$DIR/data
LOG=$DIR/server.log

log() { printf '[postgres] %s\n' "$*" >&2; }
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
port() { sed -n 's/^port = \([0-9]*\).*/\1/p' "$DATA/postgresql.conf" | tail -1; }
url() { echo "postgresql+asyncpg://postgres@127.0.0.1:$(port)/${1:-codeinterp}"; }
psql_() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port)" -U postgres -d postgres "$@"; }
running() { [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

init() {
  [ -f "$DATA/PG_VERSION" ] && return
  log "initialising a cluster in $DATA"
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=reject --no-instructions -E UTF8 >/dev/null
  local free_port
  free_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >> "$DATA/postgresql.conf" <<EOF
# scripts/postgres.sh: a loopback-only test cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
port = $free_port
fsync = off
max_connections = 200
EOF
  # Trust on loopback TCP only; anything else is rejected.
  printf 'host all all 127.0.0.1/32 trust\n' > "$DATA/pg_hba.conf"
}

start() {
  init
  if ! running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
      || { cat "$LOG" >&2; exit 1; }
  fi
  if [ -z "$(psql_ -tAc "SELECT 1 FROM pg_database WHERE datname = 'codeinterp'")" ]; then
    psql_ -c "CREATE DATABASE codeinterp"
  fi
  url
}

case ${1:-start} in
  start) start ;;
  url) running || { log "not running: scripts/postgres.sh start"; exit 1; }; url ;;
  createdb)
    name=${2:?usage: postgres.sh createdb NAME}
    [[ $name =~ ^[a-z_][a-z0-9_]*$ ]] || { log "database names here are [a-z_][a-z0-9_]*"; exit 2; }
    running || start >/dev/null
    if [ -z "$(psql_ -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
      psql_ -c "CREATE DATABASE $name"
    fi
    url "$name" ;;
  dropdb)
    name=${2:?usage: postgres.sh dropdb NAME}
    [[ $name =~ ^[a-z_][a-z0-9_]*$ ]] || { log "database names here are [a-z_][a-z0-9_]*"; exit 2; }
    if running; then PGOPTIONS='-c client_min_messages=warning' psql_ -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"; fi ;;
  stop) if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; fi ;;
  destroy) "$0" stop; rm -rf "$DIR" ;;
  status) running ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
