#!/usr/bin/env bash
# Set up and run the news monitor on the embedded defaults (SQLite store, local mail outbox).
#
#   ./run.sh            ingest the configured feeds, write the digest to the outbox, start Airflow
#   ./run.sh --demo     the same on the bundled sample feeds (no internet needed)
#   ./run.sh --once     one ingest + digest pass, then exit (no Airflow)
#
# NEWSMON_DEMO=1 is the same switch as --demo.
set -euo pipefail
cd "$(dirname "$0")"
once=0
for arg in "$@"; do
  case "$arg" in
    --demo) export NEWSMON_DEMO=1 ;;
    --once) once=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see ./run.sh --help)" >&2; exit 2 ;;
  esac
done
scripts/bootstrap.sh requirements.txt
export PATH="$PWD/.venv/bin:$PATH"
export NEWSMON_HOME="${NEWSMON_HOME:-$PWD/var}"
demo_flag=()
[ "${NEWSMON_DEMO:-0}" = "1" ] && demo_flag=(--demo)

python -m pipeline init
echo "==> ingest"
python -m pipeline ingest "${demo_flag[@]}"
echo "==> digest"
python -m pipeline digest --send
echo "outbox: ${NEWSMON_HOME}/outbox"
[ "$once" = "1" ] && exit 0
exec scripts/airflow.sh "${demo_flag[@]}"
