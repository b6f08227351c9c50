#!/usr/bin/env bash
# Run the test suite: sets up .venv with the pinned dev requirements, then pytest.
# Extra arguments go to pytest (e.g. ./test.sh -k feeds).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh requirements-dev.txt
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest "$@"
