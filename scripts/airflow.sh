#!/usr/bin/env bash
# Start Airflow (all components in one process tree: `airflow standalone`) with the newsmon
# DAGs and the News Monitor view, on a SQLite metadata database in var/airflow.
#
#   scripts/airflow.sh            the configured feeds
#   scripts/airflow.sh --demo     the bundled sample feeds served from loopback (NEWSMON_DEMO=1)
#
# Environment: AIRFLOW_HOME (default var/airflow), AIRFLOW_PORT (default 8080),
# NEWSMON_HOME (default var), NEWSMON_DATABASE_URL (the article store; default SQLite in
# NEWSMON_HOME), NEWSMON_* settings (see README). The article store is never Airflow's
# metadata database.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

for arg in "$@"; do
  case "$arg" in
    --demo) export NEWSMON_DEMO=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see scripts/airflow.sh --help)" >&2; exit 2 ;;
  esac
done

[ -x .venv/bin/airflow ] || scripts/bootstrap.sh requirements.txt
export PATH="$root/.venv/bin:$PATH"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export NEWSMON_HOME="${NEWSMON_HOME:-$root/var}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$root/var/airflow}"
port="${AIRFLOW_PORT:-8080}"

export AIRFLOW__CORE__DAGS_FOLDER="$root/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$root/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# `airflow standalone` on SQLite: LocalExecutor, tasks run as subprocesses of the scheduler.
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__API__PORT="$port"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://localhost:$port}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://localhost:$port/execution/}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
# New DAGs start unpaused so the schedules run without a click.
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-False}"
mkdir -p "$AIRFLOW_HOME" "$NEWSMON_HOME"

echo "==> Airflow metadata database ($AIRFLOW_HOME)"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
pool_slots="${NEWSMON_HTTP_POOL_SLOTS:-4}"
airflow pools set "${NEWSMON_AIRFLOW__HTTP_POOL:-newsmon_http}" "$pool_slots" \
  "newsmon: concurrent feed-fetch tasks (outbound HTTP)" >/dev/null

children=()
airflow_pid=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$airflow_pid" ]; then
    # standalone runs in its own process group: stop it and every component it started.
    kill -INT -- "-$airflow_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$airflow_pid" 2>/dev/null || break; sleep 1; done
    kill -TERM -- "-$airflow_pid" 2>/dev/null || true
  fi
  for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

if [ "${NEWSMON_DEMO:-0}" = "1" ]; then
  echo "==> demo site on loopback (sample feeds; NEWSMON_DEMO=1)"
  python -m pipeline demo serve >"$NEWSMON_HOME/demo-server.log" 2>&1 &
  children+=($!)
fi

pwfile="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
(
  # Say how to log in once the API server has written the generated password.
  for _ in $(seq 1 180); do
    if [ -s "$pwfile" ] && curl -fsS -o /dev/null "http://localhost:$port/api/v2/monitor/health" 2>/dev/null; then
      echo
      echo "==> Airflow is up: http://localhost:$port  (News Monitor: side bar, or /newsmon/)"
      echo "    user admin, password: $(python -c 'import json,sys; print(json.load(open(sys.argv[1])).get("admin", "?"))' "$pwfile")"
      echo "    (stored in $pwfile)"
      exit 0
    fi
    sleep 2
  done
) &
children+=($!)

echo "==> airflow standalone on http://localhost:$port (Ctrl-C stops everything)"
setsid airflow standalone &
airflow_pid=$!
wait "$airflow_pid"
