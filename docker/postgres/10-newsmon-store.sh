#!/bin/bash
# First start of the PostgreSQL container: a database of its own for the article store,
# next to (never inside) Airflow's metadata database.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v user="${NEWSMON_DB_USER:-newsmon}" -v pw="$NEWSMON_DB_PASSWORD" -v db="${NEWSMON_DB_NAME:-newsmon}" <<'EOSQL'
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"user";
EOSQL
