#!/bin/sh
# Minimal version of the official image's entrypoint: initialise PGDATA on first start, create
# POSTGRES_DB, then run the server in the foreground as the postgres user.
set -eu
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != "postgres" ]; then exec "$@"; fi

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != "trust" ]; then
  echo "error: set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust" >&2
  exit 1
fi
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" > "$pwfile"
  chown postgres "$pwfile"
  as_postgres initdb -D "$PGDATA" -U "$user" -E UTF8 --locale=C.UTF-8 --no-sync \
    --auth-local=trust --auth-host="$auth" --pwfile="$pwfile" >/dev/null
  rm -f "$pwfile"
  printf "host all all all %s\n" "$auth" >> "$PGDATA/pg_hba.conf"
  if [ "$db" != "postgres" ]; then
    as_postgres postgres --single -D "$PGDATA" -c fsync=off -j postgres >/dev/null <<SQL
CREATE DATABASE "$db";
SQL
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$@" -c listen_addresses='*'
