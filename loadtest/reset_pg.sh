#!/usr/bin/env bash
# Empty the PostgreSQL database at $1 for a bench run: its public schema is
# dropped and made again. Refuses a database whose name does not start with
# "bench", so a production URL given by mistake is left alone.
set -euo pipefail
url=$1
name=${url##*/}; name=${name%%\?*}
if ! [[ "$name" =~ ^bench[A-Za-z0-9_]*$ ]]; then
  echo "refusing to empty database '$name': bench databases are named bench followed by letters, digits or _" >&2
  exit 2
fi
admin="${url%/*}/postgres"
psql "$admin" -v ON_ERROR_STOP=1 -qc "SELECT 1" >/dev/null
if [ "$(psql "$admin" -Atc "SELECT count(*) FROM pg_database WHERE datname = '$name'")" = 0 ]; then
  psql "$admin" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$name\""
else
  psql "$url" -v ON_ERROR_STOP=1 -qc "DROP SCHEMA public CASCADE; CREATE SCHEMA public;" 2>/dev/null
fi
